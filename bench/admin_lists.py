#!/usr/bin/env python3
"""Time back-office list pages over HTTP (one keep-alive connection, sequential requests).

    python3 bench/admin_lists.py URL ADMIN_TOKEN ORDERS MEMBERS [REQUESTS]

Driven by bench/admin-lists.sh after it seeds the database through SQL; ONLY=members (a
scenario name prefix) runs a subset. Each scenario draws its
parameters at random per request (member, day, cursor) and reports p50 / p99 / max in ms of the
full HTTP round trip, and fails (exit 2) on any non-200.
"""
import http.client
import json
import os
import random
import sys
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

url, token, orders, members = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
requests = int(sys.argv[5]) if len(sys.argv) > 5 else 300
parsed = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(parsed.hostname, parsed.port)
headers = {"authorization": f"Bearer {token}"}
start = datetime(2026, 1, 1, tzinfo=timezone.utc)
span_days = max(1, orders * 30 // 86400)
rng = random.Random(15)


def day():
    d = start + timedelta(days=rng.randrange(span_days))
    return d.strftime("%Y-%m-%dT%H:%M:%SZ"), (d + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def get(path):
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        print(f"{path} -> {response.status} {body[:200]!r}", file=sys.stderr)
        sys.exit(2)
    return json.loads(body)


def window(status=None):
    f, t = day()
    q = f"/admin/orders?from={f}&to={t}"
    return q + (f"&status={status}" if status else "")


scenarios = [
    ("orders, first page", lambda: "/admin/orders"),
    ("orders, limit=100", lambda: "/admin/orders?limit=100"),
    ("orders, deep page (cursor = random order)", lambda: f"/admin/orders?cursor={rng.randrange(1, orders)}"),
    ("orders, status=PAID", lambda: "/admin/orders?status=PAID"),
    ("orders, status=EXPIRED, deep", lambda: f"/admin/orders?status=EXPIRED&cursor={rng.randrange(1, orders // 100) * 100 + 97}"),
    ("orders, userId=random", lambda: f"/admin/orders?userId={rng.randrange(1, members + 1)}"),
    ("orders, userId + status=PAID", lambda: f"/admin/orders?userId={rng.randrange(1, members + 1)}&status=PAID"),
    ("orders, from/to one random day", lambda: window()),
    ("orders, from/to one day + status=PENDING", lambda: window("PENDING")),
    ("members, first page", lambda: "/admin/users"),
    ("members, q=kim (1 in 5 match)", lambda: "/admin/users?q=kim"),
    ("members, q=<random member number> (rare)", lambda: f"/admin/users?q=member%20{rng.randrange(1, members + 1)}"),
    ("members, q=zzz (no match)", lambda: "/admin/users?q=zzz"),
    ("members, q=zz (2 chars, no match: whole table)", lambda: "/admin/users?q=zz"),
]
# ONLY=members: just the scenarios whose name starts with it.
only = os.environ.get("ONLY")
if only:
    scenarios = [s for s in scenarios if s[0].startswith(only)]

for _ in range(20):  # warm up the connection and the caches
    get("/admin/orders")
print(f"{'scenario':48} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  items")
for name, path in scenarios:
    times, items = [], 0
    for _ in range(requests):
        p = path()
        t = time.perf_counter()
        page = get(p)
        times.append((time.perf_counter() - t) * 1000)
        items += len(page["items"])
    times.sort()
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{name:48} {p50:8.2f} {p99:8.2f} {times[-1]:8.2f}  {items / requests:.1f}/page")
