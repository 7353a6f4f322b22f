//! `posthorn send` and `posthorn status`: small clients of the HTTP API.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Base URL of a running Posthorn.
    #[arg(long, env = "POSTHORN_API", default_value = "http://127.0.0.1:8025")]
    api: String,
    /// API key; default: the first-start admin key in the data directory.
    #[arg(long, env = "POSTHORN_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Data directory to find `initial-admin-key` in when no key is given.
    #[arg(long, env = "POSTHORN_DATA_DIR", default_value = "posthorn-data")]
    data_dir: PathBuf,
}

impl ApiArgs {
    fn key(&self) -> Result<String> {
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        let file = self.data_dir.join(posthorn_server::app::INITIAL_KEY_FILE);
        std::fs::read_to_string(&file)
            .map(|k| k.trim().to_owned())
            .with_context(|| format!("no --key given and {} is not readable", file.display()))
    }

    /// A request to the API, authorised with the key.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder> {
        let url = format!("{}{path}", self.api.trim_end_matches('/'));
        Ok(reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(self.key()?))
    }

    /// Sends `request`; an error answer becomes an error that says what
    /// the API said (its code, message and field).
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {}", self.api))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let error = &body["error"];
        let field = error["field"]
            .as_str()
            .map(|f| format!(" (field {f})"))
            .unwrap_or_default();
        bail!(
            "{status}: {}: {}{field}",
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or("")
        );
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self.request(method, path)?;
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(request).await?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }
}

#[derive(clap::Args)]
pub struct SendArgs {
    #[arg(long)]
    from: String,
    /// Recipient (repeatable).
    #[arg(long, required = true)]
    to: Vec<String>,
    #[arg(long)]
    cc: Vec<String>,
    #[arg(long)]
    bcc: Vec<String>,
    #[arg(long)]
    subject: String,
    /// Plain-text body.
    #[arg(long, required_unless_present = "html")]
    text: Option<String>,
    /// HTML body.
    #[arg(long)]
    html: Option<String>,
    /// Stream (default transactional).
    #[arg(long)]
    stream: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn send(args: SendArgs) -> Result<()> {
    let mut body = json!({
        "from": args.from, "to": args.to, "cc": args.cc, "bcc": args.bcc,
        "subject": args.subject, "text": args.text, "html": args.html,
    });
    if let Some(stream) = args.stream {
        body["stream"] = json!(stream);
    }
    let receipt = args
        .api
        .call(reqwest::Method::POST, "/v1/messages", Some(body))
        .await?;
    println!("message {}", receipt["id"].as_str().unwrap_or("?"));
    for d in receipt["deliveries"].as_array().into_iter().flatten() {
        println!(
            "  delivery {}  {:<10} {}",
            d["id"].as_str().unwrap_or("?"),
            d["status"].as_str().unwrap_or("?"),
            d["recipient"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The delivery id (from `posthorn send` or the API).
    delivery_id: String,
    /// Print the API's JSON instead of the timeline.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn status(args: StatusArgs) -> Result<()> {
    let path = format!("/v1/deliveries/{}", args.delivery_id);
    let mut d = args.api.call(reqwest::Method::GET, &path, None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        // The answer holds the timeline's first page; a person reads all
        // of it, so the rest is fetched page by page.
        let mut events = d["events"].as_array().cloned().unwrap_or_default();
        let mut next = d["events_next"].as_str().map(str::to_owned);
        while let Some(page_path) = next {
            let page = args
                .api
                .call(
                    reqwest::Method::GET,
                    &format!("{page_path}&limit=500"),
                    None,
                )
                .await?;
            events.extend(page["events"].as_array().into_iter().flatten().cloned());
            next = page["next_cursor"]
                .as_str()
                .map(|c| format!("{path}/events?cursor={c}"));
        }
        d["events"] = Value::Array(events);
        print!("{}", timeline(&d));
    }
    Ok(())
}

/// A delivery as a person reads it: who, the status and why, then every
/// event in order with the details that matter.
pub fn timeline(d: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = format!("Delivery {} to {}\n", s(&d["id"]), s(&d["recipient"]));
    let mut status = format!("Status: {}", s(&d["status"]));
    if let Some(bounce) = d["bounce_type"].as_str() {
        status.push_str(&format!(" ({bounce})"));
    }
    status.push_str(&format!(
        "   [delivery: {}{}, engagement: {}]\n",
        s(&d["delivery_status"]),
        if d["delivery_status_inferred"] == json!(true) {
            " (inferred from engagement)"
        } else {
            ""
        },
        s(&d["engagement_status"])
    ));
    out.push_str(&status);
    let set_by = [&d["set_by"]["delivery"], &d["set_by"]["engagement"]];
    for e in d["events"].as_array().into_iter().flatten() {
        let marker = if set_by.contains(&&e["id"]) { "*" } else { " " };
        out.push_str(&format!(
            "{marker} {}  {:<12} {:<16} {}\n",
            s(&e["occurred_at"]),
            s(&e["kind"]),
            s(&e["source"]),
            summary(&e["details"])
        ));
    }
    out.push_str("(* = the event that set the status)\n");
    out
}

/// An event's details that matter, as `key=value` words.
pub(crate) fn summary(details: &Value) -> String {
    let mut parts = Vec::new();
    for key in [
        "reason",
        "bounce_type",
        "smtp_code",
        "enhanced_code",
        "reply_text",
        "url",
        "scope",
        "feedback_type",
        "error",
        "limit",
    ] {
        match &details[key] {
            Value::String(v) => parts.push(format!("{key}={v}")),
            Value::Number(v) => parts.push(format!("{key}={v}")),
            _ => {}
        }
    }
    if let Some(next) = details["next_retry_at"].as_i64() {
        parts.push(format!(
            "next retry {}",
            posthorn_core::clock::format_rfc3339(next)
        ));
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_marks_the_deciding_event_and_shows_the_reply() {
        let d = json!({
            "id": "d1", "recipient": "bob@example.com", "status": "bounced", "bounce_type": "hard",
            "delivery_status": "bounced", "engagement_status": "none",
            "set_by": {"delivery": "e2", "engagement": null},
            "events": [
                {"id": "e1", "kind": "queued", "occurred_at": "2026-11-24T10:00:00.000Z", "source": "api", "details": {"size": 10}},
                {"id": "e2", "kind": "bounced", "occurred_at": "2026-11-24T10:00:05.000Z", "source": "delivery",
                 "details": {"bounce_type": "hard", "smtp_code": 550, "reply_text": "550 5.1.1 user unknown"}},
            ]
        });
        let text = timeline(&d);
        assert!(text.contains("Status: bounced (hard)"), "{text}");
        let marked: Vec<&str> = text.lines().filter(|l| l.starts_with('*')).collect();
        assert_eq!(marked.len(), 1, "{text}");
        let bounce_line = marked[0];
        assert!(bounce_line.contains(" bounced "), "{text}");
        assert!(
            bounce_line.contains("reply_text=550 5.1.1 user unknown"),
            "{text}"
        );
        let queued_line = text.lines().find(|l| l.contains("queued")).unwrap();
        assert!(queued_line.starts_with(' '), "{text}");
    }
}
