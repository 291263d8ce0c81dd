-- Best-seller aggregates: quantity and revenue sold per product per UTC day of payment.
CREATE TABLE product_sales_daily (
    day        TEXT    NOT NULL, -- YYYY-MM-DD, UTC
    product_id INTEGER NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL,
    revenue    INTEGER NOT NULL,
    PRIMARY KEY (day, product_id)
);

-- When the aggregates were last computed (one row).
CREATE TABLE ranking_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    computed_at TEXT NOT NULL
);

CREATE INDEX orders_paid_at ON orders (paid_at) WHERE status = 'PAID';
