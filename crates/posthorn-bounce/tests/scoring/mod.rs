//! What the corpus tests share: a right/total counter, the check that the
//! fixtures are byte for byte what their MANIFEST.tsv lists, and a one-line
//! picture of a record for the list of misses.

use posthorn_bounce::Record;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Default, Clone, Copy)]
pub struct Score {
    pub right: usize,
    pub total: usize,
}

impl Score {
    pub fn add(&mut self, ok: bool) {
        self.total += 1;
        if ok {
            self.right += 1;
        }
    }

    pub fn pct(self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            100.0 * self.right as f64 / self.total as f64
        }
    }

    pub fn show(self) -> String {
        format!("{:6.2} % ({}/{})", self.pct(), self.right, self.total)
    }
}

/// The record a line of the expected answers is scored against, marked
/// used: the first unused record whose recipient the line accepts, else the
/// unused record at the line's 1-based `index`, else none.
pub fn take_record(
    records: &[Record],
    used: &mut [bool],
    accepts: impl Fn(&str) -> bool,
    index: usize,
) -> Option<usize> {
    let by_recipient = (0..records.len())
        .find(|&i| !used[i] && records[i].recipient.as_deref().is_some_and(&accepts));
    let by_index = index
        .checked_sub(1)
        .filter(|&i| i < records.len() && !used[i]);
    let matched = by_recipient.or(by_index);
    if let Some(i) = matched {
        used[i] = true;
    }
    matched
}

/// Checks every file of `dir/MANIFEST.tsv` against its SHA-256 (in the
/// column named `sha_column`) and returns how many were checked: a
/// fixture whose line ends were rewritten on checkout would be scored as
/// something it is not.
pub fn verify_manifest(dir: &Path, sha_column: &str) -> usize {
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    let mut rows = manifest.lines();
    let header: Vec<&str> = rows.next().expect("a header row").split('\t').collect();
    let sha_at = header
        .iter()
        .position(|c| *c == sha_column)
        .expect("a sha256 column");
    let mut checked = 0;
    for row in rows.filter(|r| !r.trim().is_empty()) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (path, sha) = (cols[0], cols[sha_at]);
        let bytes = std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            hex(&Sha256::digest(&bytes)),
            sha,
            "{path} differs from MANIFEST.tsv (line ends rewritten?)"
        );
        checked += 1;
    }
    checked
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A record in one line: kind, recipient, reason, status, hard, reply
/// code, the rule that decided, and the start of the server's words.
pub fn describe(r: Option<&Record>) -> String {
    match r {
        None => "no record".into(),
        Some(r) => format!(
            "{} {} {} {} {:?} {} [{}] {:.90}",
            r.kind.as_str(),
            r.recipient.as_deref().unwrap_or("-"),
            r.reason,
            r.status.map_or("-".into(), |s| s.to_string()),
            r.hard_bounce(),
            r.reply_code.map_or("-".into(), |c| c.to_string()),
            r.rule,
            r.diagnostic.as_deref().unwrap_or("-"),
        ),
    }
}
