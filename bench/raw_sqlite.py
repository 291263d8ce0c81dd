#!/usr/bin/env python3
"""Baseline: the shopd order transaction straight on SQLite (durable: WAL, synchronous=FULL),
one writer, the way shopd writes. Usage: bench/raw_sqlite.py DB_PATH [seconds] [orders_per_commit]

The database must have shopd's schema (`shopd migrate --database-url sqlite://DB_PATH`).
orders_per_commit > 1 shows what group commit buys (each order in its own savepoint)."""
import random, sqlite3, sys, time, uuid
from datetime import datetime, timedelta, timezone

path = sys.argv[1]
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 15
per_commit = int(sys.argv[3]) if len(sys.argv) > 3 else 1

db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("PRAGMA foreign_keys=ON")
now = lambda: datetime.now(timezone.utc).isoformat()
if db.execute("SELECT COUNT(*) FROM products").fetchone()[0] == 0:
    t = now()
    db.execute("BEGIN")
    db.executemany("INSERT INTO users (name, token_hash, balance, balance_updated_at, created_at) VALUES (?, ?, 10000000, ?, ?)",
                   [(f"raw-{i}", f"hash-{i}", t, t) for i in range(10000)])
    db.executemany("INSERT INTO products (name, price, status, stock, created_at, updated_at) VALUES (?, 1000, 'ON_SALE', 100000000, ?, ?)",
                   [(f"raw product {i}", t, t) for i in range(1000)])
    db.execute("COMMIT")

def order(db):
    uid, pa = random.randint(1, 10000), random.randint(1, 999)
    t = now()
    for pid in (pa, pa + 1):
        db.execute("UPDATE products SET stock = stock - 1 WHERE id = ? AND status = 'ON_SALE' AND stock >= 1 RETURNING name, price", (pid,)).fetchall()
    oid = db.execute("INSERT INTO orders (user_id, status, from_cart, subtotal, discount, total, expires_at, created_at, updated_at) "
                     "VALUES (?, 'PENDING', 0, 2000, 0, 2000, ?, ?, ?) RETURNING id",
                     (uid, (datetime.now(timezone.utc) + timedelta(minutes=15)).isoformat(), t, t)).fetchone()[0]
    for pid in (pa, pa + 1):
        db.execute("INSERT INTO order_lines (order_id, product_id, name, unit_price, quantity, line_total) VALUES (?, ?, 'p', 1000, 1, 1000)", (oid, pid))
    db.execute("INSERT INTO order_status_history (order_id, from_status, to_status, reason, created_at) VALUES (?, NULL, 'PENDING', 'PLACED', ?)", (oid, t))
    bal = db.execute("UPDATE users SET balance = balance - 2000, balance_updated_at = ? WHERE id = ? AND balance >= 2000 RETURNING balance", (t, uid)).fetchone()[0]
    db.execute("INSERT INTO balance_ledger (user_id, kind, amount, balance_after, order_id, created_at) VALUES (?, 'PAYMENT', -2000, ?, ?, ?)", (uid, bal, oid, t))
    db.execute("INSERT INTO payments (order_id, user_id, amount, status, created_at) VALUES (?, ?, 2000, 'SUCCEEDED', ?)", (oid, uid, t))
    db.execute("UPDATE orders SET status = 'PAID', paid_at = ?, updated_at = ? WHERE id = ? AND status = 'PENDING'", (t, t, oid))
    db.execute("INSERT INTO order_status_history (order_id, from_status, to_status, reason, created_at) VALUES (?, 'PENDING', 'PAID', 'PAYMENT_SUCCEEDED', ?)", (oid, t))
    db.execute("SELECT product_id, name, unit_price, quantity, line_total FROM order_lines WHERE order_id = ?", (oid,)).fetchall()
    db.execute("INSERT INTO outbox_events (id, event_type, aggregate_id, payload, status, attempts, next_attempt_at, created_at) "
               "VALUES (?, 'ORDER_PAID', ?, '{}', 'PENDING', 0, ?, ?)", (str(uuid.uuid4()), oid, t, t))

done, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    db.execute("BEGIN IMMEDIATE")
    for i in range(per_commit):
        db.execute(f"SAVEPOINT o{i}")
        order(db)
        db.execute(f"RELEASE o{i}")
    db.execute("COMMIT")
    done += per_commit
elapsed = time.monotonic() - start
print(f"raw sqlite: {done} orders in {elapsed:.1f}s = {done / elapsed:.0f} orders/s ({per_commit} per commit, synchronous=FULL)")
