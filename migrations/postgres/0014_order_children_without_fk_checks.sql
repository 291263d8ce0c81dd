-- PostgreSQL only (SQLite keeps these foreign keys; there is no SQLite 0014).
--
-- An order's lines, status history and payments are written by the same statement as the
-- order itself (the committer's flush, docs/architecture.md), with the id the committer took
-- for it. Their foreign keys to `orders` cost a row-lock check per child row (`SELECT 1 FROM
-- orders ... FOR KEY SHARE`, which also writes a lock into the new order's tuple): five of the
-- ten checks of a paid order, and 15 % of PostgreSQL's write throughput here (issue #10,
-- docs/benchmarks.md). What they guarded against is kept another way:
-- - an order is never deleted: the trigger below refuses it (shopd never deletes one), so a
--   child can only lose its order by being written with a wrong id;
-- - every test on SQLite runs the same statements with these foreign keys enforced, and the
--   SPEC §9 invariant check run after every race test finds an orphan on both backends.
ALTER TABLE order_lines DROP CONSTRAINT order_lines_order_id_fkey;
ALTER TABLE order_status_history DROP CONSTRAINT order_status_history_order_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_order_id_fkey;

CREATE FUNCTION orders_are_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'orders are never deleted (order %)', OLD.id
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER orders_are_never_deleted BEFORE DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_are_never_deleted();
