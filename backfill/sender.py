"""The send phase: prepared rows to Umami's ``/api/batch``, nothing lost, nothing counted twice.

Umami's batch endpoint is not idempotent, and a request cut off midway may
have stored any prefix of its elements. So:

* rows are split into *lanes* (a stable hash of the visitor); each lane has at
  most one request on the wire, which keeps every visitor's events in time
  order even with several requests in flight;
* before a request leaves, the checkpoint records it as in flight (fsync);
  after the answer, its rows' fates are written and the lane's position
  advances (fsync). A killed process therefore leaves an exact list of the
  batches whose fate is unknown;
* a request whose fate is unknown (read timeout, reset after the body was
  sent, 500/504) is never resent automatically: its rows are listed in the
  in-doubt file and counted as such, unless the user asks for
  ``resend_in_doubt`` (risking duplicates instead of gaps);
* only faults where Umami provably processed nothing (connection refused,
  429, 502, 503, 413) are retried.

Threads: the caller's thread reads the frames and fills per-lane queues; a
pool of workers forms batches and sends them. One lock guards the checkpoint,
the ledgers and the record files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from .checkpoint import Checkpoint, utc_now, write_atomically
from .errors import ConfigError, TerminalSendError, TransientSendError
from .geo import request_headers
from .ledger import Ledger
from .rejects import RecordFile
from .sinks.outcome import ProgressCallback, SendOutcome, SendProgress
from .throttle import DEFAULT_MAX_CONCURRENCY, AdaptiveConcurrency, RateLimiter
from .umami_api import RunRefusedError, website_id_problem
from .visits import CrossingVisits

__all__ = [
    "IN_DOUBT_KILLED",
    "BatchVerdict",
    "ElementError",
    "SendOutcome",
    "SendProgress",
    "SendSettings",
    "describe_element_error",
    "make_client",
    "preflight",
    "read_batch_answer",
    "send_stream",
]

MAX_BATCH_SIZE = 500
#: How long a retry may wait for a server's Retry-After at most (seconds).
MAX_RETRY_AFTER = 900.0
#: Cap of the computed exponential backoff (seconds).
MAX_BACKOFF = 60.0
#: Extra time given to requests still on the wire after a stop, beyond the request timeout.
STOP_GRACE_SECONDS = 5.0
#: Node's default keep-alive timeout is 5 s: reusing a connection idle for longer races the
#: server closing it, which would turn a harmless retry into a batch in doubt.
KEEPALIVE_EXPIRY = 2.0
#: Batches in a row whose fate is unknown before the run stops (the server is not answering).
MAX_IN_DOUBT_IN_A_ROW = 3
#: An answered batch is saved at once when no checkpoint was written for this long;
#: otherwise the next request's save (which must precede it) covers it.
LAZY_SAVE_SECONDS = 0.05
#: Cache tokens of source visits kept at once; a visit whose token was forgotten
#: starts again from its next event (Umami then counts it as two visits).
MAX_OPEN_VISITS = 100_000
GEO_SEGMENT = "g"
#: Rows regrouped together: the larger, the fuller each location's requests (memory: the
#: window's JSON, about 50 MB at 100k rows).
REGROUP_WINDOW_ROWS = 100_000
VISIT_SEGMENT = "v"
#: Window over which the progress callback's events/s is measured.
PROGRESS_WINDOW_SECONDS = 10.0

IN_DOUBT_KILLED = (
    "in doubt: the process stopped while this batch was on the wire; Umami may have stored all, some or none of it"
)
_DB_PARTIAL_NOTE = "Umami may have stored part of it: the session, or the event without its data"

# Where a queued row comes from (column ``_origin``).
_FRESH = 0  # never sent before
_EARLIER_IN_DOUBT = 1  # in an ``in_doubt_ranges`` entry of an earlier run, sent again on request
_KILLED_IN_FLIGHT = 2  # in a ``lane_inflight`` entry a killed process left behind


@dataclass(frozen=True)
class SendSettings:
    """How to reach Umami and how hard to push it."""

    host: str
    website: str
    user_agent: str
    batch_size: int = 200
    max_body_bytes: int = 1_048_576
    concurrency: int | None = None
    rate: float | None = None
    max_attempts: int = 6
    timeout: float = 60.0
    insecure: bool = False
    on_error: str = "stop"
    resend_in_doubt: bool = False
    lanes: int = 64
    backoff_base: float = 1.0

    def __post_init__(self) -> None:
        if not self.host.startswith(("http://", "https://")):
            raise ConfigError(f"--host {self.host!r} must start with http:// or https://")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}")
        if self.max_body_bytes < 256:
            raise ConfigError("--max-body-bytes must be at least 256")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("--rate must be positive")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        if self.on_error not in ("stop", "reject"):
            raise ConfigError("--on-error must be 'stop' or 'reject'")
        if self.lanes < 1:
            raise ConfigError("lanes must be at least 1")

    @property
    def base_url(self) -> str:
        return self.host.rstrip("/")

    @property
    def batch_url(self) -> str:
        return f"{self.base_url}/api/batch"

    @property
    def workers(self) -> int:
        """Threads in the pool: the most requests that may ever be in flight."""
        return self.concurrency if self.concurrency is not None else DEFAULT_MAX_CONCURRENCY


# --------------------------------------------------------------------------- client, preflight


def make_client(settings: SendSettings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """A keep-alive client sized to the worker pool; never sends ``x-umami-cache``."""
    pool = settings.workers + 1
    return httpx.Client(
        headers={"User-Agent": settings.user_agent, "Content-Type": "application/json"},
        verify=not settings.insecure,
        timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0)),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=KEEPALIVE_EXPIRY),
        follow_redirects=False,
        transport=transport,
    )


def preflight(settings: SendSettings, client: httpx.Client | None = None) -> None:
    """Check what can be checked before the first row is sent.

    Without ``client``, one is made from ``settings`` (and closed) for the check.

    Raises:
        ConfigError: the website id is not one Umami accepts (checked exactly as Umami
            checks it), or Umami would drop the User-Agent as a bot.
        TerminalSendError: ``/api/heartbeat`` does not answer 2xx (wrong host, server down).
    """
    problem = website_id_problem(settings.website)
    if problem:
        raise ConfigError(problem)
    from .botcheck import is_bot  # imported here: only a real send needs the pattern list

    if is_bot(settings.user_agent):
        raise ConfigError(
            f"the User-Agent {settings.user_agent!r} matches Umami's bot filter (isbot):"
            " Umami would answer 200 and store nothing; pass another --user-agent"
        )
    url = f"{settings.base_url}/api/heartbeat"
    try:
        if client is None:
            with make_client(settings) as own:
                response = own.get(url)
        else:
            response = client.get(url)
    except httpx.HTTPError as exc:
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            hint = " (the TLS certificate is not trusted: fix it, or pass --insecure)"
        raise TerminalSendError(
            f"cannot reach Umami at {url}: {exc}{hint}; check --host and that the server is up"
        ) from exc
    if not 200 <= response.status_code < 300:
        raise TerminalSendError(
            f"{url} answered HTTP {response.status_code}: the host is wrong or Umami is down (check --host)"
        )


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class ElementError:
    """Why Umami refused one element of a batch."""

    field: str | None
    reason: str
    website_not_found: bool = False


def describe_element_error(response: Any) -> ElementError:
    """Turn one ``details[i].response`` into a reason a user can act on (never a stack trace)."""
    error = response.get("error") if isinstance(response, dict) else None
    if not isinstance(error, dict):
        return ElementError(None, f"Umami refused the row: {_short(response)}")
    message = str(error.get("message") or "")
    if message == "Website not found.":
        return ElementError("website", "Umami refused the row: Website not found.", True)
    if error.get("status") == 500 or error.get("code") == "server-error":
        return ElementError(
            None,
            f"Umami's database refused the row: {_database_message(error)} ({_DB_PARTIAL_NOTE})",
        )
    problems = _zod_problems(error.get("properties"), [])
    if problems:
        fields = ",".join(dict.fromkeys(f for f, _ in problems))
        detail = "; ".join(f"{f}: {m}" for f, m in problems)
        return ElementError(fields, f"Umami refused {detail}")
    top = [str(e) for e in error.get("errors") or []]
    return ElementError(None, "Umami refused the row: " + ("; ".join(top) or message or "?"))


def _zod_problems(node: Any, path: list[str]) -> list[tuple[str, str]]:
    """(field, message) pairs from a zod error tree; the ``payload.`` prefix is dropped."""
    if not isinstance(node, dict):
        return []
    found: list[tuple[str, str]] = []
    for key, child in node.items():
        if not isinstance(child, dict):
            continue
        here = [*path, key]
        name = ".".join(here[1:] if here[0] == "payload" and len(here) > 1 else here)
        found.extend((name, str(m)) for m in child.get("errors") or [])
        found.extend(_zod_problems(child.get("properties"), here))
    return found


def _database_message(error: dict[str, Any]) -> str:
    """PostgreSQL's own message, found under two spellings of the same Prisma path."""
    obj = error.get("errorObject")
    if isinstance(obj, dict):
        cause = obj.get("meta.driverAdapterError.cause")
        if cause is None:
            meta = obj.get("meta")
            adapter = meta.get("driverAdapterError") if isinstance(meta, dict) else None
            cause = adapter.get("cause") if isinstance(adapter, dict) else None
        if isinstance(cause, dict) and cause.get("originalMessage"):
            return str(cause["originalMessage"])
        if obj.get("message"):
            return str(obj["message"]).strip().splitlines()[-1][:300]
    return str(error.get("message") or "server error")


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class BatchVerdict:
    """How one 200 answer settles a batch."""

    rejected: dict[int, ElementError]  # batch index -> why
    bot_dropped: list[int]  # indices Umami counted as processed but dropped as bots
    website_not_found: bool


