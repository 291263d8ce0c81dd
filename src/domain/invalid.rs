//! The one error a domain rule raises: a named input that is not acceptable. The HTTP layer
//! turns it into `400 VALIDATION_ERROR` (`impl From<Invalid> for AppError`); the domain knows
//! nothing of HTTP.

/// An input field that fails a rule, with the reason in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}
