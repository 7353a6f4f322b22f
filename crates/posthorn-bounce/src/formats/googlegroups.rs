//! Google Groups: a post to a group that does not exist or does not accept
//! the sender comes back from Google's mailer with the group address in
//! `X-Failed-Recipients` and a localised letter that links to the Groups
//! help. Whatever the language, the post was refused for the sender:
//! `rejected`.

use super::Finding;
use crate::address;
use crate::reply::Reason;
use crate::report::Report;

pub fn read(report: &Report) -> Vec<Finding> {
    let text = report.text.to_ascii_lowercase();
    if !(text.contains("groups.google.com") || text.contains("google groups")) {
        return Vec::new();
    }
    report
        .message
        .headers
        .get_all("X-Failed-Recipients")
        .flat_map(address::find_all)
        .map(|recipient| {
            let mut f = Finding::new(
                "format.googlegroups",
                Some(recipient),
                report.text.trim().to_string(),
            );
            f.hint = Some((Reason::Rejected, "format.googlegroups"));
            f.force = true;
            f
        })
        .collect()
}
