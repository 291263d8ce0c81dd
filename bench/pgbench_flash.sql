-- The flash-sale order transaction as raw SQL: one line, every order on the hot product 1,
-- pay at once. One order per commit serializes on that row's lock: the raw hot-row baseline.
\set uid random(1, 10000)
\set pa 1
BEGIN;
UPDATE products SET stock = stock - 1 WHERE id = :pa AND status = 'ON_SALE' AND stock >= 1 RETURNING name, price;
INSERT INTO orders (user_id, status, from_cart, subtotal, discount, total, expires_at, created_at, updated_at)
  VALUES (:uid, 'PENDING', false, 1000, 0, 1000, now() + interval '15 minutes', now(), now()) RETURNING id AS order_id \gset
INSERT INTO order_lines (order_id, product_id, name, unit_price, quantity, line_total) VALUES (:order_id, :pa, 'p', 1000, 1, 1000);
INSERT INTO order_status_history (order_id, from_status, to_status, reason, created_at) VALUES (:order_id, NULL, 'PENDING', 'PLACED', now());
UPDATE users SET balance = balance - 1000, balance_updated_at = now() WHERE id = :uid AND balance >= 1000 RETURNING balance;
INSERT INTO balance_ledger (user_id, kind, amount, balance_after, order_id, created_at) VALUES (:uid, 'PAYMENT', -1000, 0, :order_id, now());
INSERT INTO payments (order_id, user_id, amount, status, created_at) VALUES (:order_id, :uid, 1000, 'SUCCEEDED', now());
UPDATE orders SET status = 'PAID', paid_at = now(), updated_at = now() WHERE id = :order_id AND status = 'PENDING';
INSERT INTO order_status_history (order_id, from_status, to_status, reason, created_at) VALUES (:order_id, 'PENDING', 'PAID', 'PAYMENT_SUCCEEDED', now());
SELECT product_id, name, unit_price, quantity, line_total FROM order_lines WHERE order_id = :order_id;
INSERT INTO outbox_events (id, event_type, aggregate_id, payload, status, attempts, next_attempt_at, created_at)
  VALUES (gen_random_uuid()::text, 'ORDER_PAID', :order_id, '{}', 'PENDING', 0, now(), now());
END;