def read_batch_answer(answer: Any, sent: int) -> BatchVerdict:
    """Check a 200 answer adds up, and map its details back to batch positions.

    Raises:
        ValueError: the answer is not Umami's batch answer or its counts contradict
            themselves (then nobody can tell which rows were stored).
    """
    if not isinstance(answer, dict):
        raise ValueError(f"the answer is not a JSON object: {_short(answer)}")
    try:
        size, processed, errors = (int(answer[k]) for k in ("size", "processed", "errors"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the answer lacks size/processed/errors: {_short(answer)}") from exc
    details = answer.get("details") or []
    if size != sent or processed + errors != size or len(details) != errors:
        raise ValueError(
            f"the answer does not add up: {sent} elements sent, Umami reports size {size},"
            f" processed {processed}, errors {errors}, {len(details)} details"
        )
    rejected: dict[int, ElementError] = {}
    for detail in details:
        index = detail.get("index") if isinstance(detail, dict) else None
        if not isinstance(index, int) or not 0 <= index < sent or index in rejected:
            raise ValueError(f"a detail has no valid index: {_short(detail)}")
        rejected[index] = describe_element_error(detail.get("response"))
    # Umami counts a bot drop as processed and leaves no detail; the only trace is a
    # missing "cache" key, and only when every processed element was dropped.
    bot_dropped = []
    if "cache" not in answer and processed > 0:
        bot_dropped = [i for i in range(sent) if i not in rejected]
    website_missing = any(e.website_not_found for e in rejected.values())
    return BatchVerdict(rejected, bot_dropped, website_missing)


# --------------------------------------------------------------------------- one HTTP attempt


@dataclass(frozen=True)
class _Attempt:
    """The result of one POST, classified by what it means for the batch."""

    kind: str  # answered | retry | too_large | in_doubt | refused
    detail: str
    status: int | None = None
    answer: Any = None
    retry_after: float | None = None
    overloaded: bool = False
    not_umami: bool = False  # a 2xx answer that is not Umami's: stop before more go in doubt


def _post(
    client: httpx.Client, url: str, body: bytes, settings: SendSettings, headers: dict[str, bytes] | None = None
) -> _Attempt:
    try:
        response = client.post(url, content=body, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return _Attempt("retry", f"cannot connect ({_exc_text(exc)})", overloaded=True)
    except (httpx.WriteError, httpx.WriteTimeout) as exc:
        # The body did not fully leave: Umami parses the whole array before storing anything.
        return _Attempt("retry", f"the request could not be sent ({_exc_text(exc)})", overloaded=True)
    except httpx.ReadTimeout:
        return _Attempt(
            "in_doubt",
            f"in doubt: no answer within {settings.timeout:g} s (--timeout);"
            " Umami may have stored all, some or none of the batch",
            overloaded=True,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return _Attempt("refused", f"{url}: {_exc_text(exc)}")
    except httpx.TransportError as exc:
        return _Attempt(
            "in_doubt",
            f"in doubt: the connection broke after the batch was sent ({_exc_text(exc)});"
            " Umami may have stored all, some or none of it",
            overloaded=True,
        )
    except httpx.HTTPError as exc:  # e.g. an answer that cannot be decoded: it did arrive
        return _Attempt(
            "in_doubt",
            f"in doubt: the answer could not be read ({_exc_text(exc)});"
            " Umami may have stored all, some or none of the batch",
            not_umami=True,
        )
    return _classify_response(response, settings)


def _classify_response(response: httpx.Response, settings: SendSettings) -> _Attempt:
    status = response.status_code
    if 200 <= status < 300:
        try:
            answer = response.json()
        except ValueError:
            return _Attempt(
                "in_doubt",
                f"in doubt: HTTP {status} with a body that is not JSON: {_short(response.text)}",
                status,
                not_umami=True,
            )
        return _Attempt("answered", "", status, answer)
    if status == 413:
        return _Attempt("too_large", "HTTP 413 (request body too large)", status)
    if status in (429, 502, 503):
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        return _Attempt("retry", f"HTTP {status}", status, retry_after=retry_after, overloaded=True)
    if status >= 500:
        return _Attempt(
            "in_doubt",
            f"in doubt: HTTP {status} for the whole batch; Umami may have stored all, some or none of it",
            status,
            overloaded=True,
        )
    return _Attempt("refused", _refusal_message(response, settings), status)


def _refusal_message(response: httpx.Response, settings: SendSettings) -> str:
    status, url = response.status_code, settings.batch_url
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message") or "")
    except ValueError:
        pass
    if message == "Website not found.":
        return _website_missing(settings)
    if status == 401:
        return (
            f"{url} answered 401: /api/batch needs no login, so a proxy in front of Umami asks"
            " for credentials; let /api/batch through it or use Umami's own address (--host)"
        )
    if status == 403:
        return (
            f"{url} answered 403: a proxy or firewall refuses the request, or Umami's IGNORE_IP"
            " lists this machine's address; allow it, or send from another machine"
        )
    if status == 404:
        return (
            f"{url} answered 404: --host does not point at an Umami with the batch API"
            " (check the address and the Umami version)"
        )
    if 300 <= status < 400:
        where = response.headers.get("Location", "?")
        return f"{url} redirects to {where}: pass the final address as --host"
    return f"{url} answered HTTP {status}: {_short(response.text)}"


def _refuses_the_run(attempt: _Attempt, sent: int) -> bool:
    """An answer after which no further batch may be sent (checked before the slot is freed)."""
    if attempt.kind == "refused":
        return True
    if attempt.kind != "answered":
        return False
    try:
        verdict = read_batch_answer(attempt.answer, sent)
    except ValueError:
        return True
    return bool(verdict.bot_dropped) or verdict.website_not_found


def _website_missing(settings: SendSettings) -> str:
    return f"website {settings.website} does not exist on {settings.host}: check --website / UMAMI_WEBSITE_ID"


# --------------------------------------------------------------------------- refusals of the run

#: Payload fields whose value every element of a run shares (not taken from a row).
RUN_WIDE_FIELDS = frozenset({"website"})


def run_wide_refusal(
    verdict: BatchVerdict, sent: int, settings: SendSettings, *, first: bool, rows_carry_user_agent: bool
) -> str | None:
    """What to fix when a batch answer refuses the run rather than its rows; else None.

    Umami refused every element of the batch for one reason that a value shared by
    the whole run causes: the website (unknown, in any batch; an id Umami does not
    accept, in the first batch), or the run's User-Agent dropped as a bot (first
    batch, no row carrying its own ``userAgent``). Nothing was stored then, and
    every later batch would fare the same: the caller stops after this request,
    rejects nothing and leaves the rows unsent for a corrected run.
    """
    if verdict.website_not_found and len(verdict.rejected) == sent:
        return _website_missing(settings)
    if not first:
        return None
    if verdict.bot_dropped and len(verdict.bot_dropped) == sent and not rows_carry_user_agent:
        return (
            f"Umami dropped every row of the first request as a bot (HTTP 200, nothing stored):"
            f" the User-Agent {settings.user_agent!r} matches its bot filter; pass another --user-agent"
        )
    if len(verdict.rejected) != sent:
        return None
    causes = {(error.field, error.reason) for error in verdict.rejected.values()}
    if len(causes) != 1:
        return None
    field_name, reason = causes.pop()
    if field_name not in RUN_WIDE_FIELDS:
        return None
    return (
        f"Umami refused every row of the first request ({reason}): the website id"
        f" {settings.website} is wrong; copy it from Umami's website settings (--website / UMAMI_WEBSITE_ID)"
    )


def http_refusal(attempt: _Attempt) -> TerminalSendError:
    """The error for a request refused as a whole. A wrong address (404, a redirect) or an
    unknown website is the run's own value: a corrected command is needed. A proxy or
    firewall (401, 403) may be fixed outside, after which the same command resumes."""
    needs_change = attempt.status == 404 or (attempt.status is not None and 300 <= attempt.status < 400)
    if needs_change or "does not exist on" in attempt.detail:
        return RunRefusedError(attempt.detail)
    return TerminalSendError(attempt.detail)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- lanes and batches


@dataclass
class _Batch:
    """Rows of one lane, consecutive in lane order, to be sent as one request."""

    lane: int
    rows: pl.DataFrame  # _seq, _file, _row, _json, _nbytes, _origin, _rid, _geo, _seg
    too_large_reason: str | None = None  # set when one row alone exceeds the body cap
    #: Location and visit headers; every element of the request shares them.
    headers: dict[str, bytes] = field(default_factory=dict)
    #: The source visit (its ``_seg``) whose first event this lone row is: its answer's
    #: cache token then keeps the rest of that visit in one Umami visit.
    opens_visit: str | None = None

    @property
    def size(self) -> int:
        return self.rows.height

    @property
    def first_seq(self) -> int:
        return int(self.rows["_seq"][0])

    @property
    def last_seq(self) -> int:
        return int(self.rows["_seq"][-1])

    def body(self) -> bytes:
        """``[`` + elements joined by ``,`` + ``]``: the prepared JSON is never re-encoded."""
        return ("[" + self.rows["_json"].str.join(",").item() + "]").encode("utf-8")

    def split(self) -> tuple[_Batch, _Batch]:
        half = self.size // 2
        return (
            _Batch(self.lane, self.rows.head(half), headers=self.headers),
            _Batch(self.lane, self.rows.slice(half), headers=self.headers),
        )


class _BodyLimit:
    """How large a request body may be: the configured cap, tightened by any HTTP 413.

    Batches are formed to half the smallest body a 413 refused (the limit lies
    below it, and halving is what the refused batch went through), but a row is
    only rejected as too large when it alone is at least that refused size.
    """

    def __init__(self, configured: int) -> None:
        self.configured = configured
        self.refused: int | None = None
        self._lock = threading.Lock()

    def note_refused(self, size: int) -> None:
        with self._lock:
            self.refused = size if self.refused is None else min(self.refused, size)

    def target(self) -> int:
        """The cap batches are formed to."""
        refused = self.refused
        return self.configured if refused is None else min(self.configured, refused // 2)

    def too_large(self, body_size: int) -> str | None:
        """Why a single-element body of ``body_size`` bytes cannot be sent, or None."""
        refused = self.refused
        if body_size > self.configured:
            return f"larger than the body limit of {self.configured} bytes (--max-body-bytes)"
        if refused is not None and body_size >= refused:
            return f"larger than the server's body limit (HTTP 413 for {refused} bytes)"
        return None


class _LaneQueues:
    """Per-lane FIFO queues of prepared rows, with the scheduling rule for workers.

    A worker takes the lane with the most queued rows among those with nothing
    in flight. A partial batch goes out only when the input is exhausted or the
    queues hold more than ``bound`` rows (then the reader is blocked, so memory
    stays flat).
    """

    def __init__(self, lanes: int, batch_size: int, bound: int) -> None:
        self._cond = threading.Condition()
        self._queues: list[deque[pl.DataFrame]] = [deque() for _ in range(lanes)]
        self._counts = [0] * lanes
        self._busy = [False] * lanes
        self._total = 0
        self._batch_size = batch_size
        self.bound = bound
        self._exhausted = False
        self._tokens: OrderedDict[str, str] = OrderedDict()  # open source visits' cache tokens

    def set_token(self, visit: str, token: str) -> None:
        """Remember the cache token of a source visit's first event (bounded, oldest forgotten)."""
        with self._cond:
            self._tokens[visit] = token
            self._tokens.move_to_end(visit)
            while len(self._tokens) > MAX_OPEN_VISITS:
                self._tokens.popitem(last=False)

    def put(self, lane: int, rows: pl.DataFrame, *, front: bool = False) -> None:
        if rows.height == 0:
            return
        with self._cond:
            if front:
                self._queues[lane].appendleft(rows)
            else:
                self._queues[lane].append(rows)
            self._counts[lane] += rows.height
            self._total += rows.height
            self._cond.notify_all()

    def finish_input(self) -> None:
        with self._cond:
            self._exhausted = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_below_bound(self, halted: Callable[[], bool]) -> None:
        """Block the reader while the queues are over their memory bound."""
        with self._cond:
            while self._total > self.bound and not halted():
                self._cond.wait(0.1)

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._exhausted and self._total == 0 and not any(self._busy)

    def take(self, limit: _BodyLimit, halted: Callable[[], bool]) -> _Batch | None:
        """Wait for a batch to send; None once halted or when everything is sent."""
        with self._cond:
            while not halted():
                lane = self._pick_lane()
                if lane is not None:
                    self._busy[lane] = True
                    return self._form_batch(lane, limit)
                if self._exhausted and self._total == 0 and not any(self._busy):
                    return None
                self._cond.wait(0.1)
            return None

    def done_with(self, lane: int) -> None:
        """The lane's request is finished (or given up): its next rows may go."""
        with self._cond:
            self._busy[lane] = False
            self._cond.notify_all()

    def _pick_lane(self) -> int | None:
        best, best_count = None, 0
        for lane, count in enumerate(self._counts):
            if count > best_count and not self._busy[lane]:
                best, best_count = lane, count
        if best is None:
            return None
        if best_count >= self._batch_size or self._exhausted or self._total > self.bound:
            return best
        return None

    def _form_batch(self, lane: int, limit: _BodyLimit) -> _Batch:
        """Up to batch_size rows from the head of the lane whose body stays within the limit,
        all of one segment (one location, or one source visit), with that segment's headers."""
        queue = self._queues[lane]
        first = queue[0]
        segment, geo = str(first["_seg"][0]), str(first["_geo"][0])
        headers = request_headers(geo)
        if segment.startswith(VISIT_SEGMENT):
            token = self._tokens.get(segment)
            if token is None:  # the visit's first event goes alone: its answer names the visit
                row = first.head(1)
                self._pop_rows(lane, 1)
                reason = limit.too_large(int(row["_nbytes"][0]) + 2)
                return _Batch(lane, row, too_large_reason=reason, headers=headers, opens_visit=segment)
            self._tokens.move_to_end(segment)
            headers = {"x-umami-cache": token.encode()}
        parts: list[pl.DataFrame] = []
        rows_left = self._batch_size
        budget = limit.target() - 1  # "[" + "]" is 2 bytes, and n elements need n-1 commas
        while rows_left and queue:
            head = queue[0]
            candidate = _segment_head(head, segment, rows_left)
            if candidate.height == 0:
                break
            cumulative = (candidate["_nbytes"].cast(pl.Int64) + 1).cum_sum()
            fit = int(cumulative.search_sorted(budget, side="right"))
            if fit == 0:
                if not parts:  # one row alone is over the target: alone, or not at all
                    row = head.head(1)
                    self._pop_rows(lane, 1)
                    reason = limit.too_large(int(row["_nbytes"][0]) + 2)
                    return _Batch(lane, row, too_large_reason=reason, headers=headers)
                break
            parts.append(head.head(fit))
            self._pop_rows(lane, fit)
            budget -= int(cumulative[fit - 1])
            rows_left -= fit
            if fit < candidate.height or candidate.height < head.height:
                break
        rows = parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=False)
        return _Batch(lane, rows, headers=headers)

    def _pop_rows(self, lane: int, count: int) -> None:
        queue = self._queues[lane]
        head = queue[0]
        if count >= head.height:
            queue.popleft()
        else:
            queue[0] = head.slice(count)
        self._counts[lane] -= count
        self._total -= count
        self._cond.notify_all()


def _segment_head(rows: pl.DataFrame, segment: str, limit: int) -> pl.DataFrame:
    """The leading rows (at most ``limit``) that belong to ``segment``."""
    head = rows.head(limit)
    other = (head["_seg"] != segment).arg_true()
    return head if other.len() == 0 else head.head(int(other[0]))


def regrouped(
    frames: Iterable[pl.DataFrame], crossing: CrossingVisits, window_rows: int = REGROUP_WINDOW_ROWS
) -> Iterator[pl.DataFrame]:
    """The prepared stream in windows of about ``window_rows`` rows, each :func:`regroup`-ed.

    A pure function of the stream (the same windows, the same order on every
    run), so the renumbered ``_seq`` stays valid for the checkpoint. Blocks that
    need no grouping (no location, no crossing visit) pass straight through.
    """
    pending: list[pl.DataFrame] = []
    rows = 0
    for frame in frames:
        if frame.height == 0:
            continue
        if not pending and not _needs_grouping(frame, crossing):  # nothing to group: no read-ahead
            yield _one_segment(frame)
            continue
        pending.append(frame)
        rows += frame.height
        if rows >= window_rows:
            yield regroup(pl.concat(pending, rechunk=False), crossing)
            pending, rows = [], 0
    if pending:
        yield regroup(pl.concat(pending, rechunk=False), crossing)


def _one_segment(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(_geo=pl.lit(""), _seg=pl.lit(GEO_SEGMENT))


def _needs_grouping(frame: pl.DataFrame, crossing: CrossingVisits) -> bool:
    if crossing.count and "_vkey" in frame.columns and frame["_vkey"].is_not_null().any():
        return True
    return "_geo" in frame.columns and bool((frame["_geo"].fill_null("") != "").any())


def regroup(frame: pl.DataFrame, crossing: CrossingVisits) -> pl.DataFrame:
    """Order one window of the prepared stream so each lane's rows come in segments.

    A segment is what one request may hold: rows of one location (Umami takes a
    request's location headers for every element, but only uses them to create
    a session), or the rows of one source visit that crosses a clock hour (its
    requests carry that visit's cache token). Within a window, each lane's
    visitors are grouped by the location of their first row in the window, and
    every row of a visitor travels with that location: only the first row that
    reaches Umami sets the session's location, and should an earlier row be
    lost (in doubt after a crash, or refused), the next one still carries the
    right headers. Visitors with a crossing visit come after all others, so
    their lone requests do not cut the others' segments. A visitor's own rows
    keep their time order, which is all Umami's sessions need. ``_seq`` is
    renumbered in the new order.

    Adds ``_geo`` (the location key for the request) and ``_seg``.
    """
    if not _needs_grouping(frame, crossing):
        return _one_segment(frame)
    base = int(frame["_seq"][0])
    geo = frame["_geo"].fill_null("") if "_geo" in frame.columns else pl.lit("")
    in_visit = crossing.contains(frame["_vkey"]) if crossing.count and "_vkey" in frame.columns else False
    ordered = (
        frame.with_columns(_geo=geo, _xv=in_visit)
        .with_columns(
            pl.col("_geo").first().over("_visitor").alias("_geo"),  # the window is in time order
            pl.col("_xv").any().over("_visitor").alias("_vx"),
        )
        .sort(["_lane", "_vx", "_geo", "_visitor", "_seq"])
    )
    segment = (
        pl.when(pl.col("_xv"))
        .then(pl.concat_str(pl.lit(VISIT_SEGMENT), pl.col("_vkey").cast(pl.String)))
        .otherwise(pl.concat_str(pl.lit(GEO_SEGMENT), pl.col("_geo")))
    )
    return ordered.with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) + base).alias("_seq"),
        segment.alias("_seg"),
    ).drop("_xv", "_vx")


# --------------------------------------------------------------------------- in-doubt bookkeeping


@dataclass
class _DoubtRange:
    """An ``in_doubt_ranges`` entry from an earlier run, tracked while its rows are resent."""

    lane: int
    first: int
    last: int
    count: int
    seen: list[int] = field(default_factory=list)  # its rows' _seq, as the stream passed them
    resolved: set[int] = field(default_factory=set)  # resent and answered: no longer in doubt

    def pieces(self) -> list[list[int]]:
        """What is still in doubt, as ranges of rows consecutive in the lane."""
        if not self.resolved:
            return [[self.lane, self.first, self.last, self.count]]
        pieces: list[list[int]] = []
        run: list[int] = []
        for seq in self.seen:
            if seq in self.resolved:
                if run:
                    pieces.append([self.lane, run[0], run[-1], len(run)])
                run = []
            else:
                run.append(seq)
        unseen = self.count - len(self.seen)
        if unseen > 0:
            if run:
                pieces.append([self.lane, run[0], self.last, len(run) + unseen])
            else:
                pieces.append([self.lane, self.seen[-1] + 1, self.last, unseen])
        elif run:
            pieces.append([self.lane, run[0], run[-1], len(run)])
        return pieces


@dataclass
class _KilledInFlight:
    """A ``lane_inflight`` entry left by a killed process, finalized as the stream passes it."""

    lane: int
    first: int
    last: int
    count: int
    parts: list[pl.DataFrame] = field(default_factory=list)  # rows not yet in doubt otherwise
    seen: int = 0  # rows of the entry the stream gave, including those already in doubt


# --------------------------------------------------------------------------- the send run


def send_stream(
    frames: Iterable[pl.DataFrame],
    files: list[str],
    settings: SendSettings,
    checkpoint: Checkpoint,
    checkpoint_path: str | os.PathLike[str],
    rejects: RecordFile,
    in_doubt: RecordFile,
    ledger: Ledger,
    progress: ProgressCallback | None,
    stop: threading.Event,
    *,
    transport: httpx.BaseTransport | None = None,
    concurrency: AdaptiveConcurrency | None = None,
    crossing: CrossingVisits | None = None,
) -> SendOutcome:
    """Send the prepared rows; resume from ``checkpoint``; return (or raise) when done.

    ``frames`` must be the same deterministic stream on every run (all rows,
    including those sent before: they are skipped here). ``ledger`` receives
    this run's counts; the checkpoint's ``send_ledger`` is the cumulative one.

    On the first send run (checkpoint phase ``preparing``) the record files'
    current sizes are adopted as the covered offsets; on a resume they are
    truncated back to the checkpoint's offsets.

    ``progress`` is called from the worker threads, one call at a time, after
    each finished batch. ``stop`` ends the run cleanly: no new batch is taken,
    requests on the wire get ``timeout`` + 5 s to answer, the checkpoint is
    saved and the outcome says ``interrupted``.

    Rows carry their request's location (``_geo``) and visit (``_vkey``);
    ``crossing`` names the source visits that cross a clock hour, which are
    kept whole with Umami's cache token (see :func:`regroup`).

    Raises:
        TerminalSendError: Umami refused the run as a whole (website, credentials, bot filter).
        TransientSendError: retries ran out with ``on_error="stop"``.
        Either carries the run's SendOutcome as ``.outcome``; the checkpoint is saved first.
    """
    run = _SendRun(
        files,
        settings,
        checkpoint,
        Path(checkpoint_path),
        rejects,
        in_doubt,
        ledger,
        progress,
        stop,
        crossing or CrossingVisits.empty(),
    )
    return run.execute(iter(frames), transport, concurrency)


class _SendRun:
    """One call of :func:`send_stream`: the reader, the worker pool and their shared state."""

    def __init__(
        self,
        files: list[str],
        settings: SendSettings,
        checkpoint: Checkpoint,
        checkpoint_path: Path,
        rejects: RecordFile,
        in_doubt: RecordFile,
        ledger: Ledger,
        progress: ProgressCallback | None,
        stop: threading.Event,
        crossing: CrossingVisits,
    ) -> None:
        if checkpoint.lanes != settings.lanes:
            raise ConfigError(
                f"the checkpoint was made with {checkpoint.lanes} lanes, this run uses"
                f" {settings.lanes}: use --restart or the same settings"
            )
        self.files = pl.Series("file", files, dtype=pl.String)
        self.file_names = [os.path.basename(f) for f in files]
        self.settings = settings
        self.cp = checkpoint
        self.cp_path = checkpoint_path
        self.rejects = rejects
        self.in_doubt = in_doubt
        self.ledger = ledger
        self.total = checkpoint.send_ledger
        self.progress = progress
        self.stop = stop
        self.halt = threading.Event()  # stop requested or a fatal error: take no new batch
        self.lock = threading.Lock()  # checkpoint, ledgers, record files
        self.closed = False  # set once the run has returned: late answers change nothing
        # The first batch goes alone: a wrong website, a proxy refusal or a bot User-Agent
        # then costs one request, not one per slot.
        self.probe_taken = False
        self.probe_done = threading.Event()
        self.error: BaseException | None = None
        self.crossing = crossing
        self.visits_opened = 0  # lone first events of visits that cross a clock hour
        self.started = time.monotonic()
        self.notes: list[str] = []
        # Positions as they were when the run started decide what the stream's rows are.
        self.start_acked = pl.Series(checkpoint.lane_acked, dtype=pl.Int64)
        self.tracked = [_DoubtRange(*r) for r in checkpoint.in_doubt_ranges]
        self.new_ranges: list[list[int]] = []
        self.killed = {
            lane: _KilledInFlight(lane, *entry)
            for lane, entry in enumerate(checkpoint.lane_inflight)
            if entry is not None
        }
        self.doubt_keys: set[tuple[int, int]] = set()  # (file, row) of rows in doubt now
        self.resolved_keys: set[tuple[int, int]] = set()  # earlier in doubt, resolved now
        # Counters and measurements.
        self.rows_seen = 0
        self.rows_skipped = 0
        self.recorded_on_resume = 0
        self.resent = 0
        self.requests = 0
        self.saves = 0
        self.save_seconds = 0.0
        # Group commit: changes are numbered; one thread at a time writes the newest state.
        self.save_lock = threading.Lock()  # taken before self.lock, never while holding it
        self.change_version = 0
        self.saved_version = 0
        self.saved_at = time.monotonic()
        self.wait_seconds = 0.0  # workers blocked on a checkpoint write before their request
        self.request_seconds = 0.0  # workers on the wire
        self.last_latency: float | None = None
        self.recent: deque[tuple[float, int]] = deque()
        self.progress_lock = threading.Lock()
        self.synced_counts = (rejects.count, in_doubt.count)
        self.in_doubt_in_a_row = 0
        self.body_limit = _BodyLimit(settings.max_body_bytes)
        bound = max(20 * settings.batch_size * settings.workers, 2 * settings.lanes * settings.batch_size)
        self.queues = _LaneQueues(settings.lanes, settings.batch_size, bound)
        self.rate = RateLimiter(settings.rate)
        self.concurrency: AdaptiveConcurrency
        self.client: httpx.Client

    # ------------------------------------------------------------------ orchestration

    def execute(
        self,
        frames: Iterator[pl.DataFrame],
        transport: httpx.BaseTransport | None,
        concurrency: AdaptiveConcurrency | None,
    ) -> SendOutcome:
        self.concurrency = concurrency or AdaptiveConcurrency(
            fixed=self.settings.concurrency, maximum=self.settings.workers
        )
        self._open_files()
        self.client = make_client(self.settings, transport)
        workers = [
            threading.Thread(target=self._worker, name=f"umami-send-{i}", daemon=True)
            for i in range(self.settings.workers)
        ]
        exhausted = False
        try:
            for worker in workers:
                worker.start()
            exhausted = self._read(frames)
            if exhausted:
                self._finalize_killed(upto=None)
                self.queues.finish_input()
        except BaseException as exc:
            self._abort(exc)
        finally:
            self._wait_for(workers)
        try:
            return self._conclude(exhausted)
        finally:
            self.client.close()

    def _halted(self) -> bool:
        if self.stop.is_set() and not self.halt.is_set():
            self.halt.set()
            self.queues.wake()
        return self.halt.is_set()

    def _abort(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.halt.set()
        self.queues.wake()

    def _wait_for(self, workers: list[threading.Thread]) -> None:
        """Let workers drain; after a stop, give in-flight requests a bounded time to answer."""
        deadline: float | None = None
        while any(w.is_alive() for w in workers):
            if deadline is None and self._halted():
                deadline = time.monotonic() + self.settings.timeout + STOP_GRACE_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                self.notes.append(
                    "some requests were still unanswered when the run stopped: they stay in"
                    " flight in the checkpoint and are recorded as in doubt on resume"
                )
                break
            for worker in workers:
                worker.join(0.05)

    def _open_files(self) -> None:
        """Make the record files agree with the checkpoint before anything is written."""
        with self.lock:
            if self.cp.phase == "preparing":
                # Nothing of the send phase was written yet: what the files hold
                # (client-side rejects of the prepare stage) is covered as it is.
                self.cp.rejects_offset = self.rejects.offset()
                self.cp.in_doubt_offset = self.in_doubt.offset()
            else:
                self.rejects.truncate(self.cp.rejects_offset)
                self.in_doubt.truncate(self.cp.in_doubt_offset)
            self.cp.phase = "sending"
            self._save()

    def _conclude(self, exhausted: bool) -> SendOutcome:
        with self.save_lock, self.lock:  # no older snapshot may land after the final one
            self.closed = True
            completed = exhausted and self.error is None and self.queues.drained
            if completed:
                self._clear_leftover_inflight()
                self._compact_in_doubt(keep=self.doubt_keys)
                self.cp.phase = "complete"
            elif self.resolved_keys:
                self._compact_in_doubt(drop=self.resolved_keys)
            interrupted = not completed and self.error is None
            error = None if self.error is None else str(self.error)
            self._add_notes()
            self.cp.add_run(self._run_summary(completed, interrupted, error))
            self._save()
            outcome = SendOutcome(
                completed=completed,
                interrupted=interrupted,
                error=error,
                ledger=self.ledger,
                cumulative=self.total,
                rows_seen=self.rows_seen,
                rows_skipped=self.rows_skipped,
                in_doubt_recorded_on_resume=self.recorded_on_resume,
                in_doubt_resent=self.resent,
                requests=self.requests,
                elapsed_s=time.monotonic() - self.started,
                checkpoint_saves=self.saves,
                checkpoint_save_s=self.save_seconds,
                visit_first_requests=self.visits_opened,
                checkpoint_wait_s=self.wait_seconds,
                request_s=self.request_seconds,
                notes=list(self.notes),
            )
        for handle in (self.rejects, self.in_doubt):
            handle.sync()
        if self.error is not None:
            self.error.outcome = outcome  # type: ignore[attr-defined]
            raise self.error
        return outcome

    def _add_notes(self) -> None:
        if self.visits_opened:
            self.notes.append(
                f"{self.visits_opened:,} source visits crossed a clock hour: each was kept one Umami"
                " visit with one extra request (its first event alone, the rest with its cache token)"
            )
        if self.resent:
            self.notes.append(
                f"{self.resent} rows whose fate was unknown were sent again (--resend-in-doubt):"
                " those Umami had already stored are now stored twice"
            )
        elif self.total.in_doubt:
            self.notes.append(
                f"{self.total.in_doubt} rows are in doubt (listed in {self.in_doubt.path}):"
                " Umami may have stored all, some or none of them. Not resending them risks"
                " gaps; --resend-in-doubt resends them and risks duplicates"
            )

    def _run_summary(self, completed: bool, interrupted: bool, error: str | None) -> dict[str, Any]:
        return {
            "stage": "send",
            "ended_at": utc_now(),
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "outcome": "complete" if completed else "interrupted" if interrupted else "error",
            "error": error,
            "accepted": self.ledger.accepted,
            "rejected": self.ledger.rejected_total,
            "in_doubt": self.ledger.in_doubt,
            "in_doubt_resent": self.resent,
            "requests": self.requests,
        }

    # ------------------------------------------------------------------ reading the stream

    def _read(self, frames: Iterator[pl.DataFrame]) -> bool:
        """Classify each frame's rows and queue the ones to send; True when the stream ended."""
        expected_seq: int | None = None
        for frame in regrouped(frames, self.crossing):
            if self._halted():
                return False
            rows = self._tag(frame, expected_seq)
            expected_seq = int(rows["_seq"][-1]) + 1
            self.rows_seen += rows.height
            self._route(rows)
            self.queues.wait_below_bound(self._halted)
        return not self._halted()

    def _tag(self, frame: pl.DataFrame, expected_seq: int | None) -> pl.DataFrame:
        """Add ``_origin``/``_rid``/``_nbytes`` and whether each row is to be sent."""
        rows = frame.select(
            pl.col("_seq").cast(pl.Int64),
            pl.col("_lane").cast(pl.Int64),
            pl.col("_file").cast(pl.Int64),
            pl.col("_row").cast(pl.Int64),
            pl.col("_json"),
            pl.col("_geo"),
            pl.col("_seg"),
        )
        _check_stream(rows, expected_seq, self.settings.lanes)
        acked = self.start_acked.gather(rows["_lane"])
        doubt_rid = self._range_ids(rows, [(r.lane, r.first, r.last) for r in self.tracked])
        killed_rid = self._range_ids(rows, [(k.lane, k.first, k.last) for k in self.killed.values()])
        resend = self.settings.resend_in_doubt
        rows = rows.with_columns(
            _nbytes=pl.col("_json").str.len_bytes(),
            _rid=doubt_rid,
            _kid=killed_rid,
            _acked=acked,
        ).with_columns(
            _origin=pl.when(pl.col("_rid").is_not_null())
            .then(pl.lit(_EARLIER_IN_DOUBT))
            .when(pl.col("_kid").is_not_null())
            .then(pl.lit(_KILLED_IN_FLIGHT))
            .otherwise(pl.lit(_FRESH))
            .cast(pl.Int8)
        )
        send = pl.when(pl.col("_origin") == _FRESH).then(pl.col("_seq") > pl.col("_acked")).otherwise(pl.lit(resend))
        return rows.with_columns(_send=send)

    @staticmethod
    def _range_ids(rows: pl.DataFrame, ranges: list[tuple[int, int, int]]) -> pl.Series:
        """Index of the range (lane, first..last) holding each row, or null."""
        if not ranges:
            return pl.Series(values=[None] * rows.height, dtype=pl.Int64)
        table = pl.DataFrame(
            {
                "_lane": [r[0] for r in ranges],
                "_first": [r[1] for r in ranges],
                "_last": [r[2] for r in ranges],
                "_id": list(range(len(ranges))),
            },
            schema={"_lane": pl.Int64, "_first": pl.Int64, "_last": pl.Int64, "_id": pl.Int64},
        ).sort("_first")
        joined = rows.select("_seq", "_lane").join_asof(
            table, left_on="_seq", right_on="_first", by="_lane", check_sortedness=False
        )
        return joined.select(pl.when(pl.col("_seq") <= pl.col("_last")).then(pl.col("_id"))).to_series()

    def _route(self, rows: pl.DataFrame) -> None:
        """Skip finished rows, record killed-in-flight rows, queue the rest by lane."""
        resend = self.settings.resend_in_doubt
        earlier = rows.filter(pl.col("_origin") == _EARLIER_IN_DOUBT)
        if earlier.height:
            with self.lock:
                self.doubt_keys.update(zip(earlier["_file"], earlier["_row"], strict=True))
                if resend:
                    for rid, seq in zip(earlier["_rid"], earlier["_seq"], strict=True):
                        self.tracked[rid].seen.append(seq)
        if not resend and self.killed:
            killed = rows.filter(pl.col("_kid").is_not_null())
            for (lane,), part in killed.partition_by("_lane", as_dict=True).items():
                entry = self.killed[int(lane)]
                entry.seen += part.height
                entry.parts.append(part.filter(pl.col("_origin") == _KILLED_IN_FLIGHT))
            self._finalize_killed(upto=int(rows["_seq"][-1]))
        sendable = rows.filter("_send")
        self.rows_skipped += rows.height - sendable.height - (0 if resend else _count_killed(rows))
        sendable = sendable.select(
            "_seq", "_lane", "_file", "_row", "_json", "_nbytes", "_origin", "_rid", "_geo", "_seg"
        )
        for (lane,), part in sendable.partition_by("_lane", as_dict=True, include_key=False).items():
            self.queues.put(int(lane), part)

    def _finalize_killed(self, upto: int | None) -> None:
        """Record in doubt the rows of interrupted batches the stream has fully passed.

        Runs before the lane's later rows are queued, so the lane's in-flight
        slot is free (and the rows listed) before anything else of it is sent.
        With ``resend_in_doubt`` the rows are queued instead, and the lane's
        next request takes over the entry.
        """
        if self.settings.resend_in_doubt:
            return
        for lane, entry in list(self.killed.items()):
            if upto is not None and entry.last > upto:
                continue
            rows = pl.concat(entry.parts) if entry.parts else None
            with self.lock:
                if rows is not None and rows.height:
                    self._record_in_doubt(lane, rows, IN_DOUBT_KILLED)
                    self.recorded_on_resume += rows.height
                self.cp.lane_acked[lane] = max(self.cp.lane_acked[lane], entry.last)
                self.cp.lane_inflight[lane] = None
                version = self._changed()
            self._durable(version)
            del self.killed[lane]
            if entry.seen != entry.count:
                self.notes.append(
                    f"lane {lane}: the interrupted batch had {entry.count} rows but the input"
                    f" now gives {entry.seen}: did the prepared data change?"
                )

    # ------------------------------------------------------------------ workers

    def _worker(self) -> None:
        try:
            while True:
                # Work first, then a slot: a worker never holds a slot while it waits for
                # work, or a retry that needs a slot back could wait for ever.
                batch = self.queues.take(self.body_limit, self._halted)
                if batch is None:
                    return
                probing = False
                try:
                    probing = self._take_probe()
                    if not probing and not self._wait_for_probe():
                        self._put_back(batch)
                        return
                    started = self.concurrency.acquire(self.halt)
                    if started is None:
                        self._put_back(batch)
                        return
                    self._deliver(batch, started)
                finally:
                    if probing:
                        self.probe_done.set()
                    self.queues.done_with(batch.lane)
        except BaseException as exc:  # a bug: stop everything, keep the checkpoint conservative
            self._abort(exc)

    def _take_probe(self) -> bool:
        with self.lock:
            if self.probe_taken:
                return False
            self.probe_taken = True
            return True

    def _wait_for_probe(self) -> bool:
        """Hold every other batch until the first one is answered; False if the run halts."""
        while not self.probe_done.wait(0.05):
            if self._halted():
                return False
        return not self.halt.is_set()

    def _deliver(self, batch: _Batch, started: float) -> None:
        """Send one batch until its fate is known, retrying only what provably was not processed."""
        failures = 0
        while True:
            if batch.too_large_reason is not None:
                self.concurrency.cancel()
                self._settle_whole(batch, "rejected", batch.too_large_reason)
                return
            if not self.rate.wait(batch.size, self.halt) or self.halt.is_set() or not self._mark_in_flight(batch):
                self.concurrency.cancel()
                self._put_back(batch)
                return
            body = batch.body()
            began = time.perf_counter()
            attempt = _post(self.client, self.settings.batch_url, body, self.settings, batch.headers)
            with self.lock:
                self.request_seconds += time.perf_counter() - began
            if _refuses_the_run(attempt, batch.size):
                self.halt.set()  # before the slot is freed: no other batch may start now
            latency = self.concurrency.release(
                started,
                batch.size if attempt.kind == "answered" else 0,
                overloaded=attempt.overloaded,
                retry_after=attempt.retry_after,
            )
            self.last_latency = latency
            with self.lock:
                self.requests += 1
            if attempt.kind == "answered":
                self._settle_answer(batch, attempt.answer)
                return
            if attempt.kind == "in_doubt":
                self._settle_whole(batch, "in_doubt", attempt.detail)
                self._stop_if_umami_is_gone(attempt)
                return
            self._clear_in_flight(batch)  # nothing was processed
            if attempt.kind == "refused":
                self._put_back(batch)
                self._abort(http_refusal(attempt))
                return
            if attempt.kind == "too_large":
                self.body_limit.note_refused(len(body))
                if batch.size == 1:
                    self._settle_whole(batch, "rejected", "larger than the server's body limit (HTTP 413)")
                    return
                batch, rest = batch.split()
                self.queues.put(batch.lane, rest.rows, front=True)
            else:  # retry
                failures += 1
                if failures >= self.settings.max_attempts:
                    self._give_up(batch, attempt, failures)
                    return
                self._durable(self.change_version)  # nothing stale on disk while we wait
                if self.halt.wait(self._backoff(failures, attempt.retry_after)):
                    self._put_back(batch)
                    return
            started_again = self.concurrency.acquire(self.halt)
            if started_again is None:
                self._put_back(batch)
                return
            started = started_again

    def _stop_if_umami_is_gone(self, attempt: _Attempt) -> None:
        """One batch in doubt is bad luck; several in a row mean Umami is not answering.

        Going on would put every remaining batch in doubt, so the run stops
        (resumable) after ``MAX_IN_DOUBT_IN_A_ROW`` of them, or at once when
        the answers are not Umami's at all.
        """
        with self.lock:
            in_a_row = self.in_doubt_in_a_row
        if attempt.not_umami:
            self._abort(
                TerminalSendError(
                    f"{self.settings.batch_url} answered something that is not Umami's batch"
                    f" API ({attempt.detail}): check --host; the batch is recorded as in doubt"
                )
            )
        elif in_a_row >= MAX_IN_DOUBT_IN_A_ROW:
            self._abort(
                TransientSendError(
                    f"{in_a_row} batches in a row got no usable answer from"
                    f" {self.settings.batch_url} (last: {attempt.detail}); the run stopped so"
                    " that no more rows go in doubt: check the server, then resume"
                )
            )

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(MAX_BACKOFF, self.settings.backoff_base * 2 ** (failures - 1))
        return base * random.uniform(0.5, 1.0)

    def _give_up(self, batch: _Batch, attempt: _Attempt, failures: int) -> None:
        reason = f"not sent: {attempt.detail} on {failures} attempts"
        if self.settings.on_error == "reject":
            self._settle_whole(batch, "rejected", reason)
            return
        self._put_back(batch)
        self._abort(
            TransientSendError(
                f"{self.settings.batch_url}: {attempt.detail} on {failures} attempts; the run"
                " stopped and resumes from here (or pass --on-error reject to list such"
                " batches as rejects and go on)"
            )
        )

    def _put_back(self, batch: _Batch) -> None:
        """The batch was not processed: its rows stay unsent (the checkpoint is not advanced)."""
        self.queues.put(batch.lane, batch.rows, front=True)

    # ------------------------------------------------------------------ checkpoint updates

    def _mark_in_flight(self, batch: _Batch) -> bool:
        """Record the batch as on the wire, durably, before it leaves; False once the run is closed."""
        with self.lock:
            if self.closed:
                return False
            self.cp.lane_inflight[batch.lane] = [batch.first_seq, batch.last_seq, batch.size]
            version = self._changed()
        began = time.perf_counter()
        self._durable(version)
        with self.lock:
            self.wait_seconds += time.perf_counter() - began
        return not self.closed

    def _clear_in_flight(self, batch: _Batch) -> None:
        """Nothing of the batch was processed (a retry follows, or the run stops)."""
        with self.lock:
            if self.closed:
                return
            self.cp.lane_inflight[batch.lane] = None
            version = self._changed()
        self._save_if_stale(version)

    def _settle_answer(self, batch: _Batch, answer: Any) -> None:
        try:
            verdict = read_batch_answer(answer, batch.size)
        except ValueError as exc:
            self._settle_whole(batch, "in_doubt", f"in doubt: {exc}")
            self._abort(
                TerminalSendError(
                    f"{self.settings.batch_url} gave an answer that does not match Umami's batch"
                    f" API ({exc}); the batch is recorded as in doubt"
                )
            )
            return
        refusal = run_wide_refusal(
            verdict,
            batch.size,
            self.settings,
            first=not self.probe_done.is_set(),  # the first batch goes alone; the rest wait for it
            rows_carry_user_agent=bool(batch.rows["_json"].str.contains('"userAgent":', literal=True).any()),
        )
        if refusal is not None:
            self._clear_in_flight(batch)  # refused as a whole: nothing stored, nothing rejected
            self._put_back(batch)
            self._abort(RunRefusedError(refusal))
            return
        refused: dict[int, tuple[str | None, str]] = {i: (e.field, e.reason) for i, e in verdict.rejected.items()}
        if verdict.bot_dropped:
            reason = (
                "dropped by Umami's bot filter (nothing stored): the User-Agent"
                f" {self.settings.user_agent!r} or the row's userAgent matches isbot; change"
                " --user-agent or the mapping's userAgent"
            )
            refused.update((i, ("userAgent", reason)) for i in verdict.bot_dropped)
        if batch.opens_visit is not None and not refused:
            self._open_visit(batch.opens_visit, answer)
        self._commit(batch, refused=refused)
        if verdict.bot_dropped:
            self._abort(
                TerminalSendError(
                    f"Umami dropped a whole batch as bots (HTTP 200, nothing stored): the"
                    f" User-Agent {self.settings.user_agent!r} or the rows' userAgent matches"
                    " Umami's bot filter (isbot); change --user-agent or the mapping's userAgent"
                )
            )
        elif verdict.website_not_found:
            self._abort(RunRefusedError(_website_missing(self.settings)))

    def _open_visit(self, visit: str, answer: Any) -> None:
        """Keep the token Umami gave the visit's first event, for the rest of that visit."""
        token = answer.get("cache") if isinstance(answer, dict) else None
        if isinstance(token, str) and token:
            self.queues.set_token(visit, token)
            with self.lock:
                self.visits_opened += 1

    def _settle_whole(self, batch: _Batch, fate: str, reason: str) -> None:
        if fate == "in_doubt":
            self._commit(batch, doubt_reason=reason)
        else:
            self._commit(batch, refused=dict.fromkeys(range(batch.size), (None, reason)))

    def _commit(
        self,
        batch: _Batch,
        *,
        refused: dict[int, tuple[str | None, str]] | None = None,
        doubt_reason: str | None = None,
    ) -> None:
        """Write the batch's fates, advance its lane and save: one step under the lock."""
        rows = batch.rows
        earlier = rows["_origin"] == _EARLIER_IN_DOUBT
        with self.lock:
            if self.closed:
                return
            self.resent += int((rows["_origin"] != _FRESH).sum())
            self.in_doubt_in_a_row = self.in_doubt_in_a_row + 1 if doubt_reason else 0
            if doubt_reason is not None:
                # Rows already in doubt from an earlier run stay as they are (listed, counted).
                fresh = rows.filter(~earlier)
                if fresh.height:
                    self._record_in_doubt(batch.lane, fresh, doubt_reason)
                self.ledger.read += rows.height - fresh.height
                self.ledger.in_doubt += rows.height - fresh.height
            else:
                self._record_answered(rows, refused or {})
                self._resolve_earlier(rows.filter(earlier))
            self.cp.lane_acked[batch.lane] = max(self.cp.lane_acked[batch.lane], batch.last_seq)
            self.cp.lane_inflight[batch.lane] = None
            version = self._changed()
            self.recent.append((time.monotonic(), rows.height))
            snapshot = self._progress_snapshot()
        self._save_if_stale(version)
        if self.progress is not None and snapshot is not None:
            with self.progress_lock:
                self.progress(snapshot)

    def _record_answered(self, rows: pl.DataFrame, refused: dict[int, tuple[str | None, str]]) -> None:
        fresh_count = int((rows["_origin"] != _EARLIER_IN_DOUBT).sum())
        self.ledger.read += rows.height
        self.total.read += fresh_count
        accepted = rows.height - len(refused)
        self.ledger.accepted += accepted
        self.total.accepted += accepted
        if not refused:
            return
        index = sorted(refused)
        picked = rows.select(pl.all().gather(index))
        files = self.files.gather(picked["_file"])
        records = [
            {
                "file": path,
                "row": row,
                "field": refused[i][0],
                "reason": refused[i][1],
                "values": js,
            }
            for i, path, row, js in zip(index, files, picked["_row"], picked["_json"], strict=True)
        ]
        self.rejects.write_records(records)
        by_reason: dict[str, list[str]] = {}
        for i, row, file_index in zip(index, picked["_row"], picked["_file"], strict=True):
            by_reason.setdefault(refused[i][1], []).append(f"{self.file_names[file_index]}:{row}")
        for reason, examples in by_reason.items():
            self.ledger.reject(reason, len(examples), examples)
            self.total.reject(reason, len(examples), examples)

    def _resolve_earlier(self, rows: pl.DataFrame) -> None:
        """Rows in doubt from an earlier run got an answer now: they leave the in-doubt list."""
        if rows.height == 0:
            return
        for rid, seq, file_index, row in zip(rows["_rid"], rows["_seq"], rows["_file"], rows["_row"], strict=True):
            self.tracked[rid].resolved.add(seq)
            self.doubt_keys.discard((file_index, row))
            self.resolved_keys.add((file_index, row))
        self.total.in_doubt -= rows.height
        self._refresh_ranges()

    def _record_in_doubt(self, lane: int, rows: pl.DataFrame, reason: str) -> None:
        """List rows whose fate is unknown, count them, and remember their range (lock held)."""
        paths = self.files.gather(rows["_file"])
        self.in_doubt.write_frame(
            pl.DataFrame(
                {
                    "file": paths,
                    "row": rows["_row"],
                    "field": pl.Series(values=[None] * rows.height, dtype=pl.String),
                    "reason": pl.Series(values=[reason] * rows.height, dtype=pl.String),
                    "values": rows["_json"],
                }
            )
        )
        self.doubt_keys.update(zip(rows["_file"], rows["_row"], strict=True))
        self.ledger.read += rows.height
        self.ledger.in_doubt += rows.height
        self.total.read += rows.height
        self.total.in_doubt += rows.height
        self.new_ranges.append(
            [lane, int(rows["_seq"].min()), int(rows["_seq"].max()), rows.height]  # type: ignore[arg-type]
        )
        self._refresh_ranges()

    def _refresh_ranges(self) -> None:
        ranges = [piece for r in self.tracked for piece in r.pieces()]
        self.cp.in_doubt_ranges = ranges + self.new_ranges

    def _clear_leftover_inflight(self) -> None:
        """After a full pass nothing is on the wire: clear entries whose rows never came."""
        for lane, entry in enumerate(self.cp.lane_inflight):
            if entry is not None:
                self.cp.lane_acked[lane] = max(self.cp.lane_acked[lane], entry[1])
                self.cp.lane_inflight[lane] = None

    def _sync_records(self) -> None:
        """Record files reach the disk before the checkpoint that covers them (lock held).

        Only a file written since the last save is fsynced: most batches write none.
        """
        if self.rejects.count != self.synced_counts[0]:
            self.cp.rejects_offset = self.rejects.sync()
        if self.in_doubt.count != self.synced_counts[1]:
            self.cp.in_doubt_offset = self.in_doubt.sync()
        self.synced_counts = (self.rejects.count, self.in_doubt.count)

    def _save(self) -> None:
        """Write the checkpoint now (lock held): at the start and the end of the run."""
        began = time.perf_counter()
        self._sync_records()
        self.cp.save(self.cp_path)
        self._saved(began, self.change_version)

    def _saved(self, began: float, version: int) -> None:
        self.save_seconds += time.perf_counter() - began
        self.saves += 1
        self.saved_version = max(self.saved_version, version)
        self.saved_at = time.monotonic()

    def _changed(self) -> int:
        """Number a change of the checkpoint state (lock held)."""
        self.change_version += 1
        return self.change_version

    def _durable(self, version: int) -> None:
        """Return once a checkpoint holding change ``version`` is on disk (lock NOT held).

        Group commit: the thread holding ``save_lock`` snapshots the newest state
        under the lock and writes it outside, so the workers waiting behind it
        find their change saved already: N requests in flight cost about one
        write, not N, and no worker waits on another's fsync under the lock.
        """
        with self.save_lock:
            if self.saved_version >= version:
                return
            began = time.perf_counter()
            with self.lock:
                if self.closed:
                    return
                self._sync_records()
                snapshot = self.cp.to_bytes()
                upto = self.change_version
            write_atomically(self.cp_path, snapshot)
            with self.lock:
                self._saved(began, upto)

    def _save_if_stale(self, version: int) -> None:
        """After an answer: save unless a save is due anyway (the next request saves first).

        If the process dies before that, the answered batch is still marked as on
        the wire and is listed in doubt: conservative, never a duplicate. Waiting
        at most ``LAZY_SAVE_SECONDS`` keeps that window short.
        """
        if time.monotonic() - self.saved_at >= LAZY_SAVE_SECONDS:
            self._durable(version)

    def _compact_in_doubt(
        self, *, keep: set[tuple[int, int]] | None = None, drop: set[tuple[int, int]] | None = None
    ) -> None:
        """Rewrite the in-doubt file so it lists exactly the rows still in doubt.

        Rows resent with ``resend_in_doubt`` have an answer now and leave the
        list; ``keep`` (after a full pass) also drops any line the checkpoint
        no longer counts, so the file and the ledger agree.
        """
        self.in_doubt.close()
        path = self.in_doubt.path
        if not path.exists() or path.stat().st_size == 0:
            return
        names = {name: i for i, name in enumerate(self.files.to_list())}

        def wanted(file: str, row: str | int) -> bool:
            key = (names.get(file, -1), int(row))
            return key in keep if keep is not None else key not in (drop or set())

        original = path.read_bytes()
        kept = _filter_records(original, self.in_doubt.format, wanted)
        if kept != original:
            write_atomically(path, kept)
            self.cp.in_doubt_offset = len(kept)

    def _progress_snapshot(self) -> SendProgress | None:
        if self.progress is None:
            return None
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - PROGRESS_WINDOW_SECONDS:
            self.recent.popleft()
        span = min(PROGRESS_WINDOW_SECONDS, max(now - self.started, 1e-6))
        return SendProgress(
            rows_done=self.ledger.read,
            accepted=self.ledger.accepted,
            rejected=self.ledger.rejected_total,
            in_doubt=self.ledger.in_doubt,
            rows_skipped=self.rows_skipped,
            events_per_second=sum(n for _, n in self.recent) / span,
            concurrency=self.concurrency.limit,
            last_latency=self.last_latency,
        )


def _check_stream(rows: pl.DataFrame, expected_seq: int | None, lanes: int) -> None:
    """The prepared stream's contract: contiguous ``_seq``, lanes in range."""
    first, last = int(rows["_seq"][0]), int(rows["_seq"][-1])
    if expected_seq is not None and first != expected_seq:
        raise ValueError(f"prepared stream: _seq jumps from {expected_seq - 1} to {first}")
    if last - first + 1 != rows.height or not rows["_seq"].is_sorted():
        raise ValueError(f"prepared stream: _seq {first}..{last} is not contiguous")
    top = rows["_lane"].max()
    if top is not None and int(top) >= lanes:  # type: ignore[arg-type]
        raise ValueError(f"prepared stream: lane {top} but only {lanes} lanes")


def _count_killed(rows: pl.DataFrame) -> int:
    return int((rows["_origin"] == _KILLED_IN_FLIGHT).sum())


def _filter_records(data: bytes, fmt: str, wanted: Callable[[str, Any], bool]) -> bytes:
    """Keep the records of an NDJSON or CSV record file for which ``wanted(file, row)``.

    Of several records for the same (file, row) only the last is kept.
    """
    if fmt == "csv":
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(reader, None)
        records = [(r[0], r[1], r) for r in reader if len(r) >= 2]
    else:
        lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]
        records = [(p.get("file"), p.get("row"), line) for p, line in zip(parsed, lines, strict=True)]
    last_index = {(f, str(r)): i for i, (f, r, _) in enumerate(records)}
    chosen = [rec for i, (f, r, rec) in enumerate(records) if last_index[(f, str(r))] == i and wanted(f, r)]
    if fmt == "csv":
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        if header is not None:
            writer.writerow(header)
        writer.writerows(chosen)
        return out.getvalue().encode("utf-8")
    return "".join(f"{line}\n" for line in chosen).encode("utf-8")
