-- `orders_by_created (created_at, id)` (0007) served only the back office's unfiltered order
-- list. That page now merges the orders of each status, read backwards from
-- `orders_by_status_created (status, created_at, id)` (`store::admin::ALL_STATUSES_PAGE_*`):
-- at most `limit` entries of each status a page, whatever the table's size. Every order wrote
-- an entry here; one index fewer on the write path (issue #10, docs/benchmarks.md).
DROP INDEX orders_by_created;
