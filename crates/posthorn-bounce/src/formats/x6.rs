//! A gateway (Sisimai calls it "X6") whose notice starts "We had trouble
//! delivering your message. Full details follow:" and then gives one
//! sentence per failure:
//!
//! ```text
//! SMTP Server <mx.example.org> rejected recipient <a@example.org> (Error
//! following RCPT command). It responded as follows: [550 5.1.1 User unknown]
//! ```
//!
//! The recipient, the answering host, the SMTP command and the server's
//! answer (between the square brackets) are all in that sentence.

use super::Finding;
use crate::address;
use crate::parse::SmtpCommand;
use crate::report::Report;

const RESPONDED: &str = "responded as follows: [";
const REJECTED: &str = "rejected recipient <";

pub fn read(report: &Report) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    // The sentence may be wrapped; read it paragraph by paragraph.
    for paragraph in report.text.split("\n\n") {
        let para = crate::mime::collapse_whitespace(paragraph);
        let lower = para.to_ascii_lowercase();
        let (Some(rej), Some(resp)) = (lower.find(REJECTED), lower.find(RESPONDED)) else {
            continue;
        };
        let after = &para[rej + REJECTED.len()..];
        let Some(recipient) = after
            .find('>')
            .and_then(|end| address::clean(&after[..end]))
        else {
            continue;
        };
        let answer = &para[resp + RESPONDED.len()..];
        let answer = answer.rfind(']').map_or(answer, |end| &answer[..end]);
        let mut f = Finding::new("format.x6", Some(recipient), answer.trim().to_string());
        // "SMTP Server <host> rejected ..."
        if let Some(open) = lower[..rej].rfind("server <") {
            let host = &para[open + "server <".len()..rej];
            f.remote_mta = host.split('>').next().map(|h| h.trim().to_string());
        }
        // "(Error following RCPT command)"
        if let Some(at) = lower.find("error following ") {
            let verb = lower[at + "error following ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            f.command = match verb {
                "rcpt" => Some(SmtpCommand::Rcpt),
                "mail" => Some(SmtpCommand::Mail),
                "data" => Some(SmtpCommand::Data),
                "helo" | "ehlo" | "connect" => Some(SmtpCommand::Connect),
                _ => None,
            };
        }
        if out.len() < 500 {
            out.push(f);
        }
    }
    out
}
