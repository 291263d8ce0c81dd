//! Validation of free-text fields.

use crate::error::AppError;

/// Trim `value` and require 1..=`max_chars` characters.
pub fn required_text(field: &str, value: &str, max_chars: usize) -> Result<String, AppError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(AppError::validation(field, "must not be empty"));
    }
    optional_text(field, trimmed, max_chars).map(str::to_string)
}

/// Require at most `max_chars` characters.
pub fn optional_text<'a>(
    field: &str,
    value: &'a str,
    max_chars: usize,
) -> Result<&'a str, AppError> {
    if value.chars().count() > max_chars {
        return Err(AppError::validation(
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
}
