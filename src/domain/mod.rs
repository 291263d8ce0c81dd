//! Pure business rules: no I/O, no async. Request bodies are parsed into these types at the
//! edge (`TryFrom`-style constructors), so everything past the handler works on valid values.

pub mod backoff;
pub mod coupon;
pub mod invalid;
pub mod money;
pub mod order;
pub mod pagination;
pub mod product;
pub mod refund;
pub mod text;
pub mod time;
