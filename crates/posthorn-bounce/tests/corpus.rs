//! The acceptance test of `parse`: every message of the bounce corpus
//! (`tests/fixtures/corpus/`, Sisimai's set-of-emails, see its README) is
//! parsed and its records compared with the expected lines.
//!
//! Matching: the lines of one file are taken in `index` order; each takes
//! the unused record with the same recipient (case-insensitive), else the
//! unused record at its position (`index`), else it has no record, and
//! every metric it takes part in counts it wrong.
//!
//! Metrics (sets `sisimai/`, `sisimai-crlf/`, `sisimai-cr/` together; the
//! denominators are printed with each figure):
//! - **kind**: every expected line; the record's kind must equal `kind`.
//! - **recipient**: every expected line; the matched record's recipient must
//!   equal `recipient` (case-insensitive; `null` expects none, or any
//!   recipient for a complaint whose report names none).
//! - **reason**: every expected line with a reason; the record's reason
//!   must equal `reason` or `reason_v5_6` (our names are v5.6), or the
//!   reason of one of the `alt_labels` rows.
//! - **hard/soft**: lines whose `hard_bounce` is not null; the record's
//!   hard bounce must equal it (or an `alt_labels` row's).
//! - **status**: lines with a non-null `status` that is not
//!   `status_pseudo` (an internal code Sisimai invents); the record's
//!   status must equal it (or an `alt_labels` row's).
//! - **not a bounce**: each file of `sisimai-not-bounce/` must give no record.
//!
//! Fails below: recipient 98 %, hard/soft 94.5 %, reason 91.5 %, status
//! 95 %, or on any record from a not-bounce file. Every fixture is first
//! checked byte for byte against `MANIFEST.tsv`. Issue #13 asks 97 % and
//! 92 % of hard/soft and reason; the floors are lower because Sisimai's
//! labels read "user unknown" without a stated SMTP stage as its recipient
//! filter (soft) where the hand-labelled corpora of two other projects
//! read the same words as an unknown user (hard); see docs/decisions.md.

use posthorn_bounce::{Reason, parse};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod scoring;
use scoring::{Score, describe, take_record, verify_manifest};

const SETS: &[&str] = &["sisimai", "sisimai-crlf", "sisimai-cr"];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

#[derive(Default, Clone, Copy)]
struct Scores {
    kind: Score,
    recipient: Score,
    reason: Score,
    hard: Score,
    status: Score,
}

fn str_field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line.get(name).and_then(Value::as_str)
}

/// The expected line and its alternatives (`alt_labels` rows).
fn label_rows(line: &Value) -> Vec<&Value> {
    let mut rows = vec![line];
    if let Some(alt) = line
        .get("alt_labels")
        .and_then(|a| a.get("rows"))
        .and_then(Value::as_array)
    {
        rows.extend(alt.iter());
    }
    rows
}

fn reason_matches(line: &Value, got: Reason) -> bool {
    label_rows(line).iter().any(|row| {
        ["reason", "reason_v5_6"].iter().any(|field| {
            str_field(row, field)
                .and_then(|name| name.parse::<Reason>().ok())
                .is_some_and(|want| want == got)
        })
    })
}

