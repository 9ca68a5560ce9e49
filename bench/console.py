"""Console benchmark: how long each console page takes to load with 1M messages stored.

    python -m bench.console [--messages 1000000] [--requests 200]

Seeds a fresh database with N messages (3 history rows each, a stale report on every fifth: 3.2 rows per
message), in 91 campaigns (one of 10% of all messages, the rest of 1% each), sent to N/5 recipients (5 messages
each); 10,000 quarantined payloads; 20 subscriptions with 10,000 deliveries each (2% failed, one subscription
with no failure at all: its "latest failures" finds none and reads all its deliveries). Then signs in to a
`dlr-tracker serve` process as an admin through the login form and requests each page `--requests` times, one
after another over one keep-alive connection, each time a different message, recipient or campaign, and prints
p50/p99/max per page. The time is the client's, over loopback: the server's time plus a loopback round trip.
Goal: every page under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import time
from collections.abc import Callable

import asyncpg
import httpx2

from bench.harness import Service, database_server, fresh_database, table

ADMIN_KEY = "bench-admin-key"
CAMPAIGNS = 90  # plus camp-big
SUBSCRIPTIONS = 20
DELIVERIES = 10_000  # per subscription
QUARANTINED = 10_000

MESSAGES = """
WITH made AS (
    INSERT INTO messages (id, status, partial, segment_statuses, segment_updated_at, recipient, campaign, error,
                          registered_at, sent_at, expires_at, final_at, created_at, updated_at, version,
                          delivery_seconds)
    SELECT id, status, false, ARRAY[status], ARRAY[t + took], recipient, campaign,
           CASE WHEN status = 'UNDELIV' THEN '011' END, t, t, t + interval '1 day',
           CASE WHEN status <> 'ACCEPTD' THEN t + took END, t, t + took, 3,
           CASE WHEN status = 'DELIVRD' THEN extract(epoch FROM took) END
    FROM (
        SELECT 'SM-' || lpad(g::text, 8, '0') AS id,
               (ARRAY['DELIVRD','DELIVRD','DELIVRD','DELIVRD','DELIVRD','DELIVRD','DELIVRD','UNDELIV','ACCEPTD',
                      'EXPIRED'])[g % 10 + 1] AS status,
               '+38050' || lpad((g % ($3::int / 5))::text, 7, '0') AS recipient,
               CASE WHEN g % 10 = 0 THEN 'camp-big' ELSE 'camp-' || lpad(((g / 10) % 90)::text, 2, '0') END AS campaign,
               now() - make_interval(secs => g % 80000) - interval '2 hours' AS t,
               make_interval(secs => exp(random() * 9)) AS took
        FROM generate_series($1::int, $2::int) g
    ) s
    RETURNING id, status, sent_at, updated_at
)
INSERT INTO history (message_id, status, raw_status, segment, event_time, received_at, source, applied, reason)
SELECT id, 'ACCEPTD', 'ACCEPTD', 1, sent_at + interval '1 second', sent_at + interval '1 second', 'generic', true,
       NULL FROM made
UNION ALL
SELECT id, 'ENQUEUD', 'ENQUEUD', 1, sent_at, sent_at + interval '2 seconds', 'generic', false, 'stale'
FROM made WHERE right(id, 1) IN ('0', '5')
UNION ALL
SELECT id, status, status, 1, updated_at, updated_at, CASE WHEN status = 'EXPIRED' THEN 'sweep' ELSE 'kannel' END,
       true, NULL FROM made WHERE status <> 'ACCEPTD'
UNION ALL
SELECT id, 'DELIVRD', 'DELIVRD', 1, updated_at, updated_at + interval '3 seconds', 'kannel', false, 'after_final'
FROM made WHERE status = 'UNDELIV'
"""
QUARANTINE = """
INSERT INTO quarantine (message_id, dialect, received_at, method, content_type, query, body, error)
SELECT NULL, (ARRAY['generic','kannel','smpp'])[g % 3 + 1], now() - make_interval(secs => g), 'POST',
       'application/json', ''::bytea,
       convert_to('{"id":"SM-' || g || '","status":"<script>alert(' || g || ')</script>","to":"+380500000000"}',
                  'UTF8'),
       '{"status": "unknown status"}'::jsonb
FROM generate_series(1, $1::int) g
"""
DELIVERIES_SQL = """
INSERT INTO deliveries (subscription_id, event_id, event_at, body, state, attempt_count, attempts, next_attempt_at)
SELECT $1::bigint, g::text || '-1', now() - make_interval(secs => $2::int - g), '{}'::bytea,
       CASE WHEN $3::bool AND g % 50 = 0 THEN 'failed' ELSE 'delivered' END, 1,
       jsonb_build_array(jsonb_build_object('at', now()::text, 'status',
           CASE WHEN $3::bool AND g % 50 = 0 THEN 500 ELSE 204 END, 'error', NULL, 'duration', 0.02)),
       NULL
