-- Members, admin token, balance ledger, products, stock adjustments, idempotency keys.
-- Timestamps are RFC 3339 UTC text written by the application; money is INTEGER minor units.

CREATE TABLE users (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL,
    token_hash         TEXT    NOT NULL UNIQUE,
    balance            INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    balance_updated_at TEXT    NOT NULL,
    created_at         TEXT    NOT NULL
);

-- The generated admin token of the embedded default (one row at most).
CREATE TABLE admin_tokens (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE balance_ledger (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT    NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT', 'REFUND')),
    amount        INTEGER NOT NULL,
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    order_id      INTEGER,
    created_at    TEXT    NOT NULL
);
CREATE INDEX balance_ledger_by_user ON balance_ledger (user_id, id);

CREATE TABLE products (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT,
    price       INTEGER NOT NULL CHECK (price >= 0),
    status      TEXT    NOT NULL CHECK (status IN ('ON_SALE', 'SUSPENDED', 'DISCONTINUED')),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX products_by_status ON products (status, id);

-- Every change of stock that is not an order: initial stock, restocks, corrections.
CREATE TABLE stock_adjustments (
    id         INTEGER PRIMARY KEY,
    product_id INTEGER NOT NULL REFERENCES products (id),
    delta      INTEGER NOT NULL,
    reason     TEXT    NOT NULL CHECK (reason IN ('INITIAL', 'ADJUSTMENT')),
    created_at TEXT    NOT NULL
);
CREATE INDEX stock_adjustments_by_product ON stock_adjustments (product_id);

CREATE TABLE idempotency_keys (
    scope           TEXT    NOT NULL,
    idem_key        TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('IN_PROGRESS', 'DONE')),
    response_status INTEGER,
    response_body   TEXT,
    locked_until    TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