#[test]
fn corpus_accuracy() {
    let dir = corpus_dir();
    let checked = verify_manifest(&dir, "sha256");
    assert!(checked > 500, "only {checked} fixtures in MANIFEST.tsv");
    let mut total = Scores::default();
    let mut modules: BTreeMap<String, Scores> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    let mut files = 0;
    for set in SETS {
        let expected = std::fs::read_to_string(dir.join(set).join("expected.jsonl")).unwrap();
        let mut by_file: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            by_file
                .entry(str_field(&v, "file").unwrap().to_string())
                .or_default()
                .push(v);
        }
        for (file, mut lines) in by_file {
            files += 1;
            lines.sort_by_key(|l| l.get("index").and_then(Value::as_u64).unwrap_or(0));
            let raw = std::fs::read(dir.join(set).join(&file)).unwrap();
            let records = parse(&raw);
            let mut used = vec![false; records.len()];
            for line in &lines {
                let want_rcpt = str_field(line, "recipient");
                let index = line.get("index").and_then(Value::as_u64).unwrap_or(1) as usize;
                let matched = take_record(
                    &records,
                    &mut used,
                    |got| want_rcpt.is_some_and(|want| got.eq_ignore_ascii_case(want)),
                    index,
                );
                let got = matched.map(|i| &records[i]);
                let module = str_field(line, "module").unwrap_or("?").to_string();
                let m = modules.entry(module.clone()).or_default();
                let mut wrong = Vec::new();

                let kind_ok = got.is_some_and(|r| Some(r.kind.as_str()) == str_field(line, "kind"));
                total.kind.add(kind_ok);
                m.kind.add(kind_ok);
                if !kind_ok {
                    wrong.push(format!("kind {}", str_field(line, "kind").unwrap_or("-")));
                }

                let rcpt_ok = got.is_some_and(|r| match (want_rcpt, r.recipient.as_deref()) {
                    (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                    (None, None) => true,
                    (None, Some(_)) => r.kind.as_str() == "complaint",
                    _ => false,
                });
                total.recipient.add(rcpt_ok);
                m.recipient.add(rcpt_ok);
                if !rcpt_ok {
                    wrong.push(format!("recipient {}", want_rcpt.unwrap_or("-")));
                }

                if let Some(want) = str_field(line, "reason") {
                    let ok = got.is_some_and(|r| reason_matches(line, r.reason));
                    total.reason.add(ok);
                    m.reason.add(ok);
                    if !ok {
                        wrong.push(format!("reason {want}"));
                    }
                }
                if let Some(want) = line.get("hard_bounce").and_then(Value::as_bool) {
                    let ok = got.is_some_and(|r| {
                        label_rows(line).iter().any(|row| {
                            row.get("hard_bounce")
                                .and_then(Value::as_bool)
                                .is_some_and(|h| r.hard_bounce() == Some(h))
                        })
                    });
                    total.hard.add(ok);
                    m.hard.add(ok);
                    if !ok {
                        wrong.push(format!("hard {want}"));
                    }
                }
                let pseudo = line.get("status_pseudo").and_then(Value::as_bool) == Some(true);
                if let Some(want) = str_field(line, "status").filter(|_| !pseudo) {
                    let ok = got.is_some_and(|r| {
                        label_rows(line).iter().any(|row| {
                            str_field(row, "status") == r.status.map(|s| s.to_string()).as_deref()
                        })
                    });
                    total.status.add(ok);
                    m.status.add(ok);
                    if !ok {
                        wrong.push(format!("status {want}"));
                    }
                }
                if !wrong.is_empty() {
                    misses.push(format!(
                        "{set}/{file}#{index} want [{}] got {}",
                        wrong.join(", "),
                        describe(got)
                    ));
                }
            }
        }
    }

    let mut not_bounce_records = Vec::new();
    let nb = dir.join("sisimai-not-bounce");
    let mut nb_files = 0;
    for entry in std::fs::read_dir(&nb).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            nb_files += 1;
            let records = parse(&std::fs::read(&path).unwrap());
            if !records.is_empty() {
                not_bounce_records.push(format!(
                    "{}: {}",
                    path.display(),
                    describe(records.first())
                ));
            }
        }
    }

    println!("\nper module (kind / recipient / reason / hard / status: right/total)");
    for (module, s) in &modules {
        let cell = |s: Score| format!("{}/{}", s.right, s.total);
        let flag = if s.reason.right < s.reason.total || s.recipient.right < s.recipient.total {
            " *"
        } else {
            ""
        };
        println!(
            "  {module:24} {:>7} {:>7} {:>7} {:>7} {:>7}{flag}",
            cell(s.kind),
            cell(s.recipient),
            cell(s.reason),
            cell(s.hard),
            cell(s.status)
        );
    }
    println!("\nmisses ({}):", misses.len());
    for miss in &misses {
        println!("  {miss}");
    }
    println!("\ncorpus: {files} files, {nb_files} not-bounce files");
    println!("  kind       {}", total.kind.show());
    println!("  recipient  {}", total.recipient.show());
    println!("  reason     {}", total.reason.show());
    println!("  hard/soft  {}", total.hard.show());
    println!("  status     {}", total.status.show());
    println!(
        "  not-bounce files with records: {}",
        not_bounce_records.len()
    );

    assert!(files > 500, "only {files} corpus files read");
    assert!(
        not_bounce_records.is_empty(),
        "records from non-bounces: {not_bounce_records:?}"
    );
    assert!(
        total.recipient.pct() >= 98.0,
        "recipient {}",
        total.recipient.show()
    );
    assert!(total.hard.pct() >= 94.5, "hard/soft {}", total.hard.show());
    assert!(total.reason.pct() >= 91.5, "reason {}", total.reason.show());
    assert!(total.status.pct() >= 95.0, "status {}", total.status.show());
}
