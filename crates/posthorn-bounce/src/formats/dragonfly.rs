//! DragonFly Mail Agent (dma): "This is the DragonFly Mail Agent ... at
//! host." then one fixed sentence, "There was an error delivering your
//! mail to <a@b>.", the remote answer in the next paragraph, and
//! "Original message follows." The address in that sentence is the
//! recipient whatever the report's own headers say (dma copies the
//! recipient into `X-Original-To`, which other readers take for the
//! report's addressee).

use super::Finding;
use crate::address;
use crate::report::Report;

const SENTENCE: &str = "there was an error delivering your mail to <";

pub fn read(report: &Report) -> Vec<Finding> {
    let text = report.text.as_str();
    let lower = text.to_ascii_lowercase();
    if !lower.contains("dragonfly mail agent") {
        return Vec::new();
    }
    let Some(at) = lower.find(SENTENCE) else {
        return Vec::new();
    };
    let start = at + SENTENCE.len();
    let Some(end) = lower[start..].find('>') else {
        return Vec::new();
    };
    let Some(recipient) = address::clean(&text[start..start + end]) else {
        return Vec::new();
    };
    let rest = &text[start + end..];
    // The rest of the sentence's line, then the answer up to the original.
    let rest = rest.split_once('\n').map_or("", |(_, r)| r);
    let cut = rest
        .to_ascii_lowercase()
        .find("original message follows")
        .unwrap_or(rest.len());
    let diagnostic = rest[..cut].trim().to_string();
    let mut f = Finding::new("format.dragonfly", Some(recipient), String::new());
    // dma's own words for a domain without MX or address records.
    let low = diagnostic.to_ascii_lowercase();
    if low.contains("dns lookup failure") && low.contains("not found") {
        f.hint = Some((crate::reply::Reason::Hostunknown, "format.dragonfly.dns"));
    }
    f.diagnostic = diagnostic;
    vec![f]
}
