//! SPEC §9 invariants, checked from the database after every race.

use shopd::domain::money::verify_ledger;
use shopd::{sql_all, sql_one, sql_scalar};

use crate::helpers::TestApp;

/// Assert every invariant that the current schema can express.
pub async fn assert_invariants(app: &TestApp) {
    let mut conn = app.db.read().await.expect("connection");

    // §9.2: balance >= 0, never above the maximum through a charge (a refund is credited in
    // full, even above it), balance = its ledger, each balance_after the running sum.
    let users: Vec<(i64, i64)> =
        sql_all!((i64, i64); &mut conn, "SELECT id, balance FROM users ORDER BY id")
            .expect("users");
    for (user_id, balance) in &users {
        assert!(*balance >= 0, "user {user_id} balance {balance} below zero");
        let ledger: Vec<(i64, i64)> = sql_all!((i64, i64); &mut conn,
            "SELECT amount, balance_after FROM balance_ledger WHERE user_id = $1 ORDER BY id", *user_id)
        .expect("ledger");
        assert_eq!(
            verify_ledger(&ledger, *balance),
            Ok(()),
            "user {user_id}: balance {balance} vs ledger {ledger:?}"
        );
    }
    let over: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM balance_ledger WHERE kind = 'CHARGE' AND (amount <= 0 OR balance_after > $1)",
        app.settings.max_balance
    )
    .expect("charges");
    assert_eq!(over, 0, "no charge takes a balance past the maximum");
    // Sum of balances = charges - payments + refunds.
    let total_balance: i64 = sql_scalar!(
        &mut conn,
        "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM users"
    )
    .expect("sum");
    let (charges, payments, refunds): (i64, i64, i64) = sql_one!((i64, i64, i64); &mut conn,
        "SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'CHARGE' THEN amount ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN kind = 'PAYMENT' THEN -amount ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN kind = 'REFUND' THEN amount ELSE 0 END), 0) AS BIGINT)
         FROM balance_ledger")
    .expect("ledger sums");
    assert_eq!(
        total_balance,
        charges - payments + refunds,
        "sum of balances = charges {charges} - payments {payments} + refunds {refunds}"
    );
    let refunded: i64 = sql_scalar!(
        &mut conn,
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds"
    )
    .expect("refunds");
    assert_eq!(refunds, refunded, "REFUND ledger entries equal the refunds");
    let refund_entries_off: i64 = sql_scalar!(&mut conn,
        "SELECT COUNT(*) FROM orders o WHERE
            (SELECT COUNT(*) FROM refunds r WHERE r.order_id = o.id)
              <> (SELECT COUNT(*) FROM balance_ledger b WHERE b.order_id = o.id AND b.kind = 'REFUND')
         OR CAST(COALESCE((SELECT SUM(r.amount) FROM refunds r WHERE r.order_id = o.id), 0) AS BIGINT)
              <> CAST(COALESCE((SELECT SUM(b.amount) FROM balance_ledger b WHERE b.order_id = o.id AND b.kind = 'REFUND'), 0) AS BIGINT)")
    .expect("refund entries");
    assert_eq!(
        refund_entries_off, 0,
        "each refund has one REFUND ledger entry of its amount, on its order"
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

    // §9.1: stock >= 0 and initial + restocks + refunded units put back = stock + held by
    // PENDING orders + sold in paid orders (PAID, CONFIRMED, PARTIALLY_REFUNDED, REFUNDED).
    let products: Vec<(i64, i64, i64, i64)> = sql_all!((i64, i64, i64, i64); &mut conn,
        "SELECT p.id, p.stock,
                CAST(COALESCE((SELECT SUM(a.delta) FROM stock_adjustments a WHERE a.product_id = p.id), 0) AS BIGINT)
                + CAST(COALESCE((SELECT SUM(rl.quantity) FROM refund_lines rl JOIN refunds r ON r.id = rl.refund_id
                                 WHERE rl.product_id = p.id AND r.restock), 0) AS BIGINT),
                CAST(COALESCE((SELECT SUM(l.quantity) FROM order_lines l JOIN orders o ON o.id = l.order_id
                               WHERE l.product_id = p.id AND o.status IN ('PENDING', 'PAID', 'CONFIRMED',
                                                                          'PARTIALLY_REFUNDED', 'REFUNDED')), 0) AS BIGINT)
         FROM products p ORDER BY p.id")
    .expect("products");
    for (product_id, stock, supplied, held) in products {
        assert!(stock >= 0, "product {product_id} stock {stock}");
        assert_eq!(
            supplied,
            stock + held,
            "product {product_id}: supplied and put back {supplied} = stock {stock} + held/sold {held}"
        );
    }

    // §9.3: a user coupon is USED exactly when one live order holds it.
    let coupon_mismatches: i64 = sql_scalar!(&mut conn,
        "SELECT COUNT(*) FROM user_coupons uc WHERE
            (uc.status = 'USED') <> EXISTS (SELECT 1 FROM orders o WHERE o.user_coupon_id = uc.id
                                            AND o.status NOT IN ('CANCELLED', 'EXPIRED') AND uc.order_id = o.id)")
    .expect("coupon use");
    assert_eq!(coupon_mismatches, 0, "USED coupons match live orders");
    let shared: i64 = sql_scalar!(&mut conn,
        "SELECT COUNT(*) FROM (SELECT user_coupon_id FROM orders WHERE user_coupon_id IS NOT NULL
                               AND status NOT IN ('CANCELLED', 'EXPIRED') GROUP BY user_coupon_id HAVING COUNT(*) > 1) s")
    .expect("shared coupons");
    assert_eq!(shared, 0, "a user coupon is used by at most one live order");

    // §9.4: a paid order (PAID and every later state) has exactly one SUCCEEDED payment of its
    // total and one ORDER_PAID event; other orders have neither. The refunds of an order never
    // add up to more than its total, and they are what the order and its lines say was refunded.
    #[derive(sqlx::FromRow)]
    struct OrderFacts {
        id: i64,
        status: String,
        total: i64,
        succeeded: i64,
        paid_amount: i64,
        paid_events: i64,
        refunded_amount: i64,
        refunds: i64,
        refunds_sum: i64,
        refund_events: i64,
        units: i64,
        refunded_units: i64,
        released_events: i64,
        confirmed: bool,
        paid_delivered: i64,
    }
    shopd::lite_row!(OrderFacts {
        id,
        status,
        total,
        succeeded,
        paid_amount,
        paid_events,
        refunded_amount,
        refunds,
        refunds_sum,
        refund_events,
        units,
        refunded_units,
        released_events,
        confirmed,
        paid_delivered
    });
    let orders: Vec<OrderFacts> = sql_all!(OrderFacts; &mut conn,
        "SELECT o.id, o.status, o.total,
                (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.status = 'SUCCEEDED') AS succeeded,
                CAST(COALESCE((SELECT SUM(p.amount) FROM payments p WHERE p.order_id = o.id AND p.status = 'SUCCEEDED'), 0) AS BIGINT) AS paid_amount,
                (SELECT COUNT(*) FROM outbox_events e WHERE e.aggregate_id = o.id AND e.event_type = 'ORDER_PAID') AS paid_events,
                o.refunded_amount,
                (SELECT COUNT(*) FROM refunds r WHERE r.order_id = o.id) AS refunds,
                CAST(COALESCE((SELECT SUM(r.amount) FROM refunds r WHERE r.order_id = o.id), 0) AS BIGINT) AS refunds_sum,
                (SELECT COUNT(*) FROM outbox_events e WHERE e.aggregate_id = o.id AND e.event_type = 'ORDER_REFUNDED') AS refund_events,
                CAST((SELECT SUM(l.quantity) FROM order_lines l WHERE l.order_id = o.id) AS BIGINT) AS units,
                CAST((SELECT SUM(l.refunded_quantity) FROM order_lines l WHERE l.order_id = o.id) AS BIGINT) AS refunded_units,
                (SELECT COUNT(*) FROM outbox_events e WHERE e.aggregate_id = o.id
                   AND e.event_type IN ('ORDER_CANCELLED', 'ORDER_EXPIRED')) AS released_events,
                o.confirmed_at IS NOT NULL AS confirmed,
                (SELECT COUNT(*) FROM outbox_events e WHERE e.aggregate_id = o.id
                   AND e.event_type = 'ORDER_PAID' AND e.status = 'DELIVERED') AS paid_delivered
         FROM orders o")
    .expect("orders");
    for o in orders {
        let id = o.id;
        let status = o.status.as_str();
        let paid = matches!(
            status,
            "PAID" | "CONFIRMED" | "PARTIALLY_REFUNDED" | "REFUNDED"
        );
        if paid {
            assert_eq!(
                (o.succeeded, o.paid_amount, o.paid_events),
                (1, o.total, 1),
                "{status} order {id}: one SUCCEEDED payment of its total, one ORDER_PAID event"
            );
        } else {
            assert_eq!((o.succeeded, o.paid_events), (0, 0), "{status} order {id}");
        }
        assert!(
            o.refunds_sum <= o.total,
            "order {id}: refunds {} > total {}",
            o.refunds_sum,
            o.total
        );
        assert_eq!(
            o.refunded_amount, o.refunds_sum,
            "order {id}: refundedAmount = its refunds"
        );
        assert_eq!(
            o.refund_events, o.refunds,
            "order {id}: one ORDER_REFUNDED event per refund"
        );
        let expected_refund_state = match (o.refunded_units, o.units) {
            (0, _) => None,
            (r, u) if r < u => Some("PARTIALLY_REFUNDED"),
            _ => Some("REFUNDED"),
        };
        match expected_refund_state {
            None => assert!(
                o.refunds == 0 && !matches!(status, "PARTIALLY_REFUNDED" | "REFUNDED"),
                "{status} order {id}: no unit refunded, {} refunds",
                o.refunds
            ),
            Some(expected) => assert_eq!(
                status, expected,
                "order {id}: {} of {} units refunded",
                o.refunded_units, o.units
            ),
        }
        if status == "REFUNDED" {
            assert_eq!(
                o.refunds_sum, o.total,
                "REFUNDED order {id} gave back exactly its total"
            );
        }
        // ORDER_CANCELLED / ORDER_EXPIRED: exactly for the orders released, one each.
        assert_eq!(
            o.released_events,
            i64::from(matches!(status, "CANCELLED" | "EXPIRED")),
            "{status} order {id}: release events"
        );
        // CONFIRMED exactly once the platform had the ORDER_PAID event; confirmedAt with it.
        if status == "CONFIRMED" {
            assert!(o.confirmed && o.paid_delivered == 1, "CONFIRMED order {id}");
        }
        if o.confirmed {
            assert_eq!(o.paid_delivered, 1, "order {id} confirmed without delivery");
        }
    }
    // Every refund's lines add up to it, and every line's refunded units are its refunds' units.
    let bad_refunds: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM refunds r WHERE r.amount <> CAST(COALESCE(
            (SELECT SUM(rl.amount) FROM refund_lines rl WHERE rl.refund_id = r.id), -1) AS BIGINT)"
    )
    .expect("refund lines");
    assert_eq!(bad_refunds, 0, "a refund is the sum of its lines");
    let bad_lines: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM order_lines l WHERE l.refunded_quantity <> CAST(COALESCE(
            (SELECT SUM(rl.quantity) FROM refund_lines rl JOIN refunds r ON r.id = rl.refund_id
             WHERE r.order_id = l.order_id AND rl.product_id = l.product_id), 0) AS BIGINT)"
    )
    .expect("refunded units");
    assert_eq!(bad_lines, 0, "refunded units per line = its refunds' units");
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
    // Every line, status change and payment belongs to an order, and every order has lines and
    // a history (PostgreSQL checks no foreign key here since migration 0014; SQLite does).
    let orphans: i64 = sql_scalar!(
        &mut conn,
        "SELECT (SELECT COUNT(*) FROM order_lines l WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = l.order_id))
              + (SELECT COUNT(*) FROM order_status_history h WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = h.order_id))
              + (SELECT COUNT(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = p.order_id))"
    )
    .expect("orphans");
    assert_eq!(
        orphans, 0,
        "no line, status change or payment without its order"
    );
    // Every order, payment and ledger entry names a member that exists, every line a product
    // (PostgreSQL's flush checks these instead of foreign keys since migration 0015).
    let unknown: i64 = sql_scalar!(
        &mut conn,
        "SELECT (SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id))
              + (SELECT COUNT(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p.user_id))
              + (SELECT COUNT(*) FROM balance_ledger b WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = b.user_id))
              + (SELECT COUNT(*) FROM order_lines l WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = l.product_id))"
    )
    .expect("unknown members and products");
    assert_eq!(
        unknown, 0,
        "no order, payment or ledger entry of an unknown member, no line of an unknown product"
    );
    let bare: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM orders o
         WHERE NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id)
            OR NOT EXISTS (SELECT 1 FROM order_status_history h WHERE h.order_id = o.id)"
    )
    .expect("bare orders");
    assert_eq!(bare, 0, "every order has its lines and its history");
}
