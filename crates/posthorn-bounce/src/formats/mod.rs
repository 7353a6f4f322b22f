//! The home-made bounce texts of real MTAs, for reports without usable
//! delivery-status fields (and to fill in what those fields leave out).
//!
//! Each reader looks at the report's text and returns one [`Finding`] per
//! failed recipient, or nothing when the text is not in its format. They are
//! tried in order; [`generic`] comes last and reads the common shapes
//! ("<address>: reason", an address on its own line followed by the
//! server's answer).

pub mod amazonses;
pub mod aol;
pub mod apachejames;
pub mod dragonfly;
pub mod fml;
pub mod generic;
pub mod googlegroups;
pub mod googleworkspace;
pub mod lhost;
pub mod mailmarshal;
pub mod qmail;
pub mod rhost;
pub mod x6;

use crate::parse::RecordKind;
use crate::reply::Reason;
use crate::report::Report;
use posthorn_core::EnhancedCode;

/// One recipient's failure as a text tells it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub recipient: Option<String>,
    pub kind: RecordKind,
    /// An enhanced status code the text states, if any.
    pub status: Option<EnhancedCode>,
    pub reply_code: Option<u16>,
    /// The text that says why.
    pub diagnostic: String,
    pub remote_mta: Option<String>,
    /// A reason the format itself states (e.g. a fixed phrase of the MTA),
    /// used when the diagnostic's words decide nothing.
    pub hint: Option<(Reason, &'static str)>,
    /// The hint is the format's fixed meaning and beats the words.
    pub force: bool,
    /// The SMTP command the failure answered, when the format knows it.
    pub command: Option<crate::parse::SmtpCommand>,
    /// The id of the format reader.
    pub format: &'static str,
}

impl Finding {
    pub fn new(format: &'static str, recipient: Option<String>, diagnostic: String) -> Self {
        Finding {
            recipient,
            kind: RecordKind::Bounce,
            status: None,
            reply_code: None,
            diagnostic,
            remote_mta: None,
            hint: None,
            force: false,
            command: None,
            format,
        }
    }
}

/// The findings of the first reader that recognises the report.
pub fn read(report: &Report) -> Vec<Finding> {
    let readers: &[fn(&Report) -> Vec<Finding>] = &[
        fml::read,
        apachejames::read,
        googlegroups::read,
        googleworkspace::read,
        aol::read,
        mailmarshal::read,
        x6::read,
        dragonfly::read,
        qmail::read,
        generic::read,
    ];
    for reader in readers {
        let found = reader(report);
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// Whether the report reads like a delivery failure notice at all (its
/// sender, subject or a typical sentence), so that ordinary mail that
/// happens to mention an address is never taken for a bounce.
pub fn looks_like_bounce(report: &Report) -> bool {
    if report.header("X-Failed-Recipients").is_some() {
        return true;
    }
    // Formats known by their fixed section lines, whoever sends them.
    if apachejames::recognises(report) || fml::recognises(report) {
        return true;
    }
    let ct = report
        .header("Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("multipart/report") {
        return true;
    }
    let from = report.from.to_ascii_lowercase();
    if BOUNCE_SENDERS.iter().any(|s| from.contains(s)) {
        return true;
    }
    let return_path = report.header("Return-Path").unwrap_or("").trim();
    let null_sender = return_path == "<>";
    let subject = report.subject.to_lowercase();
    if BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s)) {
        return true;
    }
    let text = report.text.to_lowercase();
    let sentence = BOUNCE_SENTENCES.iter().any(|s| text.contains(s));
    sentence && (null_sender || report.original.is_some() || text.len() < 20_000)
}

const BOUNCE_SENDERS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "postmaster@",
    "mail delivery",
    "mail administrator",
    "mail-daemon",
    "maildaemon",
    "mdaemon",
    "mailerdaemon",
    "mail.delivery",
    "<>",
];

const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery status notification",
    "delivery failure",
    "delivery failed",
    "delivery has failed",
    "failure notice",
    "returned mail",
    "returned to sender",
    "mail delivery",
    "delivery notification",
    "nondeliverable",
    "non-deliverable",
    "non delivery",
    "non-delivery",
    "not delivered",
    "could not be delivered",
    "couldn't be delivered",
    "delivery problem",
    "delivery error",
    "mail failure",
    "mail system error",
    "delivery report",
    "delayed mail",
    "delivery delayed",
    "warning: could not send",
    "message delayed",
    "delivery status",
    "delivery final failure",
    "failed delivery",
    "error sending message",
    "mail could not be delivered",
    "rejected",
    "returning message",
    "see transcript",
    "delivery notice",
    "permanent failure",
    "unzustellbar",
    "non remis",
    "no se puede entregar",
];

const BOUNCE_SENTENCES: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "was not delivered",
    "wasn't delivered",
    "not able to deliver",
    "unable to deliver",
    "delivery has failed",
    "delivery to the following recipient",
    "permanent error",
    "permanent fatal error",
    "undeliverable",
    "delivery failed",
    "failed to deliver",
    "mail delivery software",
    "was undeliverable",
    "has not been delivered",
    "not been delivered",
    "delivery is delayed",
    "message delivery failed",
    "message could not be sent",
];

/// Whether a report's text says the MTA keeps trying (a delay notice, not
/// a final failure).
pub fn says_delayed(report: &Report) -> bool {
    let subject = report.subject.to_lowercase();
    if [
        "delayed",
        "delay)",
        "(delay",
        "warning: could not send",
        "still not delivered",
        "not yet delivered",
    ]
    .iter()
    .any(|s| subject.contains(s))
    {
        return true;
    }
    let text = report.text.to_lowercase();
    DELAY_SENTENCES.iter().any(|s| text.contains(s))
}

const DELAY_SENTENCES: &[&str] = &[
    "will be retried",
    "will retry",
    "will continue to try",
    "will keep trying",
    "will try again",
    "still trying",
    "delivery attempts will continue",
    "only a temporary failure",
    "this is a warning message only",
    "you do not need to resend",
    "not yet been delivered",
    "has not yet been delivered",
    "has been delayed",
    "delivery is delayed",
];