FROM generate_series(1, $2::int) g
"""


async def seed(dsn: str, count: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        step = 100_000
        for start in range(0, count, step):
            await conn.execute(MESSAGES, start + 1, min(count, start + step), count)
            print(f"  {min(count, start + step):,} messages", flush=True)
        await conn.execute(QUARANTINE, QUARANTINED)
        for table_name in ("messages", "history", "quarantine"):
            await conn.execute(f"VACUUM ANALYZE {table_name}")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def seed_deliveries(dsn: str, ids: list[int]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for place, subscription_id in enumerate(ids):
            await conn.execute(DELIVERIES_SQL, subscription_id, DELIVERIES, place != 0)
        await conn.execute("VACUUM ANALYZE deliveries")
    finally:
        await conn.close()


def sign_in(client: httpx2.Client) -> None:
    form = client.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf, form
    answer = client.post("/console/login", data={"api_key": ADMIN_KEY, "csrf": csrf.group(1), "next": "/console/"})
    assert answer.status_code == 303, answer.text


def measure(client: httpx2.Client, paths: Callable[[int], str], requests: int, expect: int) -> list[float]:
    client.get(paths(0))  # warm: the first request of a page compiles its template
    took = []
    for i in range(requests):
        started = time.perf_counter()
        answer = client.get(paths(i))
        took.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == expect, (answer.url, answer.status_code, answer.headers.get("location"))
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    n = args.messages
    rng = random.Random(18)

    def message(i: int) -> str:
        return f"SM-{rng.randint(1, n):08d}"

    def recipient(i: int) -> str:
        return f"+38050{rng.randrange(n // 5):07d}"

    pages: list[tuple[str, Callable[[int], str], int]] = [
        ("sign-in form", lambda i: "/console/login", 200),
        ("search: message id (redirect)", lambda i: f"/console/?q={message(i)}", 303),
        ("search: recipient (5 messages)", lambda i: f"/console/?q=%2B{recipient(i)[1:]}", 200),
        ("message page (3.2 history rows)", lambda i: f"/console/messages/{message(i)}", 200),
        ("unknown message (404 page)", lambda i: f"/console/messages/NOPE-{i}", 404),
        (
            f"campaign page ({n // 100:,} messages, random of 90)",
            lambda i: f"/console/campaigns/camp-{rng.randrange(CAMPAIGNS):02d}",
            200,
        ),
        (f"campaign page ({n // 10:,} messages)", lambda i: "/console/campaigns/camp-big", 200),
        ("quarantine (20 of 10,000 payloads)", lambda i: "/console/quarantine", 200),
        ("quarantine, a dialect, an older page", lambda i: f"/console/quarantine?dialect=smpp&before={5000 + i}", 200),
        (f"subscriptions ({SUBSCRIPTIONS}, each 2x5 deliveries)", lambda i: "/console/subscriptions", 200),
    ]

    with database_server() as server:
        dsn = fresh_database(server)
        print(f"seeding {n:,} messages ...", flush=True)
        seeded = asyncio.run(seed(dsn, n))
        print(f"seeded in {seeded:.0f} s", flush=True)
        service = Service(
            {
                "DATABASE_URL": dsn,
                "DLR_API_KEYS": f"bench:{ADMIN_KEY}:admin",
                "DLR_SWEEP_INTERVAL": "86400",
                "DLR_SUBSCRIPTION_ALLOW_PRIVATE": "true",
            }
        )
        try:
            with httpx2.Client(base_url=service.url, timeout=30, follow_redirects=False) as client:
                ids = []
                for s in range(SUBSCRIPTIONS):
                    made = client.post(
                        "/subscriptions",
                        json={"url": f"http://127.0.0.1:9/hook-{s}", "description": f"subscriber {s}"},
                        headers={"authorization": f"Bearer {ADMIN_KEY}"},
                    )
                    ids.append(made.json()["data"]["id"])
                # No event is committed from here on: the dispatcher has nothing to send; the rows below are
                # the deliveries' history.
                asyncio.run(seed_deliveries(dsn, ids))
                sign_in(client)
                rows = []
                for name, paths, expect in pages:
                    took = measure(client, paths, args.requests, expect)
                    cuts = statistics.quantiles(took, n=100, method="inclusive")
                    rows.append([name, cuts[49], cuts[98], max(took)])
                    print(f"  {name}: p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms", flush=True)
        finally:
            service.stop()

    print()
    print(table(["page", "p50 ms", "p99 ms", "max ms"], rows))
    print(f"\n{n:,} messages, {args.requests} requests per page, one connection, 2 cores. Goal: under 200 ms.")


if __name__ == "__main__":
    main()
