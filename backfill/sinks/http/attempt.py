"""One POST of a batch, classified by what it means for the rows: answered, retried
(provably not processed), too large, in doubt (maybe processed), or refused as a whole."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ...errors import TerminalSendError
from ...throttle import retry_after_seconds
from ...umami.api import RunRefusedError
from .answers import is_umami_error, read_batch_answer, send_answer_as_batch, short, website_missing
from .settings import NO_BATCH_ENDPOINT, SendSettings

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
    """POST a batch to ``/api/batch``: the answer is Umami's batch answer."""
    return _post(client, url, body, settings, headers, "the batch", _classify_response)


def post_element(
    client: httpx.Client, url: str, body: bytes, settings: SendSettings, headers: dict[str, bytes] | None = None
) -> Attempt:
    """POST one element to ``/api/send``; its answer is given in the batch answer's shape
    (see :func:`~.answers.send_answer_as_batch`), so both endpoints are settled alike."""
    return _post(client, url, body, settings, headers, "the row", _classify_send_response)


def _post(
    client: httpx.Client,
    url: str,
    body: bytes,
    settings: SendSettings,
    headers: dict[str, bytes] | None,
    what: str,
    classify: Callable[[httpx.Response, SendSettings, str], Attempt],
) -> Attempt:
    try:
        response = client.post(url, content=body, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return Attempt("retry", f"cannot connect ({_exc_text(exc)})", overloaded=True)
    except (httpx.WriteError, httpx.WriteTimeout) as exc:
        # The body did not fully leave: Umami parses the whole body before storing anything.
        return Attempt("retry", f"the request could not be sent ({_exc_text(exc)})", overloaded=True)
    except httpx.ReadTimeout:
        return Attempt(
            "in_doubt",
            f"in doubt: no answer within {settings.timeout:g} s (--timeout); Umami may have stored {_some(what)}",
            overloaded=True,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return Attempt("refused", f"{url}: {_exc_text(exc)}")
    except httpx.TransportError as exc:
        return Attempt(
            "in_doubt",
            f"in doubt: the connection broke after {what} was sent ({_exc_text(exc)});"
            f" Umami may have stored {_some(what)}",
            overloaded=True,
        )
    except httpx.HTTPError as exc:  # e.g. an answer that cannot be decoded: it did arrive
        return Attempt(
            "in_doubt",
            f"in doubt: the answer could not be read ({_exc_text(exc)}); Umami may have stored {_some(what)}",
            not_umami=True,
        )
    return classify(response, settings, url)


def _some(what: str) -> str:
    return "all, some or none of the batch" if what == "the batch" else "the row or not"


def _classify_response(response: httpx.Response, settings: SendSettings, url: str) -> Attempt:
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
        retry_after = retry_after_seconds(response.headers.get("Retry-After"), MAX_RETRY_AFTER)
        return Attempt("retry", f"HTTP {status}", status, retry_after=retry_after, overloaded=True)
    if status >= 500:
        return Attempt(
            "in_doubt",
            f"in doubt: HTTP {status} for the whole batch; Umami may have stored all, some or none of it",
            status,
            overloaded=True,
        )
    return Attempt("refused", _refusal_message(response, settings, url), status)


def _classify_send_response(response: httpx.Response, settings: SendSettings, url: str) -> Attempt:
    """``/api/send`` answers each element with its own status: 200 stored (or dropped as a bot),
    400 refused with zod's reasons or "Website not found.", 500 refused by the database
    (Umami's JSON error: the session, or the event without its data, may be stored)."""
    status = response.status_code
    if status in (200, 400, 500):
        try:
            body = response.json()
        except ValueError:
            body = None
        if status == 200 or is_umami_error(body, status):
            try:
                return Attempt("answered", "", status, send_answer_as_batch(status, body))
            except ValueError:
                return Attempt(
                    "in_doubt",
                    f"in doubt: HTTP 200 that is not Umami's answer: {short(response.text)}",
                    status,
                    not_umami=True,
                )
    if status == 500:
        return Attempt(
            "in_doubt",
            f"in doubt: HTTP 500 that is not Umami's own answer: {short(response.text)};"
            " Umami may have stored the row or not",
            status,
            overloaded=True,
        )
    return _classify_response(response, settings, url)


def _refusal_message(response: httpx.Response, settings: SendSettings, url: str) -> str:
    status = response.status_code
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message") or "")
    except ValueError:
        pass
    if message == "Website not found.":
        return website_missing(settings)
    path = url.rsplit("/", 2)[-2:]
    endpoint = "/" + "/".join(path)
    if status == 401:
        return (
            f"{url} answered 401: {endpoint} needs no login, so a proxy in front of Umami asks"
            f" for credentials; let {endpoint} through it or use Umami's own address (--host)"
        )
    if status == 403:
        return (
            f"{url} answered 403: a proxy or firewall refuses the request, or Umami's IGNORE_IP"
            " lists this machine's address; allow it, or send from another machine"
        )
    if status in NO_BATCH_ENDPOINT and endpoint == "/api/batch":
        return (
            f"{url} answered HTTP {status} ({response.reason_phrase or 'no such endpoint'}): this server has"
            " no batch endpoint (Umami Cloud, or Umami older than 2.17), or --host is not Umami;"
            " pass --endpoint send (or auto) to send one row per request through /api/send"
        )
    if status in NO_BATCH_ENDPOINT:
        return (
            f"{url} answered HTTP {status} ({response.reason_phrase or 'no such endpoint'}): --host does not"
            " point at an Umami collection API (check the address)"
        )
    if 300 <= status < 400:
        where = response.headers.get("Location", "?")
        return f"{url} redirects to {where}: pass the final address as --host"
    return f"{url} answered HTTP {status}: {short(response.text)}"


def refuses_the_run(attempt: Attempt, sent: int, endpoint: str = "batch") -> bool:
    """An answer after which no further batch may be sent (checked before the slot is freed).

    A whole batch dropped as bots stops the run; through ``/api/send`` a bot drop is one row's.
    """
    if attempt.kind == "refused":
        return True
    if attempt.kind != "answered":
        return False
    try:
        verdict = read_batch_answer(attempt.answer, sent)
    except ValueError:
        return True
    return (bool(verdict.bot_dropped) and endpoint == "batch") or verdict.website_not_found


def http_refusal(attempt: Attempt) -> TerminalSendError:
    """The error for a request refused as a whole. A wrong address or endpoint (404, 405,
    501, a redirect) or an unknown website is the run's own value: a corrected command is
    needed. A proxy or firewall (401, 403) may be fixed outside, after which the same
    command resumes."""
    status = attempt.status
    needs_change = status in NO_BATCH_ENDPOINT or (status is not None and 300 <= status < 400)
    if needs_change or "does not exist on" in attempt.detail:
        return RunRefusedError(attempt.detail)
    return TerminalSendError(attempt.detail)


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
