-- `orders_paid_at (paid_at) WHERE paid_at IS NOT NULL` (0009) is a prefix of
-- `orders_by_paid_at (paid_at, total) WHERE paid_at IS NOT NULL` (0010), with the same
-- predicate: every query that used it (the ranking job's window scans) is served by the
-- wider one. One index fewer to maintain for every paid order (issue #10).
DROP INDEX orders_paid_at;
