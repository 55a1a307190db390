"""Reading Umami's ``/api/batch`` answers: which element was refused and why, and when a
refusal is the whole run's (a wrong website, a bot User-Agent) rather than its rows'."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .settings import SendSettings

_DB_PARTIAL_NOTE = "Umami may have stored part of it: the session, or the event without its data"


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
        return ElementError(None, f"Umami refused the row: {short(response)}")
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


def short(value: Any, limit: int = 200) -> str:
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
        raise ValueError(f"the answer is not a JSON object: {short(answer)}")
    try:
        size, processed, errors = (int(answer[k]) for k in ("size", "processed", "errors"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the answer lacks size/processed/errors: {short(answer)}") from exc
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
            raise ValueError(f"a detail has no valid index: {short(detail)}")
        rejected[index] = describe_element_error(detail.get("response"))
    # Umami counts a bot drop as processed and leaves no detail; the only trace is a
    # missing "cache" key, and only when every processed element was dropped.
    bot_dropped = []
    if "cache" not in answer and processed > 0:
        bot_dropped = [i for i in range(sent) if i not in rejected]
    website_missing = any(e.website_not_found for e in rejected.values())
    return BatchVerdict(rejected, bot_dropped, website_missing)


def send_answer_as_batch(status: int, body: Any) -> dict[str, Any]:
    """An ``/api/send`` answer, in the shape ``/api/batch`` gives it for a one-element batch.

    Umami's batch endpoint is a loop over its send endpoint that collects the
    answers this way (an error answer becomes ``details[0].response``; a bot's
    ``{"beep": "boop"}`` counts as processed and leaves no ``cache``), so one
    reading serves both endpoints.

    Raises:
        ValueError: a 2xx answer that is neither a stored element (``cache``) nor a bot drop.
    """
    if 200 <= status < 300:
        if isinstance(body, dict) and isinstance(body.get("cache"), str):
            return {"size": 1, "processed": 1, "errors": 0, "details": [], "cache": body["cache"]}
        if body == {"beep": "boop"}:
            return {"size": 1, "processed": 1, "errors": 0, "details": []}
        raise ValueError(f"the answer is not Umami's send answer: {short(body)}")
    return {"size": 1, "processed": 0, "errors": 1, "details": [{"index": 0, "response": body}], "cache": None}


def is_umami_error(body: Any, status: int) -> bool:
    """Whether ``body`` is Umami's own JSON error answer for ``status`` (not a proxy's page)."""
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("status") == status


def website_missing(settings: SendSettings) -> str:
    return f"website {settings.website} does not exist on {settings.host}: check --website / UMAMI_WEBSITE_ID"


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
        return website_missing(settings)
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
