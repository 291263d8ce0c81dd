-- PostgreSQL only (SQLite's rowid tables pay no second index for an integer primary key).
--
-- Fewer index entries per order (issue #10, docs/benchmarks.md). A paid order wrote 18 index
-- entries, and inserting them was a third of the committer's PostgreSQL backend time — the
-- one serial resource of a hot-row sale.
--
-- Three tables had a primary key on their id alone beside an index led by their parent, which
-- every read of them uses (`WHERE order_id = $1 ORDER BY id`, `WHERE user_id = $1 … ORDER BY
-- id DESC`); nothing looks a row up by its id alone. The parent-led index becomes the primary
-- key and the id-only one goes: 4 entries fewer per order. Ids still come from each table's
-- identity sequence, one value per row, so they stay unique.
ALTER TABLE order_status_history
    DROP CONSTRAINT order_status_history_pkey,
    ADD PRIMARY KEY (order_id, id);
DROP INDEX order_status_history_by_order;

ALTER TABLE payments
    DROP CONSTRAINT payments_pkey,
    ADD PRIMARY KEY (order_id, id);
DROP INDEX payments_by_order;

ALTER TABLE balance_ledger
    DROP CONSTRAINT balance_ledger_pkey,
    ADD PRIMARY KEY (user_id, id);
DROP INDEX balance_ledger_by_user;

-- Every order and charge rewrites its member's row (the balance). With full pages the new
-- version went to another page, and each of users' indexes — one a trigram GIN over the name —
-- got a new entry (a quarter of the order updates in a hot-row sale, 5 % of the backend's time
-- in GIN alone). Room left on each page keeps the update on the page (a HOT update: no index
-- entry at all). Applies to pages written from now on; `VACUUM FULL users` rewrites old ones.
ALTER TABLE users SET (fillfactor = 85);
