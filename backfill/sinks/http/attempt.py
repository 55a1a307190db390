"""One POST of a batch, classified by what it means for the rows: answered, retried
(provably not processed), too large, in doubt (maybe processed), or refused as a whole."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ...errors import TerminalSendError
from ...umami.api import RunRefusedError
from .answers import read_batch_answer, short, website_missing
from .settings import SendSettings

#: How long a retry may wait for a server's Retry-After at most (seconds).
MAX_RETRY_AFTER = 900.0


@dataclass(frozen=True)
class Attempt:
    """The result of one POST, classified by what it means for the batch."""

    kind: str  # answered | retry | too_large | in_doubt | refused
    detail: str
    status: int | None = None
    answer: Any = None
    retry_after: float | None = None
    overloaded: bool = False
    not_umami: bool = False  # a 2xx answer that is not Umami's: stop before more go in doubt


def post_batch(
    client: httpx.Client, url: str, body: bytes, settings: SendSettings, headers: dict[str, bytes] | None = None
) -> Attempt:
    try:
        response = client.post(url, content=body, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return Attempt("retry", f"cannot connect ({_exc_text(exc)})", overloaded=True)
    except (httpx.WriteError, httpx.WriteTimeout) as exc:
        # The body did not fully leave: Umami parses the whole array before storing anything.
        return Attempt("retry", f"the request could not be sent ({_exc_text(exc)})", overloaded=True)
    except httpx.ReadTimeout:
        return Attempt(
            "in_doubt",
            f"in doubt: no answer within {settings.timeout:g} s (--timeout);"
            " Umami may have stored all, some or none of the batch",
            overloaded=True,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return Attempt("refused", f"{url}: {_exc_text(exc)}")
    except httpx.TransportError as exc:
        return Attempt(
            "in_doubt",
            f"in doubt: the connection broke after the batch was sent ({_exc_text(exc)});"
            " Umami may have stored all, some or none of it",
            overloaded=True,
        )
    except httpx.HTTPError as exc:  # e.g. an answer that cannot be decoded: it did arrive
        return Attempt(
            "in_doubt",
            f"in doubt: the answer could not be read ({_exc_text(exc)});"
            " Umami may have stored all, some or none of the batch",
            not_umami=True,
        )
    return _classify_response(response, settings)


def _classify_response(response: httpx.Response, settings: SendSettings) -> Attempt:
    status = response.status_code
    if 200 <= status < 300:
        try:
            answer = response.json()
        except ValueError:
            return Attempt(
                "in_doubt",
                f"in doubt: HTTP {status} with a body that is not JSON: {short(response.text)}",
                status,
                not_umami=True,
            )
        return Attempt("answered", "", status, answer)
    if status == 413:
        return Attempt("too_large", "HTTP 413 (request body too large)", status)
    if status in (429, 502, 503):
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        return Attempt("retry", f"HTTP {status}", status, retry_after=retry_after, overloaded=True)
    if status >= 500:
        return Attempt(
            "in_doubt",
            f"in doubt: HTTP {status} for the whole batch; Umami may have stored all, some or none of it",
            status,
            overloaded=True,
        )
    return Attempt("refused", _refusal_message(response, settings), status)


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
        return website_missing(settings)
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
    return f"{url} answered HTTP {status}: {short(response.text)}"


def refuses_the_run(attempt: Attempt, sent: int) -> bool:
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


def http_refusal(attempt: Attempt) -> TerminalSendError:
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
