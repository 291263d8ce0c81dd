-- Back office (SPEC §15): list indexes and closable coupon campaigns.

-- `GET /admin/orders` pages newest first by (created_at, id); each filter has its own index
-- so every page is one index range scan: no filter, ?status, ?userId (from/to bound the
-- trailing created_at column of each).
CREATE INDEX orders_by_created ON orders (created_at, id);
CREATE INDEX orders_by_status_created ON orders (status, created_at, id);
CREATE INDEX orders_by_user_created ON orders (user_id, created_at, id);

-- `POST /admin/coupons/{id}/close`: no more issuance; issued coupons stay valid.
ALTER TABLE coupons ADD COLUMN closed_at TIMESTAMPTZ;
