-- Back office (SPEC §15): list indexes and closable coupon campaigns.

-- `GET /admin/orders` pages newest first by (created_at, id); each filter has its own index
-- so every page is one index range scan: no filter, ?status, ?userId (from/to bound the
-- trailing created_at column of each).
CREATE INDEX orders_by_created ON orders (created_at, id);
CREATE INDEX orders_by_status_created ON orders (status, created_at, id);
CREATE INDEX orders_by_user_created ON orders (user_id, created_at, id);

-- `POST /admin/coupons/{id}/close`: no more issuance; issued coupons stay valid.
ALTER TABLE coupons ADD COLUMN closed_at TIMESTAMPTZ;

-- `GET /admin/users?q`: the name with ASCII letters lowered (written by the application at
-- sign-up, `str::to_ascii_lowercase`), so the search is a plain, case-sensitive `LIKE` that
-- answers the same on both backends. Folding per row at query time (`translate`/`lower` in
-- PostgreSQL) cost 5-15x the scan itself. Nullable: rows written by other tools are just not
-- found by the search.
ALTER TABLE users ADD COLUMN name_folded TEXT;
UPDATE users SET name_folded = translate(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
