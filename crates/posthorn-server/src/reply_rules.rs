//! The operator's reply rules (`[bounce] rules_file`): read and checked
//! with the configuration, so a bad file stops the start with its file
//! name and line numbers beside every other configuration error, then kept
//! in the application state for the delivery workers (synchronous bounces)
//! and the inbound MX (returned mail).

use posthorn_bounce::ReplyRules;
use std::path::Path;

/// The rules of `path`; no path: the built-in rules only. Errors are
/// `FILE:LINE: what is wrong`, one per problem, as compilers write them.
pub fn load(path: Option<&Path>) -> Result<ReplyRules, Vec<String>> {
    crate::data_file::load(path, ReplyRules::default, ReplyRules::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.txt");
        std::fs::write(&path, "rule local.a blocked soft\n  match x\n  code 2xx\n").unwrap();
        let errors = load(Some(&path)).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{}:3: ", path.display())),
            "{errors:?}"
        );
        let missing = load(Some(&dir.path().join("nope.txt"))).unwrap_err();
        assert!(missing[0].contains("nope.txt"), "{missing:?}");
        assert_eq!(load(None).unwrap(), ReplyRules::default());
    }
}
