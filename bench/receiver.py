"""A minimal, fast stand-in for Umami's collection API, for measuring the importer's ceiling.

    python bench/receiver.py --port 0 --latency-ms 300 --cpu 1

It answers, over HTTP/1.1 with keep-alive, on any number of connections:

- ``POST /api/batch``: ``{"size":N,"processed":N,"errors":0,"details":[],"cache":"x"}``
  where N is the number of elements of the JSON array in the body;
- ``POST /api/send``: ``{"cache":"x","sessionId":"...","visitId":"..."}``;
- ``GET /api/heartbeat`` (the importer's preflight): ``{"ok":true}``;
- ``GET /__stats``: what it received so far (requests, batch elements, sends).

It stores nothing and checks nothing beyond "the body is JSON of the right
shape" (a 400 otherwise, so a broken body shows in the benchmark instead of
passing silently). ``--latency-ms`` delays every /api/batch and /api/send
answer with ``asyncio.sleep``, so concurrent requests wait side by side, as
they do on a server that waits on its database.

Why it is fast enough: one asyncio loop, no framework. Per request it does a
``readuntil`` for the head, a ``readexactly`` for the body and one
``json.loads`` of the body (C code: about a microsecond per hundred bytes, so
a 200-element batch of ~110 KB costs about 1 ms). N is the length of the
parsed array: exact for any body, unlike counting ``{"type":`` substrings,
which a ``data`` object whose first key is ``type`` would also match. At the
importer's 20,000 events/s target that is ~100 requests/s, well under a tenth
of one core; ``/__stats`` reports the receiver's own CPU seconds so a
benchmark can show it was not the bottleneck.

``--capacity N`` serves at most N requests at once and queues the others, so
throughput stops growing at N in flight while latency keeps growing: a server
with a knee, for watching adaptive concurrency settle (``max_in_flight`` in
``/__stats``).

``--cpu N`` pins the process to that CPU (Linux ``sched_setaffinity``) so the
importer being measured keeps the other cores to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import time
import uuid

BATCH_OK = b'{"size":%d,"processed":%d,"errors":0,"details":[],"cache":"x"}'
SEND_OK = b'{"cache":"x","sessionId":"%s","visitId":"%s"}'
SESSION_ID = str(uuid.UUID(int=1)).encode()
VISIT_ID = str(uuid.UUID(int=2)).encode()
MAX_HEAD = 64 * 1024


class Receiver:
    def __init__(self, latency_ms: float = 0.0, capacity: int | None = None) -> None:
        self.latency = latency_ms / 1000.0
        #: ``--capacity``: requests served at once; the others queue (like Umami's one Node
        #: thread and its database pool), so past it more in flight only adds latency.
        self.capacity = capacity
        self._slots = asyncio.Semaphore(capacity) if capacity else None
        self.in_flight = 0
        self.max_in_flight = 0
        self._in_flight_s = 0.0  # integral of in_flight over time
        self._busy_s = 0.0  # time with a request in flight
        self._changed = time.monotonic()
        self.requests = 0
        self.batches = 0
        self.elements = 0
        self.sends = 0
        self.bad = 0
        self.connections = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.started = time.monotonic()

    def stats(self) -> dict[str, object]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "requests": self.requests,
            "batches": self.batches,
            "elements": self.elements,
            "sends": self.sends,
            "bad": self.bad,
            "connections": self.connections,
            "max_open_connections": self.max_open_connections,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "latency_ms": self.latency * 1000,
            "capacity": self.capacity,
            "max_in_flight": self.max_in_flight,
            "mean_in_flight": round(self._in_flight_s / self._busy_s, 2) if self._busy_s else 0.0,
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                method, path, length, close = _parse_head(head)
                body = await reader.readexactly(length) if length else b""
                status, answer = await self.answer(method, path, body)
                keep = not close
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                    % (
                        status,
                        _REASONS.get(status, b"Error"),
                        len(answer),
                        b"" if keep else b"Connection: close\r\n",
                    )
                    + answer
                )
                await writer.drain()
                if not keep:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            return  # a broken request or a client gone: drop the connection
        finally:
            self.open_connections -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def answer(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        self.requests += 1
        path = path.split(b"?", 1)[0]
        if method == b"POST" and path == b"/api/batch":
            try:
                elements = json.loads(body)
            except ValueError:
                elements = None
            if not isinstance(elements, list):
                self.bad += 1
                return 400, b'{"error":"the body is not a JSON array"}'
            n = len(elements)
            self.batches += 1
            self.elements += n
            await self._serve()
            return 200, BATCH_OK % (n, n)
        if method == b"POST" and path == b"/api/send":
            try:
                element = json.loads(body)
            except ValueError:
                element = None
            if not isinstance(element, dict) or "payload" not in element:
                self.bad += 1
                return 400, b'{"error":"the body is not a /api/send element"}'
            self.sends += 1
            await self._serve()
            return 200, SEND_OK % (SESSION_ID, VISIT_ID)
        if method in (b"GET", b"HEAD") and path == b"/api/heartbeat":
            return 200, b'{"ok":true}'
        if method == b"GET" and path == b"/__stats":
            return 200, json.dumps(self.stats()).encode()
        return 404, b'{"error":"not found"}'

    async def _serve(self) -> None:
        """The request's service time: ``latency`` in one of ``capacity`` slots (waiting for one)."""
        self._count_in_flight(+1)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._slots is None:
                if self.latency:
                    await asyncio.sleep(self.latency)
                return
            async with self._slots:
                if self.latency:
                    await asyncio.sleep(self.latency)
        finally:
            self._count_in_flight(-1)

    def _count_in_flight(self, step: int) -> None:
        """Time-weighted in-flight count: its mean while busy is what a client kept in flight."""
        now = time.monotonic()
        if self.in_flight:
            self._in_flight_s += self.in_flight * (now - self._changed)
            self._busy_s += now - self._changed
        self._changed = now
        self.in_flight += step


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}


def _parse_head(head: bytes) -> tuple[bytes, bytes, int, bool]:
    """Method, path, Content-Length and whether the client asked to close (HTTP/1.0 or Connection: close)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    method, path = parts[0], parts[1] if len(parts) > 1 else b"/"
    close = len(parts) > 2 and parts[2] == b"HTTP/1.0"
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection":
            token = value.strip().lower()
            close = token == b"close" or (close and token != b"keep-alive")
    return method, path, length, close


async def serve(host: str, port: int, latency_ms: float, capacity: int | None = None) -> None:
    receiver = Receiver(latency_ms, capacity)
    server = await asyncio.start_server(receiver.handle, host, port, backlog=1024, limit=MAX_HEAD, reuse_address=True)
    for sock in server.sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound = server.sockets[0].getsockname()
    print(f"listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps(receiver.stats()), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed on the first line)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every /api/batch and /api/send answer")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU (Linux)")
    parser.add_argument("--capacity", type=int, help="requests served at once (the rest queue): a saturating server")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args.host, args.port, args.latency_ms, args.capacity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
