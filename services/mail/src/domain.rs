//! Validated note types. Values of these types are valid by construction: handlers and the
//! populator parse input into them at the edge, and nothing deeper re-checks.

use std::fmt;

/// A note title: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteTitle(String);

impl NoteTitle {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(input: &str) -> Result<Self, String> {
        let title = input.trim();
        if title.is_empty() {
            return Err("must not be empty".into());
        }
        if title.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if title.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(title.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NoteTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A note body: free text up to the configured length (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteBody(String);

impl NoteBody {
    pub fn parse(input: &str, max_chars: usize) -> Result<Self, String> {
        if input.chars().count() > max_chars {
            return Err(format!("must be at most {max_chars} characters"));
        }
        if input.contains('\0') {
            return Err("must not contain NUL characters".into());
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(
            NoteTitle::parse("  Groceries ").unwrap().as_str(),
            "Groceries"
        );
        assert!(NoteTitle::parse("   ").is_err());
        assert!(NoteTitle::parse(&"x".repeat(201)).is_err());
        assert!(NoteTitle::parse(&"é".repeat(200)).is_ok());
        assert!(NoteTitle::parse("bell\u{7}").is_err());
    }

    #[test]
    fn bodies_respect_the_limit() {
        assert!(NoteBody::parse("", 5).is_ok());
        assert!(NoteBody::parse("123456", 5).is_err());
        assert!(NoteBody::parse("a\0b", 5).is_err());
    }
}
