-- PostgreSQL only (SQLite keeps these foreign keys; there is no SQLite 0015).
--
-- The rows an order writes for its member and products (the order, its lines, its payment, the
-- member's ledger entry) are written by the committer's flush, in a batch that has already
-- locked that member and those products (`SELECT … FOR NO KEY UPDATE`, docs/architecture.md).
-- A foreign-key check then cost a trigger per row running its own query and locking the
-- parent row again: 20 % of the committer's PostgreSQL time; without them +10 % hot-row and
-- +13 % uniform orders/s (issue #10, docs/benchmarks.md). What they guarded against is kept
-- another way:
-- - members and products are never deleted and never change id: the triggers below refuse it
--   (shopd never does either);
-- - the flush itself counts the member and product ids of its new rows that have no row
--   (one index probe each, no lock, no trigger) and fails its batch if any is missing — what
--   the foreign key did at that statement;
-- - every test on SQLite runs the same statements with these foreign keys enforced, and the
--   SPEC §9 invariant check run after every race test finds a row naming an unknown member or
--   product on both backends.
ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey;
ALTER TABLE order_lines DROP CONSTRAINT order_lines_product_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_user_id_fkey;
ALTER TABLE balance_ledger DROP CONSTRAINT balance_ledger_user_id_fkey;

CREATE FUNCTION rows_are_never_deleted_nor_renumbered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted and never change id (id %)', TG_TABLE_NAME, OLD.id
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER users_are_never_deleted BEFORE DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION rows_are_never_deleted_nor_renumbered();
CREATE TRIGGER users_never_change_id BEFORE UPDATE OF id ON users
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION rows_are_never_deleted_nor_renumbered();
CREATE TRIGGER products_are_never_deleted BEFORE DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION rows_are_never_deleted_nor_renumbered();
CREATE TRIGGER products_never_change_id BEFORE UPDATE OF id ON products
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION rows_are_never_deleted_nor_renumbered();
