//! `parse` never panics: on arbitrary bytes, on corpus messages with bytes
//! flipped, cut or repeated, and on pathological shapes (deep MIME nesting,
//! long lines, many boundaries) it returns, and quickly.

use posthorn_bounce::parse;
use proptest::prelude::*;
use std::path::Path;

fn corpus_files() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/sisimai");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn header_like_text_never_panics(
        lines in proptest::collection::vec(
            "(From |Content-Type: multipart/report; boundary=\"b\"|--b|--b--|Final-Recipient: rfc822; a@b.example|Action: failed|Status: 5\\.1\\.1|Diagnostic-Code: smtp; 550 5\\.1\\.1 x|Content-Transfer-Encoding: base64|=\\?utf-8\\?B\\?[A-Za-z0-9+/=]{0,12}\\?=|[ -~]{0,40}|)",
            0..60,
        )
    ) {
        let text = lines.join("\r\n");
        let _ = parse(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn mutated_corpus_never_panics(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..24),
    ) {
        let files = CORPUS.with(|c| c.clone());
        let mut bytes = files[pick.index(files.len())].clone();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                2 => bytes.insert(i, byte),
                _ => bytes.truncate(i),
            }
        }
        let _ = parse(&bytes);
    }
}

thread_local! {
    static CORPUS: std::rc::Rc<Vec<Vec<u8>>> = std::rc::Rc::new(corpus_files());
}

/// Deep nesting, huge headers, boundary storms and thousands of report
/// blocks are read to the end without panicking, giving at most
/// `MAX_RECIPIENTS` records. (How fast is for `examples/bench_parse.rs`
/// to measure: tests assert no times.)
#[test]
fn pathological_shapes_are_read_with_bounded_output() {
    let mut deep = String::new();
    for i in 0..2000 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
        ));
    }
    let mut storm = String::from("Content-Type: multipart/report; boundary=\"x\"\n\n");
    for _ in 0..20_000 {
        storm.push_str("--x\nContent-Type: message/rfc822\n\n");
    }
    let long_line = format!(
        "From: MAILER-DAEMON\nSubject: Undelivered\n\n{}",
        "a@b.example ".repeat(40_000)
    );
    let many_fields = format!(
        "From: MAILER-DAEMON\n\n{}",
        "Final-Recipient: rfc822; a@b.example\nAction: failed\n".repeat(5_000)
    );
    let brackets = format!(
        "From: MAILER-DAEMON\nSubject: failure notice\n\n{}",
        "<".repeat(100_000)
    );
    for input in [deep, storm, long_line, many_fields, brackets] {
        let records = parse(input.as_bytes());
        assert!(records.len() <= posthorn_bounce::MAX_RECIPIENTS);
    }
}

/// Found by `mutated_corpus_never_panics`: when no address starts a line,
/// the bracketed addresses are read, and two on one line made the first
/// one's block end before it began.
#[test]
fn two_bracketed_addresses_on_one_line_are_both_read() {
    let text = "From: MAILER-DAEMON@mx.example\r\n\
                To: sender@posthorn.example\r\n\
                Subject: Undelivered Mail Returned to Sender\r\n\
                Content-Type: text/plain\r\n\
                \r\n\
                Delivery failed for <alice@a.example> and <bob@b.example>: 550 5.1.1 user unknown\r\n\
                \r\n\
                Nothing more.\r\n";
    let records = parse(text.as_bytes());
    let mut recipients: Vec<_> = records
        .iter()
        .filter_map(|r| r.recipient.as_deref())
        .collect();
    recipients.sort_unstable();
    assert_eq!(recipients, ["alice@a.example", "bob@b.example"]);
}
