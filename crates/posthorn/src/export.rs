//! `posthorn export` and `posthorn events --follow`: the API's exports
//! and live feed from the terminal. Filters are given as the API's query
//! parameters, one `key=value` argument each (`kind=bounced`,
//! `recipient=@example.com`, `metadata.plan=pro`): the same grammar as
//! every list, checked by the server, which names a bad one.

use crate::client::{ApiArgs, summary};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum What {
    Events,
    Deliveries,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Csv,
    Ndjson,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// What to export.
    what: What,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// The file to write (replaced when it exists); `-` for standard output.
    #[arg(long)]
    out: PathBuf,
    /// Filters, as the API's query parameters: `key=value` each.
    filters: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Keep reading new events as they are recorded (the live feed).
    #[arg(long, required = true)]
    follow: bool,
    /// Go on after this event position (a feed's `id:`), instead of
    /// starting with the events recorded from now on.
    #[arg(long)]
    after: Option<i64>,
    /// Filters, as the API's query parameters: `key=value` each.
    filters: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// `key=value` arguments as a query string.
fn query(filters: &[String], extra: &[(&str, &str)]) -> Result<String> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for f in filters {
        let Some((k, v)) = f.split_once('=') else {
            bail!("a filter is key=value (for example kind=bounced), not {f:?}");
        };
        q.append_pair(k, v);
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    Ok(q.finish())
}

pub async fn export(args: ExportArgs) -> Result<()> {
    let (path, format) = match (args.what, args.format) {
        (What::Events, f) => ("/v1/events/export", f),
        (What::Deliveries, f) => ("/v1/deliveries/export", f),
    };
    let format_name = match format {
        Format::Csv => "csv",
        Format::Ndjson => "ndjson",
    };
    let q = query(&args.filters, &[("format", format_name)])?;
    let request = args
        .api
        .request(reqwest::Method::GET, &format!("{path}?{q}"))?;
    let mut response = args.api.send(request).await?;
    // Written to a file beside the target and renamed at the end: a
    // failed export never leaves a file that looks complete.
    let to_stdout = args.out.as_os_str() == "-";
    let partial = args.out.with_extension("partial");
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?,
        ))
    };
    let mut progress = Progress::new(matches!(format, Format::Csv));
    while let Some(chunk) = response.chunk().await.context("reading the export")? {
        out.write_all(&chunk)?;
        progress.add(&chunk);
    }
    out.flush()?;
    drop(out);
    progress.finish();
    if !to_stdout {
        std::fs::rename(&partial, &args.out)
            .with_context(|| format!("moving the export to {}", args.out.display()))?;
    }
    Ok(())
}

/// Rows written and their rate, on one line of standard error.
struct Progress {
    rows: u64,
    /// A CSV export's first line is its header, not a row.
    header: bool,
    started: Instant,
    shown: Instant,
}

impl Progress {
    fn new(header: bool) -> Self {
        Self {
            rows: 0,
            header,
            started: Instant::now(),
            shown: Instant::now(),
        }
    }

    /// Counts the records a chunk ends (a CSV record's quoted line breaks
    /// are CR LF inside quotes; its end is the CR LF outside: counted by
    /// line feeds, a reply with a line break counts twice, which is close
    /// enough for a progress line; the total at the end is exact).
    fn add(&mut self, chunk: &[u8]) {
        self.rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if self.shown.elapsed() >= Duration::from_millis(200) {
            self.shown = Instant::now();
            self.show();
        }
    }

    fn count(&self) -> u64 {
        self.rows.saturating_sub(u64::from(self.header))
    }

    fn show(&self) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rows = self.count();
        eprint!("\r{rows:>12} rows  {:>10.0} rows/s", rows as f64 / seconds);
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        self.show();
        eprintln!();
    }
}

pub async fn events(args: EventsArgs) -> Result<()> {
    debug_assert!(args.follow);
    let q = query(&args.filters, &[])?;
    let mut request = args
        .api
        .request(reqwest::Method::GET, &format!("/v1/events/stream?{q}"))?;
    if let Some(after) = args.after {
        request = request.header("last-event-id", after.to_string());
    }
    let mut response = args.api.send(request).await?;
    let mut buffer = String::new();
    let mut last: Option<String> = None;
    while let Some(chunk) = response.chunk().await.context("reading the live feed")? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(line) = readable(&block, &mut last) {
                println!("{line}");
            }
        }
    }
    match last {
        Some(id) => bail!("the feed closed; go on with --after {id}"),
        None => bail!("the feed closed"),
    }
}

/// One SSE message as one line a person reads (`None` for a heartbeat);
/// notes the position of each event in `last`.
fn readable(block: &str, last: &mut Option<String>) -> Option<String> {
    let (mut id, mut event, mut data) = (None, None, None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = serde_json::from_str::<Value>(v).ok();
        }
    }
    let data = data?;
    if event.as_deref() == Some("lagged") {
        return Some(format!(
            "(this terminal fell behind: go on with --after {})",
            data["resume_after"]
        ));
    }
    if id.is_some() {
        *last = id;
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    Some(format!(
        "{}  {:<12} {:<32} {:<16} {}",
        s(&data["recorded_at"]),
        s(&data["kind"]),
        s(&data["recipient"]),
        s(&data["source"]),
        summary(&data["details"])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_the_query_and_bad_ones_are_refused() {
        let q = query(
            &["kind=bounced".into(), "recipient=@example.com".into()],
            &[("format", "csv")],
        )
        .unwrap();
        assert_eq!(q, "kind=bounced&recipient=%40example.com&format=csv");
        assert!(query(&["bounced".into()], &[]).is_err());
    }

    #[test]
    fn a_feed_message_is_one_readable_line() {
        let mut last = None;
        let block = "id: 42\ndata: {\"kind\":\"bounced\",\"recipient\":\"a@example.com\",\
                     \"recorded_at\":\"2026-12-08T10:00:00.000Z\",\"source\":\"delivery\",\
                     \"details\":{\"smtp_code\":550,\"reply_text\":\"550 5.1.1 unknown\"}}\n\n";
        let line = readable(block, &mut last).unwrap();
        assert!(
            line.contains("bounced") && line.contains("a@example.com"),
            "{line}"
        );
        assert!(line.contains("reply_text=550 5.1.1 unknown"), "{line}");
        assert_eq!(last.as_deref(), Some("42"));
        assert_eq!(readable(": heartbeat\n\n", &mut last), None);
        let lagged = readable("event: lagged\ndata: {\"resume_after\":42}\n\n", &mut last).unwrap();
        assert!(lagged.contains("--after 42"), "{lagged}");
    }
}
