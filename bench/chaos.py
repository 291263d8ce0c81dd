#!/usr/bin/env python3
"""Crash-recovery chaos run (SPEC §7, §9): load with idempotency keys while shopd instances are
SIGKILLed and restarted, then prove from the database that nothing was lost or doubled.

Started by bench/chaos.sh (which builds the binary); see docs/hardening.md.

  - Clients send charges and orders (paid at once or not), each with its own Idempotency-Key,
    to a random live instance, and log every attempt. An attempt that gets no answer
    (connection refused or reset, timeout) or a retryable one (503, 409 IDEMPOTENCY_IN_PROGRESS)
    is retried with the same key and body until it is answered.
  - A killer SIGKILLs an instance every `duration / kills` seconds (in turn, with several
    instances) and restarts it on the same port and database.
  - Afterwards, with every instance up: every request still unanswered is retried with its key;
    every answered request is sent once more and must be replayed with the same status and the
    same order id / balance; then the database must show each answered effect exactly once
    (orders = the order ids answered, CHARGE ledger rows = the charges answered 200, one
    finished idempotency key per request) and the SPEC §9 invariants.

Exit status 0 only if every check passed. A JSON summary goes to stdout's last line.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ADMIN = "chaos-admin-token"
RETRYABLE = {503}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Instance:
    def __init__(self, n, binary, db_url, workdir, extra):
        self.n = n
        self.binary = binary
        self.db_url = db_url
        self.port = free_port()
        self.log = open(os.path.join(workdir, f"shopd-{n}.log"), "ab")
        self.extra = extra
        self.proc = None
        self.up = threading.Event()
        self.starts = 0

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--database-url", self.db_url, "--admin-token", ADMIN, *self.extra],
            stdout=self.log, stderr=self.log, env={**os.environ, "RUST_LOG": "warn"})
        self.starts += 1
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"instance {self.n} exited at start: {self.proc.returncode}")
            try:
                status, _, _ = call(self.port, "GET", "/readyz", timeout=1)
                if status == 200:
                    self.up.set()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"instance {self.n} not ready on port {self.port}")

    def kill(self):
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def call(port, method, path, token=None, body=None, key=None, timeout=10):
    """One HTTP request; returns (status, json body, replayed) or raises OSError."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if key:
            headers["idempotency-key"] = key
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["content-type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        replayed = r.getheader("idempotent-replayed") is not None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return r.status, parsed, replayed
    except http.client.HTTPException as e:
        raise OSError(str(e)) from e
    finally:
        conn.close()


class Request:
    """One logical request: its key, what it is, and its first answer."""

    def __init__(self, key, kind, member, path, body):
        self.key, self.kind, self.member, self.path, self.body = key, kind, member, path, body
        self.attempts = 0
        self.unanswered_attempts = 0
        self.answer = None  # (status, body)

    def effect(self):
        """What the answer says happened: an order id, a charge, or nothing."""
        status, body = self.answer
        if self.kind == "order":
            if status == 201:
                return ("order", body["id"])
            if status == 402:
                return ("order", body["details"]["orderId"])
            return None
        return ("charge", self.body["amount"]) if status == 200 else None


class Run:
    def __init__(self, args, instances, members):
        self.args = args
        self.instances = instances
        self.members = members  # [(id, token)]
        self.products = []
        self.requests = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.kills = 0
        self.kill_times = []

    def live(self):
        return [i for i in self.instances if i.up.is_set()]

    def attempt(self, req, token, timeout=5):
        """Send once to a live instance; True once answered (final)."""
        live = self.live()
        if not live:
            time.sleep(0.02)
            req.attempts += 1
            req.unanswered_attempts += 1
            return False
        inst = random.choice(live)
        req.attempts += 1
        try:
            status, body, _ = call(inst.port, "POST", req.path, token, req.body, req.key, timeout)
        except OSError:
            req.unanswered_attempts += 1
            return False
        if status in RETRYABLE or (status == 409 and isinstance(body, dict)
                                   and body.get("code") == "IDEMPOTENCY_IN_PROGRESS"):
            req.unanswered_attempts += 1
            return False
        if status >= 500:
            raise RuntimeError(f"{req.key}: unexpected {status} {body}")
        req.answer = (status, body)
        return True

    def client(self, c):
        rng = random.Random(self.args.seed * 1000 + c)
        seq = 0
        while not self.stop.is_set():
            seq += 1
            m = rng.randrange(len(self.members))
            member_id, token = self.members[m]
            key = f"chaos-{c}-{seq}"
            if rng.random() < 0.3:
                req = Request(key, "charge", m, f"/users/{member_id}/balance/charge",
                              {"amount": rng.randint(1, 5_000)})
            else:
                lines = rng.sample(self.products, rng.randint(1, 2))
                req = Request(key, "order", m, "/orders", {
                    "items": [{"productId": p, "quantity": rng.randint(1, 3)} for p in lines],
                    "pay": rng.random() < 0.8,
                })
            with self.lock:
                self.requests.append(req)
            # Like a real client: retry with the same key until answered (or the load ends;
            # the rest are retried after the chaos).
            while not self.stop.is_set() and not self.attempt(req, token):
                time.sleep(0.05)

    def killer(self):
        try:
            self.kill_in_turn()
        except Exception as e:  # a restart that failed: reported as missing kills
            print(f"killer stopped: {e}", file=sys.stderr)

    def kill_in_turn(self):
        interval = self.args.duration / self.args.kills
        for k in range(self.args.kills):
            if self.stop.wait(interval * 0.5):
                return
            victim = self.instances[k % len(self.instances)]
            victim.kill()
            self.kills += 1
            self.kill_times.append(time.time())
            victim.start()
            if self.stop.wait(interval * 0.5):
                return


def setup(instances, n_members, n_products):
    port = instances[0].port
    members = []
    for i in range(n_members):
        status, body, _ = call(port, "POST", "/users", body={"name": f"chaos-{i}"})
        assert status == 201, body
        members.append((body["id"], body["token"]))
    products = []
    for i in range(n_products):
        status, body, _ = call(port, "POST", "/admin/products", ADMIN,
                               {"name": f"chaos-{i}", "price": 100 * (i + 1), "stock": 10_000_000})
        assert status == 201, body
        products.append(body["id"])
    return members, products


class Database:
    def __init__(self, backend, url, sqlite_path):
        self.backend, self.url, self.sqlite_path = backend, url, sqlite_path

    def rows(self, sql):
        if self.backend == "sqlite":
            con = sqlite3.connect(self.sqlite_path)
            try:
                return [tuple(r) for r in con.execute(sql).fetchall()]
            finally:
                con.close()
        out = subprocess.run(["psql", self.url, "-AtX", "-F", "\t", "-c", sql],
                             check=True, capture_output=True, text=True).stdout
        return [tuple(int(v) if v.lstrip("-").isdigit() else v for v in line.split("\t"))
                for line in out.splitlines() if line]

    def one(self, sql):
        return self.rows(sql)[0][0]


def check(run, db, failures):
    def expect(cond, what):
        if not cond:
            failures.append(what)
            print("FAILED:", what, file=sys.stderr)

    reqs = run.requests
    # Exactly once: the orders the answers name are exactly the orders in the database.
    answered_orders = [r.effect()[1] for r in reqs if r.kind == "order" and r.effect()]
    db_orders = [row[0] for row in db.rows("SELECT id FROM orders ORDER BY id")]
    expect(len(answered_orders) == len(set(answered_orders)),
           "two requests answered with the same order id")
    expect(sorted(answered_orders) == db_orders,
           f"orders in the database ({len(db_orders)}) = orders answered ({len(answered_orders)})")
    # Each charge answered 200 is one CHARGE ledger row of its amount; nothing else charged.
    per_member = {}
    for r in reqs:
        e = r.effect()
        if e and e[0] == "charge":
            n, total = per_member.get(run.members[r.member][0], (0, 0))
            per_member[run.members[r.member][0]] = (n + 1, total + e[1])
    db_charges = {row[0]: (row[1], row[2]) for row in db.rows(
        "SELECT user_id, COUNT(*), CAST(SUM(amount) AS BIGINT) FROM balance_ledger "
        "WHERE kind = 'CHARGE' GROUP BY user_id")}
    expect(per_member == db_charges, f"CHARGE ledger rows per member = charges answered 200 "
           f"({sum(n for n, _ in per_member.values())} vs {sum(n for n, _ in db_charges.values())})")
    # One finished key per request (rejections are stored too), none left in progress.
    keys = db.one("SELECT COUNT(*) FROM idempotency_keys")
    expect(keys == len(reqs), f"idempotency keys {keys} = requests {len(reqs)}")
    expect(db.one("SELECT COUNT(*) FROM idempotency_keys WHERE status <> 'DONE'") == 0,
           "no idempotency key left unfinished")

    # SPEC §9.1: stock never below 0; supplied = stock + held by live orders.
    bad_stock = db.rows("""
        SELECT p.id FROM products p WHERE p.stock < 0 OR
          CAST(COALESCE((SELECT SUM(a.delta) FROM stock_adjustments a WHERE a.product_id = p.id), 0) AS BIGINT)
          <> p.stock + CAST(COALESCE((SELECT SUM(l.quantity) FROM order_lines l JOIN orders o ON o.id = l.order_id
                                      WHERE l.product_id = p.id AND o.status <> 'CANCELLED' AND o.status <> 'EXPIRED'), 0) AS BIGINT)""")
    expect(not bad_stock, f"§9.1 stock conservation fails for products {bad_stock}")
    # §9.2: 0 <= balance <= max; balance = its ledger; each balance_after the running sum.
    bad_balance = db.rows("""
        SELECT u.id FROM users u WHERE u.balance < 0 OR u.balance > 10000000 OR
          u.balance <> CAST(COALESCE((SELECT SUM(l.amount) FROM balance_ledger l WHERE l.user_id = u.id), 0) AS BIGINT)""")
    expect(not bad_balance, f"§9.2 balance vs ledger fails for users {bad_balance}")
    bad_running = db.rows("""
        SELECT l.id FROM balance_ledger l WHERE l.balance_after <>
          CAST((SELECT SUM(m.amount) FROM balance_ledger m WHERE m.user_id = l.user_id AND m.id <= l.id) AS BIGINT)""")
    expect(not bad_running, f"§9.2 running balance fails at ledger rows {bad_running[:10]}")
    # §9.4: a paid order has one SUCCEEDED payment of its total and one ORDER_PAID event;
    # an unpaid one has neither; payments = PAYMENT ledger entries.
    # (Counted per order once, then joined: correlated subqueries per order read the outbox
    # once per order on SQLite, whose planner cannot use the partial unique index there.)
    bad_paid = db.rows("""
        WITH pay AS (SELECT order_id, COUNT(*) AS n, CAST(SUM(amount) AS BIGINT) AS amount
                     FROM payments WHERE status = 'SUCCEEDED' GROUP BY order_id),
             ev AS (SELECT aggregate_id, COUNT(*) AS n FROM outbox_events
                    WHERE event_type = 'ORDER_PAID' GROUP BY aggregate_id)
        SELECT o.id FROM orders o
          LEFT JOIN pay ON pay.order_id = o.id
          LEFT JOIN ev ON ev.aggregate_id = o.id
        WHERE (o.status IN ('PENDING', 'CANCELLED', 'EXPIRED')
               AND (COALESCE(pay.n, 0) <> 0 OR COALESCE(ev.n, 0) <> 0))
           OR (o.status NOT IN ('PENDING', 'CANCELLED', 'EXPIRED')
               AND (COALESCE(pay.n, 0) <> 1 OR pay.amount <> o.total OR COALESCE(ev.n, 0) <> 1))""")
    expect(not bad_paid, f"§9.4 payments/events fail for orders {bad_paid[:10]}")
    payments = db.one("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM payments WHERE status = 'SUCCEEDED'")
    debits = db.one("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM balance_ledger WHERE kind = 'PAYMENT'")
    expect(payments == -debits, f"§9.2/§9.4 payments {payments} = -PAYMENT ledger {debits}")
    # Answers agree with the stored orders: a 201 paid order is PAID; a 402 is PENDING.
    status_of = dict(db.rows("SELECT id, status FROM orders"))
    wrong = [r.key for r in reqs if r.kind == "order" and r.answer[0] == 201
             and status_of.get(r.answer[1]["id"]) != r.answer[1]["status"]]
    expect(not wrong, f"answered order status differs in the database: {wrong[:10]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--instances", type=int, default=None, help="default 1 (sqlite), 3 (postgres)")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--products", type=int, default=5)
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args()
    random.seed(args.seed)
    n_instances = args.instances or (1 if args.backend == "sqlite" else 3)

    work = tempfile.mkdtemp(prefix="shopd-chaos-")
    pg_db = None
    if args.backend == "sqlite":
        sqlite_path = os.path.join(work, "shopd.db")
        url = f"sqlite://{sqlite_path}"
    else:
        sqlite_path = None
        pg_db = f"shopd_chaos_{os.getpid()}"
        subprocess.run(["psql", args.pg_url, "-qXc", f"CREATE DATABASE {pg_db}"], check=True)
        url = args.pg_url.rsplit("/", 1)[0] + "/" + pg_db
    # Batches of a few commands, so kills land inside some of them.
    extra = ["--commit-wait", "2ms"]
    instances = [Instance(n, args.bin, url, work, extra) for n in range(n_instances)]
    failures = []
    started = time.time()
    try:
        # One at a time: the first migrates.
        for inst in instances:
            inst.start()
        members, products = setup(instances, args.members, args.products)
        run = Run(args, instances, members)
        run.products = products
        # Every member gets balance first, through keyed charges logged like the rest.
        for m, (member_id, token) in enumerate(members):
            req = Request(f"chaos-setup-{m}", "charge", m, f"/users/{member_id}/balance/charge",
                          {"amount": 500_000})
            run.requests.append(req)
            while not run.attempt(req, token):
                time.sleep(0.05)

        threads = [threading.Thread(target=run.client, args=(c,)) for c in range(args.clients)]
        killer = threading.Thread(target=run.killer)
        load_started = time.time()
        for t in threads:
            t.start()
        killer.start()
        time.sleep(args.duration)
        run.stop.set()
        killer.join()
        for t in threads:
            t.join()
        load_seconds = time.time() - load_started
        if run.kills != args.kills:
            failures.append(f"only {run.kills} of {args.kills} kills happened")
        for inst in instances:
            if not inst.up.is_set():
                inst.start()

        unanswered = [r for r in run.requests if r.answer is None]
        ever_unanswered = sum(1 for r in run.requests if r.unanswered_attempts)
        answered_during = len(run.requests) - len(unanswered)
        # Retry the unanswered with their keys, now that every instance is up.
        for r in unanswered:
            token = members[r.member][1]
            for _ in range(100):
                if run.attempt(r, token, timeout=10):
                    break
                time.sleep(0.05)
            else:
                failures.append(f"{r.key} never answered")
        # Every answered request again: the same answer, replayed, nothing done twice.
        mismatched = 0
        for r in run.requests:
            if r.answer is None:
                continue
            inst = random.choice(instances)
            status, body, replayed = call(inst.port, "POST", r.path, members[r.member][1],
                                          r.body, r.key)
            same = status == r.answer[0] and replayed
            if same and r.kind == "order" and r.effect():
                again = body["id"] if status == 201 else body["details"]["orderId"]
                same = again == r.effect()[1]
            if same and r.kind == "charge" and status == 200:
                same = body["balance"] == r.answer[1]["balance"]
            if not same:
                mismatched += 1
                if mismatched <= 5:
                    print(f"FAILED replay {r.key}: {r.answer} then {status} {body} "
                          f"replayed={replayed}", file=sys.stderr)
        if mismatched:
            failures.append(f"{mismatched} retries were not replays of the first answer")

        db = Database(args.backend, url, sqlite_path)
        check(run, db, failures)
        orders = db.one("SELECT COUNT(*) FROM orders")
        paid = db.one("SELECT COUNT(*) FROM orders WHERE status = 'PAID'")
        summary = {
            "backend": args.backend,
            "instances": n_instances,
            "clients": args.clients,
            "load_seconds": round(load_seconds, 1),
            "kills": run.kills,
            "restarts": sum(i.starts for i in instances) - n_instances,
            "requests": len(run.requests),
            "attempts": sum(r.attempts for r in run.requests),
            "answered_during_load": answered_during,
            "requests_that_lost_an_attempt": ever_unanswered,
            "unanswered_at_end_of_load": len(unanswered),
            "orders": orders,
            "paid_orders": paid,
            "charges": sum(1 for r in run.requests if r.effect() and r.effect()[0] == "charge"),
            "replays_checked": sum(1 for r in run.requests if r.answer is not None),
            "failures": failures,
            "seconds": round(time.time() - started, 1),
        }
        print(json.dumps(summary))
        return 1 if failures else 0
    finally:
        for inst in instances:
            inst.stop()
        if pg_db:
            subprocess.run(["psql", args.pg_url, "-qXc", f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)"])
        if not failures and os.environ.get("CHAOS_KEEP") != "1":
            subprocess.run(["rm", "-rf", work])
        else:
            print(f"logs and database kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
