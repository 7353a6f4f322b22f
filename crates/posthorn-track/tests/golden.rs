//! Golden files for the HTML rewriter: `tests/golden/NAME.html` is the
//! input, `NAME.expected.html` the output and `NAME.expected.links` the link
//! table (one `index url` a line). The options come from the name's first
//! word: `both-`, `clicks-`, `opens-`, `off-`. A mismatch writes
//! `NAME.failed.html` / `NAME.failed.links` next to them for review (copy
//! over the expected file when the change is right).

use posthorn_track::{RewriteOptions, TrackingUrls, rewrite_html};
use std::fs;
use std::path::{Path, PathBuf};

/// Fixed URLs, so the expected files do not depend on a key.
struct FakeUrls;

impl TrackingUrls for FakeUrls {
    fn open_url(&self) -> String {
        "https://t.example/o/OPEN".into()
    }
    fn click_url(&self, index: u32) -> String {
        format!("https://t.example/c/{index}")
    }
    fn unsubscribe_url(&self) -> String {
        "https://t.example/u/UNSUB".into()
    }
}

fn options_for(name: &str) -> RewriteOptions {
    let (track_opens, track_clicks) = match name.split('-').next() {
        Some("both") => (true, true),
        Some("clicks") => (false, true),
        Some("opens") => (true, false),
        Some("off") => (false, false),
        _ => panic!("golden file {name}: name must start with both-, clicks-, opens- or off-"),
    };
    RewriteOptions {
        track_opens,
        track_clicks,
        first_link_index: 0,
    }
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .expect("tests/golden exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".html")
                && !name.ends_with(".expected.html")
                && !name.ends_with(".failed.html")
        })
        .collect();
    found.sort();
    found
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut ran = 0;
    let mut failed = Vec::new();
    for input_path in inputs(&dir) {
        let stem = input_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".html"))
            .expect("utf-8 name")
            .to_owned();
        let input = fs::read_to_string(&input_path).expect("readable input");
        let options = options_for(&stem);
        let out = rewrite_html(&input, &options, &FakeUrls).expect("rewrites");
        let links: String = out
            .links
            .iter()
            .enumerate()
            .map(|(i, url)| format!("{i} {url}\n"))
            .collect();

        if !options.track_opens && !options.track_clicks && !input.contains("unsubscribe_url") {
            assert_eq!(
                out.body, input,
                "{stem}: tracking off must not change a byte"
            );
        }

        let expected_html = fs::read_to_string(dir.join(format!("{stem}.expected.html")));
        let expected_links = fs::read_to_string(dir.join(format!("{stem}.expected.links")));
        let failed_html = dir.join(format!("{stem}.failed.html"));
        let failed_links = dir.join(format!("{stem}.failed.links"));
        let html_ok = expected_html.as_deref().ok() == Some(out.body.as_str());
        let links_ok = expected_links.as_deref().ok() == Some(links.as_str());
        if html_ok && links_ok {
            let _ = fs::remove_file(&failed_html);
            let _ = fs::remove_file(&failed_links);
        } else {
            fs::write(&failed_html, &out.body).expect("write .failed.html");
            fs::write(&failed_links, &links).expect("write .failed.links");
            failed.push(stem.clone());
        }
        ran += 1;
    }
    assert!(ran > 0, "no golden files found in {}", dir.display());
    assert!(
        failed.is_empty(),
        "golden mismatches (see tests/golden/*.failed.*): {failed:?}"
    );
}
