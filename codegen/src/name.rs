//! Names of blocks and how they become Rust identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated block name such as `job-queue` or `job_queue`: lowercase ASCII letters, digits,
/// `-` and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName {
    /// What is wrong with it.
    pub reason: String,
    /// A valid name close to it, if there is an obvious one.
    pub suggestion: Option<String>,
}

impl Name {
    /// Validates a block name.
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let suggestion = || {
            let fixed: String = raw
                .trim()
                .chars()
                .map(|c| match c {
                    ' ' | '.' | '/' => '-',
                    c => c.to_ascii_lowercase(),
                })
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            // Only suggest a name that keeps everything the author wrote.
            let starts_well = fixed.starts_with(|c: char| c.is_ascii_alphabetic());
            (starts_well && fixed != raw).then_some(fixed)
        };
        let invalid = |reason: String| InvalidName {
            reason,
            suggestion: suggestion(),
        };
        let Some(first) = raw.chars().next() else {
            return Err(invalid("a name cannot be empty".into()));
        };
        if !first.is_ascii_lowercase() {
            return Err(invalid(format!(
                "a name starts with a lowercase letter, not `{first}`"
            )));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(invalid(format!(
                "a name holds lowercase letters, digits, `-` and `_`, not {}",
                describe_char(bad)
            )));
        }
        if matches!(
            rust_ident(raw).as_str(),
            "self" | "super" | "crate" | "Self"
        ) {
            return Err(InvalidName {
                reason: format!("`{raw}` cannot be a Rust identifier, even a raw one"),
                suggestion: Some(format!("{raw}-1")),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Rust identifier this name maps to (see [`rust_ident`]).
    pub fn ident(&self) -> String {
        rust_ident(&self.0)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment variable name such as `API_KEY`: ASCII letters, digits and `_`, not starting
/// with a digit.
pub fn check_env_name(raw: &str) -> Result<(), InvalidName> {
    let invalid = |reason: String| InvalidName {
        reason,
        suggestion: None,
    };
    match raw.chars().next() {
        None => Err(invalid(
            "an environment variable name cannot be empty".into(),
        )),
        Some(c) if c.is_ascii_digit() => Err(invalid(
            "an environment variable name cannot start with a digit".into(),
        )),
        _ => match raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            Some(bad) => Err(InvalidName {
                reason: format!(
                    "an environment variable name holds letters, digits and `_`, not {}",
                    describe_char(bad)
                ),
                suggestion: Some(raw.replace(|c: char| !c.is_ascii_alphanumeric(), "_")),
            }),
            None => Ok(()),
        },
    }
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        c if c.is_ascii_uppercase() => format!("the uppercase `{c}`"),
        c => format!("`{}`", c.escape_default()),
    }
}

/// The one rule that turns a manifest name into a Rust identifier: lowercase, `-` becomes `_`.
/// `job-queue` and `job_queue` both map to `job_queue`, so a manifest may not declare both.
/// Environment names map the same way (`API_KEY` → `api_key`).
pub fn rust_ident(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// Whether `ident` is a Rust keyword and must be written as a raw identifier (`r#type`).
pub fn is_keyword(ident: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "do",
        "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in",
        "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
        "return", "static", "struct", "trait", "true", "try", "type", "typeof", "unsafe",
        "unsized", "use", "virtual", "where", "while", "yield",
    ];
    KEYWORDS.contains(&ident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_and_snake_names_map_to_one_identifier() {
        assert_eq!(
            Name::parse("job-queue").map(|n| n.ident()),
            Ok("job_queue".into())
        );
        assert_eq!(
            Name::parse("job_queue").map(|n| n.ident()),
            Ok("job_queue".into())
        );
        assert_eq!(rust_ident("API_KEY"), "api_key");
    }

    #[test]
    fn invalid_names_explain_and_suggest() {
        let err = Name::parse("Job Queue").unwrap_err();
        assert!(err.reason.contains("lowercase letter"), "{err:?}");
        assert_eq!(err.suggestion.as_deref(), Some("job-queue"));
        let err = Name::parse("jobs!").unwrap_err();
        assert!(err.reason.contains("`!`"), "{err:?}");
        assert_eq!(err.suggestion.as_deref(), Some("jobs"));
        assert!(Name::parse("").is_err());
        assert!(Name::parse("9lives").is_err());
        assert!(Name::parse("self").is_err());
        assert!(
            Name::parse("type").is_ok(),
            "keywords become raw identifiers"
        );
    }

    #[test]
    fn env_names_are_shell_variable_names() {
        assert!(check_env_name("API_KEY").is_ok());
        assert!(check_env_name("region_1").is_ok());
        assert!(check_env_name("1PASSWORD").is_err());
        assert_eq!(
            check_env_name("API-KEY").unwrap_err().suggestion.as_deref(),
            Some("API_KEY")
        );
    }
}
