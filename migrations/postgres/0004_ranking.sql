-- Best-seller aggregates: quantity and revenue sold per product per UTC day of payment.
CREATE TABLE product_sales_daily (
    day        TEXT   NOT NULL, -- YYYY-MM-DD, UTC
    product_id BIGINT NOT NULL REFERENCES products (id),
    quantity   BIGINT NOT NULL,
    revenue    BIGINT NOT NULL,
    PRIMARY KEY (day, product_id)
);

-- When the aggregates were last computed (one row).
CREATE TABLE ranking_state (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    computed_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX orders_paid_at ON orders (paid_at) WHERE status = 'PAID';
