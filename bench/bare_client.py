"""The floor's bare client in a process of its own (bench/subscriptions.py): signed POSTs to the subscriber, flat
out, at nice 10 as the dispatching process runs, beside flat-out ingest. Prints one JSON line: POSTs/s, the CPU per
POST of the client and of the subscriber (us). The body to POST comes on standard input.

    python -m bench.bare_client URL IN_FLIGHT SECONDS SUBSCRIBER_PID < BODY
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import psutil

from bench.subscriptions import bare_posts


def main() -> None:
    url, in_flight, seconds, subscriber = sys.argv[1:5]
    body = sys.stdin.buffer.read()
    os.nice(10)
    rate, client_us, sink_us = asyncio.run(
        bare_posts(
            url,
            body,
            int(in_flight),
            float(seconds),
            psutil.Process(int(subscriber)),
            signed=True,
        )
    )
    print(orjson.dumps({"posts_per_second": rate, "client_us": client_us, "sink_us": sink_us}).decode(), flush=True)


if __name__ == "__main__":
    main()
