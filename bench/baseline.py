"""The baseline the importer is compared with: one event per request to ``/api/send``, in a plain loop.

    python bench/baseline.py --url http://127.0.0.1:8765 --payloads payloads.ndjson --events 1000

This is what the official Node client (``@umami/node``) does: ``track()`` posts
one ``/api/send`` body and awaits the answer before the next. Here: one
keep-alive ``httpx.Client``, the exact elements the importer would batch (one
``/api/batch`` element is a whole ``/api/send`` body), sent one after another.
Prints one JSON line: ``{"events": N, "seconds": S, "events_per_s": R}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import islice
from pathlib import Path

import httpx

USER_AGENT = "Mozilla/5.0 umami-backfill-baseline/1.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the receiver")
    parser.add_argument("--payloads", type=Path, required=True, help="one /api/batch element per line")
    parser.add_argument("--events", type=int, required=True, help="how many to send")
    args = parser.parse_args(argv)
    with open(args.payloads, "rb") as fh:
        bodies = [line.rstrip(b"\n") for line in islice(fh, args.events)]
    url = args.url.rstrip("/") + "/api/send"
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
    with httpx.Client(headers=headers, timeout=60) as client:
        client.get(args.url.rstrip("/") + "/api/heartbeat")  # connect before the clock starts
        started = time.perf_counter()
        for body in bodies:
            response = client.post(url, content=body)
            if response.status_code != 200:
                print(f"HTTP {response.status_code}: {response.text[:200]}", file=sys.stderr)
                return 1
        seconds = time.perf_counter() - started
    print(json.dumps({"events": len(bodies), "seconds": seconds, "events_per_s": len(bodies) / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
