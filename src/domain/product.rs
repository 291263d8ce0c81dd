//! Products: status, price and stock rules.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::invalid::Invalid;
use crate::domain::text::{multiline_text, required_text};

/// The largest unit price accepted (keeps every order total far from overflow).
pub const MAX_PRICE: i64 = 1_000_000_000;
/// The largest stock a product may hold, and the largest single stock change.
pub const MAX_STOCK: i64 = 1_000_000_000;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 4_000;

/// `ON_SALE` can be ordered; `SUSPENDED` is visible but cannot be ordered (판매 중지);
/// `DISCONTINUED` is hidden from members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProductStatus {
    OnSale,
    Suspended,
    Discontinued,
}

impl ProductStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::OnSale => "ON_SALE",
            ProductStatus::Suspended => "SUSPENDED",
            ProductStatus::Discontinued => "DISCONTINUED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ON_SALE" => Some(ProductStatus::OnSale),
            "SUSPENDED" => Some(ProductStatus::Suspended),
            "DISCONTINUED" => Some(ProductStatus::Discontinued),
            _ => None,
        }
    }

    pub fn is_orderable(self) -> bool {
        self == ProductStatus::OnSale
    }
}

pub fn validate_price(price: i64) -> Result<i64, Invalid> {
    if !(0..=MAX_PRICE).contains(&price) {
        return Err(Invalid::new(
            "price",
            format!("must be between 0 and {MAX_PRICE}"),
        ));
    }
    Ok(price)
}

/// A validated new product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
    pub stock: i64,
    pub status: ProductStatus,
}

impl NewProduct {
    pub fn parse(
        name: &str,
        description: Option<&str>,
        price: i64,
        stock: i64,
        status: Option<ProductStatus>,
    ) -> Result<Self, Invalid> {
        let name = required_text("name", name, MAX_NAME_CHARS)?;
        let description = description
            .map(|d| multiline_text("description", d, MAX_DESCRIPTION_CHARS).map(str::to_string))
            .transpose()?;
        let price = validate_price(price)?;
        if !(0..=MAX_STOCK).contains(&stock) {
            return Err(Invalid::new(
                "stock",
                format!("must be between 0 and {MAX_STOCK}"),
            ));
        }
        Ok(Self {
            name,
            description,
            price,
            stock,
            status: status.unwrap_or(ProductStatus::OnSale),
        })
    }
}

/// A validated partial update; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<i64>,
    pub status: Option<ProductStatus>,
}

impl ProductPatch {
    pub fn parse(
        name: Option<&str>,
        description: Option<&str>,
        price: Option<i64>,
        status: Option<ProductStatus>,
    ) -> Result<Self, Invalid> {
        let patch = Self {
            name: name
                .map(|n| required_text("name", n, MAX_NAME_CHARS))
                .transpose()?,
            description: description
                .map(|d| {
                    multiline_text("description", d, MAX_DESCRIPTION_CHARS).map(str::to_string)
                })
                .transpose()?,
            price: price.map(validate_price).transpose()?,
            status,
        };
        if patch == Self::default() {
            return Err(Invalid::new("body", "names no field to change"));
        }
        Ok(patch)
    }
}

/// A validated stock change: non-zero and bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn parse(delta: i64) -> Result<Self, Invalid> {
        if delta == 0 || !(-MAX_STOCK..=MAX_STOCK).contains(&delta) {
            return Err(Invalid::new(
                "delta",
                format!("must be non-zero and between -{MAX_STOCK} and {MAX_STOCK}"),
            ));
        }
        Ok(Self(delta))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for s in [
            ProductStatus::OnSale,
            ProductStatus::Suspended,
            ProductStatus::Discontinued,
        ] {
            assert_eq!(ProductStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ProductStatus::parse("on_sale"), None);
        assert!(ProductStatus::OnSale.is_orderable());
        assert!(!ProductStatus::Suspended.is_orderable());
    }

    #[test]
    fn new_product_rules() {
        let p = NewProduct::parse(" Mug ", None, 12_000, 5, None).unwrap();
        assert_eq!((p.name.as_str(), p.status), ("Mug", ProductStatus::OnSale));
        assert!(NewProduct::parse("", None, 1, 1, None).is_err());
        assert!(NewProduct::parse("x", None, -1, 1, None).is_err());
        assert!(NewProduct::parse("x", None, MAX_PRICE + 1, 1, None).is_err());
        assert!(NewProduct::parse("x", None, 1, -1, None).is_err());
        assert!(NewProduct::parse("x", None, 0, 0, Some(ProductStatus::Suspended)).is_ok());
    }

    #[test]
    fn empty_patch_is_rejected() {
        assert!(ProductPatch::parse(None, None, None, None).is_err());
        assert!(ProductPatch::parse(None, None, Some(-1), None).is_err());
        assert_eq!(
            ProductPatch::parse(None, None, Some(5), None)
                .unwrap()
                .price,
            Some(5)
        );
    }

    #[test]
    fn stock_delta_rules() {
        assert!(StockDelta::parse(0).is_err());
        assert!(StockDelta::parse(MAX_STOCK + 1).is_err());
        assert!(StockDelta::parse(i64::MIN).is_err());
        assert_eq!(StockDelta::parse(-3).unwrap().get(), -3);
    }
}
