"""Diagnoses: when figures differ, the likely cause and the fix, from the pattern of differences."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from ..config import DEFAULT_USER_AGENT
from .expected import Expected
from .result import Diagnosis, TopList, VerifyResult


def diagnose(expected: Expected, result: VerifyResult) -> list[Diagnosis]:
    """Plain explanations of the common ways an import goes wrong, when their signs show."""
    out: list[Diagnosis] = []
    days = [r for r in result.days if r.expected["pageviews"] or r.expected["events"]]
    exp_total = sum(r.expected["pageviews"] + r.expected["events"] for r in result.days)
    found_total = sum(r.found["pageviews"] + r.found["events"] for r in result.days)
    recent = result.recent.get("pageviews", 0) + result.recent.get("events", 0)
    if recent:
        since = dt.datetime.fromtimestamp(result.recent["from_ms"] / 1000, dt.UTC).strftime("%Y-%m-%d")
        strong = exp_total and found_total < 0.5 * exp_total
        text = (
            f"{result.recent['pageviews']:,} pageviews and {result.recent['events']:,} custom events are stored "
            f"after the imported range (since {since}), where the sources have none. Umami stamps an event with "
            "the time it ARRIVES when its payload has no timestamp, a 0, or a value that is not whole unix "
            "seconds, so a historical import sent that way lands 'now', on the day of the import."
        )
        if strong:
            text += (
                f" Inside the range only {found_total:,} of {exp_total:,} expected events are there: this import "
                "(or the tool that made it) most likely sent events without their time. Delete them (Umami: "
                "website settings > Data > Reset, or a new website) and import again with backfill, which "
                "always sends the timestamp."
            )
        else:
            text += (
                " The imported range itself looks complete: if this website also receives live traffic, "
                "those are simply today's visitors; otherwise another tool imported into it without timestamps."
            )
        out.append(Diagnosis("landed_now", "events landing 'now' instead of in the past", text))
    if exp_total and found_total == 0 and not recent:
        out.append(
            Diagnosis(
                "nothing_found",
                "nothing found in the imported range",
                "Umami shows no pageview and no custom event on any imported day. Usual causes: the import "
                "was not run against this --website (or --host); every event was dropped as a bot (Umami "
                "answers 200 and stores nothing when the User-Agent is on its bot list); the website's data "
                "was reset after the import; or, on Umami Cloud without a subscription, the API does not "
                "return data older than about six months.",
            )
        )
    many = [r for r in days if r.expected["visitors"] >= 3 and r.found["pageviews"]]
    one = [r for r in many if r.found["visitors"] <= 1]
    if many and len(one) >= max(1, len(many) // 2):
        out.append(
            Diagnosis(
                "one_session",
                "everything in one session",
                f"On {len(one)} of {len(many)} days where the sources have several visitors, Umami counts a "
                "single visitor. Umami makes a session from the payload's `id`; without one it uses the "
                "sender's IP address and User-Agent with a salt that changes monthly, so everything an import "
                "sends from one machine becomes ONE visitor per month. The events were sent without `id`, or "
                "with the same `id` for everyone (a mapping whose visitor column is constant). backfill always "
                "sends the mapping's visitor as `id`: re-import with a visitor column that identifies people.",
            )
        )
    doubled = [
        r for r in days if r.expected["pageviews"] >= 2 and r.found["pageviews"] >= 1.9 * r.expected["pageviews"]
    ]
    if days and len(doubled) >= max(1, len(days) // 2):
        out.append(
            Diagnosis(
                "duplicates",
                "imported more than once",
                f"On {len(doubled)} of {len(days)} days Umami holds about twice (or more) the expected "
                "pageviews. Umami's API is not idempotent: every resend stores the events again. This happens "
                "with `--restart`, `--resend-in-doubt` after events did land, two imports of overlapping "
                "files or ranges, or an earlier import by another tool. Reset the website's data and import "
                "once.",
            )
        )
    short = [r for r in days if r.found["pageviews"] < r.expected["pageviews"] and "pageviews" in r.differs]
    if short and found_total and not any(d.kind in ("landed_now", "one_session") for d in out):
        missing = sum(r.expected["pageviews"] - r.found["pageviews"] for r in short)
        n_days = f"{len(short)} day{'s' if len(short) > 1 else ''}"
        empty = [r for r in short if r.found["pageviews"] == 0]
        where = ", ".join(r.day.isoformat() for r in short[:5]) + (" ..." if len(short) > 5 else "")
        out.append(
            Diagnosis(
                "missing",
                "pageviews missing",
                f"{missing:,} expected pageviews are not in Umami, on {n_days} ({where}"
                f"{'; ' + str(len(empty)) + ' of them empty' if empty else ''}). Usual causes: the import did "
                "not finish (run the same import command again: it resumes), rows in doubt were not resent "
                "(see the import's in-doubt file), the import ran with other --since/--until/--limit/--shard "
                "or mapping than this verify, or events were deleted in Umami.",
            )
        )
    for name, label in (("os", "OS"), ("browsers", "browser")):
        diagnosis = _same_value(expected, result, name, label)
        if diagnosis:
            out.append(diagnosis)
    location = _location_missing(expected, result)
    if location:
        out.append(location)
    return out


def _top(result: VerifyResult, name: str) -> TopList | None:
    return next((t for t in result.top if t.name == name), None)


def _same_value(expected: Expected, result: VerifyResult, name: str, label: str) -> Diagnosis | None:
    """Every session with the same OS (or browser) while the sources vary."""
    top = _top(result, name)
    if top is None or top.found_total < 10:
        return None
    found = Counter({r.value: r.found for r in top.rows})
    value, count = found.most_common(1)[0] if found else (None, 0)
    if value is None or count < 0.95 * top.found_total:
        return None
    exp = expected.top[name]
    if exp.unpredictable is None:
        total = sum(exp.counts.values())
        varied = total and len(exp.counts) >= 2 and max(exp.counts.values()) < 0.8 * total
        basis = "the sources' values vary"
    else:
        total = sum(expected.user_agents.values())
        varied = total and len(expected.user_agents) >= 2 and max(expected.user_agents.values()) < 0.8 * total
        basis = "the sources' user agents vary"
    if not varied:
        return None
    return Diagnosis(
        f"same_{'os' if name == 'os' else 'browser'}",
        f"every session with the same {label}",
        f"{count:,} of {top.found_total:,} sessions have {label} '{value}' while {basis}. Umami takes a session's "
        f"browser, OS and device from the payload's `browser`/`os`/`device` fields, else from the User-Agent of "
        f"the session's FIRST event. An importer that sends its own User-Agent (e.g. 'Mozilla/5.0 (X11; Linux "
        f"x86_64) ...') for rows without one makes every session 'Linux'. Map the source's user agent "
        f"(`userAgent:`) or its `browser`/`os`/`device` columns; without them backfill sends "
        f"'{DEFAULT_USER_AGENT}', which gives no browser and no OS rather than a wrong one.",
    )


def _location_missing(expected: Expected, result: VerifyResult) -> Diagnosis | None:
    """Expected countries, and none found."""
    exp = expected.top["countries"]
    top = _top(result, "countries")
    # Umami lists no session without a country, so "none found" is an empty list; it means
    # "location missing" only when the pageviews themselves are there.
    found_pageviews = sum(r.found["pageviews"] for r in result.days)
    if top is None or exp.unpredictable is not None or found_pageviews == 0:
        return None
    known = sum(c for v, c in exp.counts.items() if v)
    found_known = sum(r.found for r in top.rows if r.value)
    if known == 0 or found_known > 0.05 * known:
        return None
    return Diagnosis(
        "location_missing",
        "location missing",
        f"The sources give a country for {known:,} sessions, but Umami stores no location for them. Umami has "
        "no payload field for location: it reads it from CDN headers (cf-ipcountry, cf-region-code, "
        "cf-ipcity) that the importer sends with each request (--geo headers/auto), or from a GeoIP lookup of "
        "a payload ip. A reverse proxy or CDN in front of Umami that strips or overwrites those headers, or a "
        "server started with SKIP_LOCATION_HEADERS, drops them silently. Check the proxy (let cf-* headers "
        "through from the importer) or map an `ip` column, and re-import; --geo off sends no location at all.",
    )
