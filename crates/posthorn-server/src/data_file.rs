//! An operator's data file named in the configuration (reply rules,
//! machine networks): read and parsed with the configuration, so a bad
//! file stops the start with its name and line beside every other
//! configuration error. Without a file, the compiled-in data.

use std::path::Path;

/// What the parse of a data file says is wrong, and where.
pub trait LineError {
    fn line(&self) -> usize;
    fn message(&self) -> &str;
}

impl LineError for posthorn_bounce::RuleError {
    fn line(&self) -> usize {
        self.line
    }
    fn message(&self) -> &str {
        &self.message
    }
}

impl LineError for posthorn_track::NetworksError {
    fn line(&self) -> usize {
        self.line
    }
    fn message(&self) -> &str {
        &self.message
    }
}

/// The data of `path` by `parse`; no path: `builtin()`. Errors are
/// `FILE:LINE: what is wrong`, one per problem, as compilers write them.
pub fn load<T, E: LineError>(
    path: Option<&Path>,
    builtin: impl FnOnce() -> T,
    parse: impl FnOnce(&str) -> Result<T, Vec<E>>,
) -> Result<T, Vec<String>> {
    let Some(path) = path else {
        return Ok(builtin());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    parse(&text).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}:{}: {}", path.display(), e.line(), e.message()))
            .collect()
    })
}
