//! SPEC §9 invariants, checked from the database after every race.

use shopd::domain::money::verify_ledger;
use shopd::{sql_all, sql_scalar};

use crate::helpers::TestApp;

/// Assert every invariant that the current schema can express.
pub async fn assert_invariants(app: &TestApp) {
    let mut conn = app.db.read().await.expect("connection");

    // §9.2: 0 <= balance <= max, balance = its ledger, each balance_after the running sum.
    let users: Vec<(i64, i64)> =
        sql_all!((i64, i64); &mut conn, "SELECT id, balance FROM users ORDER BY id")
            .expect("users");
    for (user_id, balance) in &users {
        assert!(
            *balance >= 0 && *balance <= app.settings.max_balance,
            "user {user_id} balance {balance} out of range"
        );
        let ledger: Vec<(i64, i64)> = sql_all!((i64, i64); &mut conn,
            "SELECT amount, balance_after FROM balance_ledger WHERE user_id = $1 ORDER BY id", *user_id)
        .expect("ledger");
        assert_eq!(
            verify_ledger(&ledger, *balance),
            Ok(()),
            "user {user_id}: balance {balance} vs ledger {ledger:?}"
        );
    }
    // Sum of balances = charges - payments + refunds.
    let total_balance: i64 = sql_scalar!(
        &mut conn,
        "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM users"
    )
    .expect("sum");
    let ledger_sum: i64 = sql_scalar!(
        &mut conn,
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM balance_ledger"
    )
    .expect("sum");
    assert_eq!(
        total_balance, ledger_sum,
        "sum of balances equals the ledger"
    );

    // §9.3: a campaign never issues more than its quantity; its counter matches its coupons;
    // one coupon per member per campaign (also a unique constraint).
    let campaigns: Vec<(i64, i64, i64, i64)> = sql_all!((i64, i64, i64, i64); &mut conn,
        "SELECT c.id, c.total_quantity, c.issued_quantity,
                (SELECT COUNT(*) FROM user_coupons uc WHERE uc.coupon_id = c.id) FROM coupons c")
    .expect("coupons");
    for (id, total, issued, held) in campaigns {
        assert!(
            issued <= total,
            "campaign {id}: issued {issued} > total {total}"
        );
        assert_eq!(
            issued, held,
            "campaign {id}: counter {issued} vs {held} coupons"
        );
    }
    let doubles: i64 = sql_scalar!(&mut conn,
        "SELECT COUNT(*) FROM (SELECT coupon_id, user_id FROM user_coupons GROUP BY coupon_id, user_id HAVING COUNT(*) > 1) d")
    .expect("doubles");
    assert_eq!(doubles, 0, "a member holds at most one coupon per campaign");

    // §9.1: stock >= 0 and initial + restocks = stock (+ what orders hold).
    let products: Vec<(i64, i64, i64)> = sql_all!((i64, i64, i64); &mut conn,
        "SELECT p.id, p.stock, CAST(COALESCE((SELECT SUM(a.delta) FROM stock_adjustments a WHERE a.product_id = p.id), 0) AS BIGINT)
         FROM products p ORDER BY p.id")
    .expect("products");
    for (product_id, stock, supplied) in products {
        assert!(stock >= 0, "product {product_id} stock {stock}");
        assert_eq!(
            supplied, stock,
            "product {product_id}: supplied {supplied} = stock {stock}"
        );
    }
}
