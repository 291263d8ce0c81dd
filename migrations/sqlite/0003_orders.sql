-- Cart, orders, payments, order history, and the transactional outbox.
CREATE TABLE cart_items (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    product_id INTEGER NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    added_at   TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (user_id, product_id)
);

CREATE TABLE orders (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    status         TEXT    NOT NULL CHECK (status IN ('PENDING', 'PAID', 'CANCELLED', 'EXPIRED')),
    from_cart      INTEGER NOT NULL CHECK (from_cart IN (0, 1)),
    subtotal       INTEGER NOT NULL CHECK (subtotal >= 0),
    discount       INTEGER NOT NULL CHECK (discount >= 0 AND discount <= subtotal),
    total          INTEGER NOT NULL CHECK (total = subtotal - discount),
    user_coupon_id INTEGER REFERENCES user_coupons (id),
    coupon_id      INTEGER REFERENCES coupons (id),
    expires_at     TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    paid_at        TEXT
);
CREATE INDEX orders_by_user ON orders (user_id, id);
CREATE INDEX orders_pending_by_expiry ON orders (expires_at) WHERE status = 'PENDING';
-- A user coupon is used by at most one live order (SPEC §9.3).
CREATE UNIQUE INDEX orders_one_live_per_coupon ON orders (user_coupon_id)
    WHERE user_coupon_id IS NOT NULL AND status IN ('PENDING', 'PAID');

-- Snapshot of each line at order time: name and unit price as they were.
CREATE TABLE order_lines (
    order_id   INTEGER NOT NULL REFERENCES orders (id),
    product_id INTEGER NOT NULL REFERENCES products (id),
    name       TEXT    NOT NULL,
    unit_price INTEGER NOT NULL CHECK (unit_price >= 0),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    line_total INTEGER NOT NULL CHECK (line_total = unit_price * quantity),
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX order_lines_by_product ON order_lines (product_id);

-- Payment attempts (1:N per order); at most one SUCCEEDED per order.
CREATE TABLE payments (
    id           INTEGER PRIMARY KEY,
    order_id     INTEGER NOT NULL REFERENCES orders (id),
    user_id      INTEGER NOT NULL REFERENCES users (id),
    amount       INTEGER NOT NULL CHECK (amount >= 0),
    status       TEXT    NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED')),
    failure_code TEXT,
    created_at   TEXT    NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id);
CREATE UNIQUE INDEX payments_one_success_per_order ON payments (order_id) WHERE status = 'SUCCEEDED';

CREATE TABLE order_status_history (
    id          INTEGER PRIMARY KEY,
    order_id    INTEGER NOT NULL REFERENCES orders (id),
    from_status TEXT,
    to_status   TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);
CREATE INDEX order_status_history_by_order ON order_status_history (order_id, id);

-- Transactional outbox: written in the payment transaction, delivered after commit.
CREATE TABLE outbox_events (
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
    delivered_at    TEXT,
    UNIQUE (event_type, aggregate_id)
);
CREATE INDEX outbox_events_due ON outbox_events (next_attempt_at) WHERE status = 'PENDING';
