-- Operator console (SPEC §16): the dashboard's figures, each read from an index.

-- `GET /admin/stats/sales`: paid orders per hour over a range of `paid_at`. Covering (the
-- total rides along), so the hourly sums read the index alone; only paid orders have a
-- `paid_at`, so unpaid ones take no room.
CREATE INDEX orders_by_paid_at ON orders (paid_at, total) WHERE paid_at IS NOT NULL;

-- `GET /admin/stats/outbox`: the DEAD count (PENDING is counted on `outbox_events_due`).
CREATE INDEX outbox_events_dead ON outbox_events (id) WHERE status = 'DEAD';
