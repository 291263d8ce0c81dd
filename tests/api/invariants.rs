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

    // §9.1: stock >= 0 and initial + restocks = stock + held by PENDING orders + sold in PAID orders.
    let products: Vec<(i64, i64, i64, i64)> = sql_all!((i64, i64, i64, i64); &mut conn,
        "SELECT p.id, p.stock,
                CAST(COALESCE((SELECT SUM(a.delta) FROM stock_adjustments a WHERE a.product_id = p.id), 0) AS BIGINT),
                CAST(COALESCE((SELECT SUM(l.quantity) FROM order_lines l JOIN orders o ON o.id = l.order_id
                               WHERE l.product_id = p.id AND o.status IN ('PENDING', 'PAID')), 0) AS BIGINT)
         FROM products p ORDER BY p.id")
    .expect("products");
    for (product_id, stock, supplied, held) in products {
        assert!(stock >= 0, "product {product_id} stock {stock}");
        assert_eq!(
            supplied,
            stock + held,
            "product {product_id}: supplied {supplied} = stock {stock} + held/sold {held}"
        );
    }

    // §9.3: a user coupon is USED exactly when one live order holds it.
    let coupon_mismatches: i64 = sql_scalar!(&mut conn,
        "SELECT COUNT(*) FROM user_coupons uc WHERE
            (uc.status = 'USED') <> EXISTS (SELECT 1 FROM orders o WHERE o.user_coupon_id = uc.id
                                            AND o.status IN ('PENDING', 'PAID') AND uc.order_id = o.id)")
    .expect("coupon use");
    assert_eq!(coupon_mismatches, 0, "USED coupons match live orders");
    let shared: i64 = sql_scalar!(&mut conn,
        "SELECT COUNT(*) FROM (SELECT user_coupon_id FROM orders WHERE user_coupon_id IS NOT NULL
                               AND status IN ('PENDING', 'PAID') GROUP BY user_coupon_id HAVING COUNT(*) > 1) s")
    .expect("shared coupons");
    assert_eq!(shared, 0, "a user coupon is used by at most one live order");

    // §9.4: a PAID order has exactly one SUCCEEDED payment of its total and one ORDER_PAID event;
    // other orders have neither.
    let orders: Vec<(i64, String, i64, i64, i64, i64)> = sql_all!((i64, String, i64, i64, i64, i64); &mut conn,
        "SELECT o.id, o.status, o.total,
                (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.status = 'SUCCEEDED'),
                CAST(COALESCE((SELECT SUM(p.amount) FROM payments p WHERE p.order_id = o.id AND p.status = 'SUCCEEDED'), 0) AS BIGINT),
                (SELECT COUNT(*) FROM outbox_events e WHERE e.aggregate_id = o.id AND e.event_type = 'ORDER_PAID')
         FROM orders o")
    .expect("orders");
    for (id, status, total, succeeded, paid_amount, events) in orders {
        if status == "PAID" {
            assert_eq!(
                (succeeded, paid_amount, events),
                (1, total, 1),
                "PAID order {id}"
            );
        } else {
            assert_eq!((succeeded, events), (0, 0), "{status} order {id}");
        }
    }
    // Payments and the ledger agree.
    let payments: i64 = sql_scalar!(
        &mut conn,
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM payments WHERE status = 'SUCCEEDED'"
    )
    .expect("payments");
    let debits: i64 = sql_scalar!(
        &mut conn,
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM balance_ledger WHERE kind = 'PAYMENT'"
    )
    .expect("debits");
    assert_eq!(
        payments, -debits,
        "PAYMENT ledger entries equal succeeded payments"
    );
}
