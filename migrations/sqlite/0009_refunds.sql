-- no-transaction
-- Refunds, CONFIRMED and every order event (issue #14; SPEC §6, §9, §10, §14).
--
-- SQLite cannot change a CHECK or a UNIQUE constraint in place, so two tables are rebuilt:
-- `orders` (its status check gains CONFIRMED, PARTIALLY_REFUNDED and REFUNDED) and
-- `outbox_events` (an order now has one ORDER_REFUNDED event per refund). Rebuilding a table
-- that others reference needs foreign keys off, and SQLite ignores that switch inside a
-- transaction: so this migration runs outside sqlx's transaction (first line), turns foreign
-- keys off, does ALL its work in one transaction of its own, and turns them back on.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE orders_rebuilt (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    status          TEXT    NOT NULL CHECK (status IN ('PENDING', 'PAID', 'CONFIRMED',
                        'PARTIALLY_REFUNDED', 'REFUNDED', 'CANCELLED', 'EXPIRED')),
    from_cart       INTEGER NOT NULL CHECK (from_cart IN (0, 1)),
    subtotal        INTEGER NOT NULL CHECK (subtotal >= 0),
    discount        INTEGER NOT NULL CHECK (discount >= 0 AND discount <= subtotal),
    total           INTEGER NOT NULL CHECK (total = subtotal - discount),
    user_coupon_id  INTEGER REFERENCES user_coupons (id),
    coupon_id       INTEGER REFERENCES coupons (id),
    expires_at      TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    -- Set exactly when the order is paid (PAID and every later state), never otherwise.
    paid_at         TEXT,
    -- When the data platform acknowledged the order's ORDER_PAID event (PAID -> CONFIRMED).
    confirmed_at    TEXT,
    -- Sum of the order's refunds (SPEC §9.4: never more than its total).
    refunded_amount INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= total)
);
INSERT INTO orders_rebuilt (id, user_id, status, from_cart, subtotal, discount, total, user_coupon_id,
                            coupon_id, expires_at, created_at, updated_at, paid_at)
SELECT id, user_id, status, from_cart, subtotal, discount, total, user_coupon_id,
       coupon_id, expires_at, created_at, updated_at, paid_at
FROM orders;
DROP TABLE orders;
ALTER TABLE orders_rebuilt RENAME TO orders;

CREATE INDEX orders_by_user ON orders (user_id, id);
CREATE INDEX orders_pending_by_expiry ON orders (expires_at) WHERE status = 'PENDING';
-- A user coupon is used by at most one live order (SPEC §9.3); a refund does not give the
-- coupon back, so every paid state is live.
CREATE UNIQUE INDEX orders_one_live_per_coupon ON orders (user_coupon_id)
    WHERE user_coupon_id IS NOT NULL AND status NOT IN ('CANCELLED', 'EXPIRED');
-- Best-sellers read paid orders by payment time whatever happened after (CONFIRMED, refunds).
CREATE INDEX orders_paid_at ON orders (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX orders_by_created ON orders (created_at, id);
CREATE INDEX orders_by_status_created ON orders (status, created_at, id);
CREATE INDEX orders_by_user_created ON orders (user_id, created_at, id);

-- Units of each line refunded so far.
ALTER TABLE order_lines ADD COLUMN refunded_quantity INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_quantity >= 0 AND refunded_quantity <= quantity);

CREATE TABLE refunds (
    id         INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL REFERENCES orders (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    restock    INTEGER NOT NULL CHECK (restock IN (0, 1)),
    reason     TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
CREATE INDEX refunds_by_order ON refunds (order_id, id);
-- The best-seller job reads new refunds by time (like new payments by paid_at).
CREATE INDEX refunds_by_created ON refunds (created_at);

CREATE TABLE refund_lines (
    refund_id  INTEGER NOT NULL REFERENCES refunds (id),
    product_id INTEGER NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (refund_id, product_id)
);

CREATE TABLE outbox_events_rebuilt (
    id              TEXT    PRIMARY KEY,
    event_type      TEXT    NOT NULL,
    aggregate_id    INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    locked_until    TEXT,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    delivered_at    TEXT
);
INSERT INTO outbox_events_rebuilt (id, event_type, aggregate_id, payload, status, attempts,
                                   next_attempt_at, locked_until, last_error, created_at, delivered_at)
SELECT id, event_type, aggregate_id, payload, status, attempts,
       next_attempt_at, locked_until, last_error, created_at, delivered_at
FROM outbox_events;
DROP TABLE outbox_events;
ALTER TABLE outbox_events_rebuilt RENAME TO outbox_events;
CREATE INDEX outbox_events_due ON outbox_events (next_attempt_at) WHERE status = 'PENDING';
-- One ORDER_PAID, ORDER_CANCELLED or ORDER_EXPIRED event per order (aggregate_id is the
-- order); ORDER_REFUNDED: one per refund (the refund's id is in the payload).
CREATE UNIQUE INDEX outbox_events_once_per_order ON outbox_events (event_type, aggregate_id)
    WHERE event_type <> 'ORDER_REFUNDED';

-- Best-sellers net of refunds: the job subtracts each refund once, from the day its order was
-- paid, reading new refunds from a trailing window exactly as it reads new payments.
CREATE TABLE ranking_counted_refunds (
    refund_id  INTEGER PRIMARY KEY,
    created_at TEXT    NOT NULL,
    run        INTEGER NOT NULL
);
CREATE INDEX ranking_counted_refunds_by_run ON ranking_counted_refunds (run);
ALTER TABLE ranking_state ADD COLUMN refund_window_from TEXT;

COMMIT;
PRAGMA foreign_keys = ON;
