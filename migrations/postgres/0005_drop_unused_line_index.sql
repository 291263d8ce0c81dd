-- No query reads order lines by product (best-sellers join lines by order id, through the
-- primary key), and each paid order's lines touched a random page of this index: dropped to
-- keep the write path to the pages an order really needs (group commit, SPEC §13).
DROP INDEX IF EXISTS order_lines_by_product;
