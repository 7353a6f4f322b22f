//! Throughput of the bounce rules, single thread: `parse` over every
//! message of the corpora (messages/s) and `classify_reply` over every line
//! of `smtp-replies.jsonl` (lines/s). Each is timed over repeated passes
//! of at least two seconds, after one warm-up pass.
//!
//! `cargo run --release -p posthorn-bounce --example bench_parse`

use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut messages = Vec::new();
    // The Sisimai sets and the corpora of other projects (every message
    // file: `.eml`, flufl's `.txt`, BounceParser's `.msg`).
    let sets = [
        "corpus/sisimai",
        "corpus/sisimai-crlf",
        "corpus/sisimai-cr",
        "corpus/sisimai-not-bounce",
        "corpus-flufl",
        "corpus-bounceparser",
    ];
    for set in sets {
        let dir = root.join(set);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .expect("corpus directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                [".eml", ".msg"].iter().any(|ext| name.ends_with(ext))
                    || name.ends_with(".txt") && set == "corpus-flufl"
            })
            .collect();
        paths.sort();
        messages.extend(paths.iter().map(|p| std::fs::read(p).expect("corpus file")));
    }
    let bytes: usize = messages.iter().map(Vec::len).sum();

    let replies: Vec<(Option<u16>, Option<posthorn_bounce::EnhancedCode>, String)> =
        std::fs::read_to_string(root.join("smtp-replies.jsonl"))
            .expect("smtp-replies.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let code = v["reply_code"].as_str().and_then(|c| c.parse().ok());
                let status = v["status"]
                    .as_str()
                    .and_then(|s| posthorn_bounce::EnhancedCode::parse(s.trim()));
                (code, status, v["text"].as_str().unwrap_or("").to_string())
            })
            .collect();

    let (parse_passes, parse_time, records) = time_passes(|| {
        messages
            .iter()
            .map(|m| posthorn_bounce::parse(m).len())
            .sum::<usize>()
    });
    let (reply_passes, reply_time, _) = time_passes(|| {
        replies
            .iter()
            .map(|(c, s, t)| posthorn_bounce::classify_reply(*c, *s, t).rule.len())
            .sum::<usize>()
    });

    let per_sec = |items: usize, passes: u32, time: Duration| {
        (items as f64 * f64::from(passes)) / time.as_secs_f64()
    };
    println!(
        "parse:          {} messages ({:.1} MiB), {records} records per pass, {parse_passes} passes in {:.2} s: {:.0} messages/s, {:.1} MiB/s",
        messages.len(),
        bytes as f64 / 1048576.0,
        parse_time.as_secs_f64(),
        per_sec(messages.len(), parse_passes, parse_time),
        per_sec(bytes, parse_passes, parse_time) / 1048576.0,
    );
    println!(
        "classify_reply: {} lines, {reply_passes} passes in {:.2} s: {:.0} lines/s",
        replies.len(),
        reply_time.as_secs_f64(),
        per_sec(replies.len(), reply_passes, reply_time),
    );
}

/// Runs `f` once to warm up, then repeatedly for at least two seconds.
fn time_passes(mut f: impl FnMut() -> usize) -> (u32, Duration, usize) {
    let result = std::hint::black_box(f());
    let start = Instant::now();
    let mut passes = 0;
    while start.elapsed() < Duration::from_secs(2) {
        std::hint::black_box(f());
        passes += 1;
    }
    (passes, start.elapsed(), result)
}
