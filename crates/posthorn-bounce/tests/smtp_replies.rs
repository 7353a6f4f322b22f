//! Scores `classify_reply` on the labelled SMTP replies of the corpus
//! (`fixtures/smtp-replies.jsonl`, see `fixtures/README.md`). Run with
//! `cargo test -p posthorn-bounce --test smtp_replies -- --nocapture` to see
//! the accuracy and every line that was classified differently.

use posthorn_bounce::{BounceType, EnhancedCode, Reason, classify_reply};
use serde_json::Value;
use std::str::FromStr;

const REPLIES: &str = include_str!("fixtures/smtp-replies.jsonl");

/// Below these the test fails (fractions of the labelled lines).
const MIN_REASON: f64 = 0.90;
const MIN_HARD_SOFT: f64 = 0.97;

/// Right / counted.
#[derive(Default)]
struct Score {
    right: usize,
    counted: usize,
}

impl Score {
    fn add(&mut self, right: bool) {
        self.counted += 1;
        self.right += usize::from(right);
    }
    fn fraction(&self) -> f64 {
        self.right as f64 / self.counted.max(1) as f64
    }
    fn show(&self, what: &str) {
        println!(
            "{what}: {}/{} = {:.1}%",
            self.right,
            self.counted,
            100.0 * self.fraction()
        );
    }
}

/// Every reason name a line accepts: `reason`, `reason_v5_6`, and those of
/// `alt_labels` (a list of names, or Sisimai rows with a `reason` field).
fn accepted_reasons(line: &Value) -> Vec<Reason> {
    let mut names: Vec<&str> = ["reason", "reason_v5_6"]
        .iter()
        .filter_map(|key| line[key].as_str())
        .collect();
    let alt = &line["alt_labels"];
    let alt_items = alt
        .as_array()
        .or_else(|| alt["rows"].as_array())
        .into_iter()
        .flatten();
    for item in alt_items {
        names.extend(item.as_str().or_else(|| item["reason"].as_str()));
    }
    names
        .into_iter()
        .filter_map(|name| Reason::from_str(name).ok())
        .collect()
}

#[test]
fn corpus_replies_are_classified_like_sisimai() {
    let mut reason_score = Score::default();
    let mut hard_soft_score = Score::default();
    let mut temporary_score = Score::default();
    let mut misses = Vec::new();

    for (number, raw) in REPLIES.lines().enumerate() {
        let line: Value = serde_json::from_str(raw).expect("corpus line is JSON");
        let text = line["text"].as_str().unwrap_or_default();
        let code = line["reply_code"].as_str().and_then(|c| c.parse().ok());
        let status = line["status"]
            .as_str()
            .and_then(|s| EnhancedCode::parse(s.trim()));
        let class = classify_reply(code, status, text);

        let mut wrong = Vec::new();
        let accepted = accepted_reasons(&line);
        if !accepted.is_empty() {
            let right = accepted.contains(&class.reason);
            reason_score.add(right);
            if !right {
                wrong.push(format!("reason {} (want {})", class.reason, line["reason"]));
            }
        }
        if let Some(hard) = line["hard_bounce"].as_bool() {
            let right = (class.bounce_type == BounceType::Hard) == hard;
            hard_soft_score.add(right);
            if !right {
                wrong.push(format!("{} (want hard={hard})", class.bounce_type.as_str()));
            }
        }
        if let Some(temporary) = line["temporary"].as_bool() {
            let right = class.temporary == temporary;
            temporary_score.add(right);
            if !right {
                wrong.push(format!("temporary={} (want {temporary})", class.temporary));
            }
        }
        if !wrong.is_empty() {
            misses.push(format!(
                "line {}: {} by {} | {:?} {:?} {text}",
                number + 1,
                wrong.join(", "),
                class.rule,
                code,
                status,
            ));
        }
    }

    println!("misclassified:");
    for miss in &misses {
        println!("  {miss}");
    }
    reason_score.show("reason");
    hard_soft_score.show("hard/soft");
    temporary_score.show("temporary");

    assert!(reason_score.counted > 100, "the corpus was not read");
    assert!(
        reason_score.fraction() >= MIN_REASON,
        "reason accuracy below {MIN_REASON}"
    );
    assert!(
        hard_soft_score.fraction() >= MIN_HARD_SOFT,
        "hard/soft accuracy below {MIN_HARD_SOFT}"
    );
}
