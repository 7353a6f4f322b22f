//! The machine networks (`[tracking.machine] networks_file`): read and
//! checked with the configuration, so a bad file stops the start with its
//! name and line beside every other configuration error, then kept in the
//! application state for the tracker. No file: the compiled-in list.

use posthorn_track::Networks;
use std::path::Path;

/// The networks of `path`; no path: the compiled-in list. Errors are
/// `FILE:LINE: what is wrong`, one per problem.
pub fn load(path: Option<&Path>) -> Result<Networks, Vec<String>> {
    crate::data_file::load(path, Networks::builtin, Networks::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("networks.txt");
        std::fs::write(
            &path,
            "source t https://example.com/ 2026-12-07\n10.0.0.0/8 hosting t\n10.1.0.0/8 hosting t\n",
        )
        .unwrap();
        let errors = load(Some(&path)).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{}:3: ", path.display())),
            "{errors:?}"
        );
        let missing = load(Some(&dir.path().join("nope.txt"))).unwrap_err();
        assert!(missing[0].contains("nope.txt"), "{missing:?}");
        assert_eq!(load(None).unwrap(), Networks::builtin());

        std::fs::write(
            &path,
            "source t https://example.com/ 2026-12-07\n198.51.100.0/24 hosting t\n",
        )
        .unwrap();
        let own = load(Some(&path)).unwrap();
        assert_eq!(
            own.category("198.51.100.9".parse().unwrap()),
            Some(posthorn_track::NetCategory::Hosting)
        );
        // The file replaces the compiled-in list.
        assert_eq!(own.category("17.0.0.1".parse().unwrap()), None);
    }
}
