-- Coupon campaigns and the coupons issued to members.
CREATE TABLE coupons (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL,
    discount_type    TEXT    NOT NULL CHECK (discount_type IN ('FIXED', 'PERCENT')),
    discount_value   INTEGER NOT NULL CHECK (discount_value > 0),
    max_discount     INTEGER CHECK (max_discount > 0),
    min_order_amount INTEGER NOT NULL CHECK (min_order_amount >= 0),
    total_quantity   INTEGER NOT NULL CHECK (total_quantity > 0),
    -- Claimed so far; the conditional increment makes "exactly N" hold under any race.
    issued_quantity  INTEGER NOT NULL DEFAULT 0 CHECK (issued_quantity >= 0 AND issued_quantity <= total_quantity),
    issue_starts_at  TEXT    NOT NULL,
    issue_ends_at    TEXT    NOT NULL,
    valid_days       INTEGER NOT NULL CHECK (valid_days > 0),
    created_at       TEXT    NOT NULL,
    CHECK (issue_ends_at > issue_starts_at)
);
CREATE INDEX coupons_by_window ON coupons (issue_ends_at, issue_starts_at);

-- status: AVAILABLE (not taken) or USED (taken by an order). EXPIRED is derived from expires_at.
CREATE TABLE user_coupons (
    id         INTEGER PRIMARY KEY,
    coupon_id  INTEGER NOT NULL REFERENCES coupons (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    status     TEXT    NOT NULL CHECK (status IN ('AVAILABLE', 'USED')),
    issued_at  TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT,
    order_id   INTEGER,
    UNIQUE (coupon_id, user_id)
);
CREATE INDEX user_coupons_by_user ON user_coupons (user_id, id);
