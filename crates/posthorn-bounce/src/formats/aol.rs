//! AOL's own notices ("AIRmail", `MAILER-DAEMON@aol.com`): "Your mail to
//! the following recipients could not be delivered because they are not
//! accepting mail from ...:" followed by the recipients' screen names, one
//! per indented line. An AOL screen name is the local part of its
//! `@aol.com` address, so that is the recipient (flufl.bounce and
//! BounceParser both read these notices this way). Full addresses in the
//! list are taken as they are. The notice is AOL's answer to a recipient's
//! own mail controls (senders, attachments, images they refused), so
//! unless its words say more it is the recipient's filter: `filtered`.

use super::Finding;
use crate::address;
use crate::reply::Reason;
use crate::report::Report;

const LEAD: &str = "your mail to the following recipients";

pub fn read(report: &Report) -> Vec<Finding> {
    if !report.from.to_ascii_lowercase().contains("@aol.com") {
        return Vec::new();
    }
    let lines: Vec<&str> = report.text.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().contains(LEAD))
    else {
        return Vec::new();
    };
    // The sentence runs from the lead to its colon, over wrapped lines.
    let mut sentence = String::new();
    let mut next = start;
    while next < lines.len() {
        let line = lines[next].trim();
        next += 1;
        if !sentence.is_empty() {
            sentence.push(' ');
        }
        sentence.push_str(line);
        if line.ends_with(':') {
            break;
        }
    }
    let reason = sentence
        .find("could not be delivered")
        .map_or(sentence.as_str(), |at| &sentence[at..])
        .trim_end_matches(':')
        .to_string();
    lines[next..]
        .iter()
        .map(|l| l.trim())
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .filter_map(screen_name_address)
        .take(100)
        .map(|recipient| {
            let mut f = Finding::new("format.aol", Some(recipient), reason.clone());
            f.hint = Some((Reason::Filtered, "format.aol.mail-controls"));
            f
        })
        .collect()
}

/// `name` -> `name@aol.com`; a full address as it is; anything with
/// spaces (a sentence, not a name) is not a recipient.
fn screen_name_address(token: &str) -> Option<String> {
    if token.contains(char::is_whitespace) || token.len() > 64 {
        return None;
    }
    if token.contains('@') {
        return address::clean(token);
    }
    let valid = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    valid.then(|| format!("{}@aol.com", token.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_raw(raw: &str) -> Vec<Finding> {
        let message = crate::mime::parse_message(raw.as_bytes());
        read(&Report::new(&message))
    }

    #[test]
    fn screen_names_become_aol_addresses() {
        let found = read_raw(
            "From: Mail Delivery Subsystem <MAILER-DAEMON@aol.com>\r\n\
             Subject: Mail Delivery Problem\r\n\r\n\
             Sorry a@example.com. Your mail to the following recipients could not be\r\n\
             delivered because they are not accepting mail from example.com:\r\n\
             \tSomeName\r\n\tother@example.org\r\n\r\nFooter text\r\n",
        );
        let got: Vec<_> = found.iter().filter_map(|f| f.recipient.clone()).collect();
        assert_eq!(got, ["somename@aol.com", "other@example.org"]);
        assert!(
            found[0]
                .diagnostic
                .contains("not accepting mail from example.com")
        );
    }

    #[test]
    fn the_same_words_from_elsewhere_are_not_read() {
        let found = read_raw(
            "From: MAILER-DAEMON@example.com\r\nSubject: x\r\n\r\n\
             Your mail to the following recipients could not be delivered:\r\n\tname\r\n",
        );
        assert!(found.is_empty());
    }
}
