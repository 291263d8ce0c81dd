//! Validation of free-text fields.
//!
//! Both backends must answer the same input the same way (SPEC §8): PostgreSQL refuses a NUL
//! in text (a 500 if it reached the database) while SQLite stores it, so every free-text input
//! is checked here first. Control characters (Unicode category Cc: NUL, ESC, CR, DEL, C1...)
//! are refused everywhere; only multi-line text (product descriptions) also accepts tab and
//! line feed.

use super::invalid::Invalid;

/// Trim `value` and require 1..=`max_chars` characters of single-line text. Control characters
/// are refused before trimming: a name ending in a line feed is an error, not silently cleaned.
pub fn required_text(field: &str, value: &str, max_chars: usize) -> Result<String, Invalid> {
    no_control_chars(field, value)?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    optional_text(field, trimmed, max_chars).map(str::to_string)
}

/// Require at most `max_chars` characters of single-line text (no control characters).
pub fn optional_text<'a>(
    field: &str,
    value: &'a str,
    max_chars: usize,
) -> Result<&'a str, Invalid> {
    bounded(
        field,
        value,
        max_chars,
        |c| !c.is_control(),
        "control characters",
    )
}

/// Require at most `max_chars` characters of multi-line text: tab and line feed are allowed,
/// every other control character (NUL, carriage return, escape...) is not.
pub fn multiline_text<'a>(
    field: &str,
    value: &'a str,
    max_chars: usize,
) -> Result<&'a str, Invalid> {
    bounded(
        field,
        value,
        max_chars,
        |c| !c.is_control() || c == '\n' || c == '\t',
        "control characters other than tab and line feed",
    )
}

/// Reject text containing a control character (for identifiers such as cursors and ids that
/// reach the database as strings).
pub fn no_control_chars(field: &str, value: &str) -> Result<(), Invalid> {
    bounded(
        field,
        value,
        usize::MAX,
        |c| !c.is_control(),
        "control characters",
    )
    .map(|_| ())
}

fn bounded<'a>(
    field: &str,
    value: &'a str,
    max_chars: usize,
    allowed: impl Fn(char) -> bool,
    refused: &str,
) -> Result<&'a str, Invalid> {
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(Invalid::new(
            field,
            format!("must not contain {refused} (found U+{:04X})", u32::from(c)),
        ));
    }
    if value.chars().count() > max_chars {
        return Err(Invalid::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds_text() {
        assert_eq!(required_text("name", "  Kim ", 10).unwrap(), "Kim");
        assert!(required_text("name", "   ", 10).is_err());
        assert!(required_text("name", "abcdefghijk", 10).is_err());
        // Characters, not bytes: ten Hangul syllables fit in ten.
        assert!(required_text("name", "가나다라마바사아자차", 10).is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in [
            "a\0b",
            "a\nb",
            "a\tb",
            "a\rb",
            "a\u{1b}[31mb",
            "a\u{7f}",
            "a\u{85}",
        ] {
            assert!(required_text("name", bad, 100).is_err(), "{bad:?}");
            assert!(optional_text("name", bad, 100).is_err(), "{bad:?}");
        }
        // Interior spaces and non-ASCII letters are fine.
        assert!(required_text("name", "Kim Min-ji 김민지 ☕", 100).is_ok());
    }

    #[test]
    fn multiline_text_allows_tab_and_line_feed_only() {
        assert!(multiline_text("description", "line 1\nline 2\tx", 100).is_ok());
        for bad in ["a\0b", "a\r\nb", "a\u{1b}b", "a\u{7f}"] {
            let err = multiline_text("description", bad, 100).unwrap_err();
            assert_eq!(err.field, "description");
        }
        assert!(no_control_chars("cursor", "abc").is_ok());
        assert!(no_control_chars("cursor", "a\0").is_err());
    }
}
