"""A fake Google: the OAuth 2.0 token endpoint and the Analytics Data API v1beta ``runReport``.

A real HTTP server on 127.0.0.1, shaped after Google's REST reference:

* ``POST /token``: the JWT-bearer grant of a service account (the assertion's RS256
  signature is checked with the key's public half, and its ``iss``, ``aud``,
  ``scope`` and ``exp``) and the ``refresh_token`` grant of an authorized user;
  answers ``{"access_token", "expires_in", "token_type"}``, or
  ``{"error": "invalid_grant", ...}`` with 400.
* ``POST /v1beta/properties/{id}:runReport``: ``RunReportRequest`` (one date range,
  dimensions, metrics, ``limit``/``offset`` as strings, ``returnPropertyQuota``) ->
  ``RunReportResponse`` (``dimensionHeaders``, ``metricHeaders`` with ``type``,
  ``rows`` of string values, ``rowCount``, ``metadata`` with ``currencyCode``,
  ``timeZone``, ``subjectToThresholding``, ``dataLossFromOtherRow``,
  ``samplingMetadatas``; ``propertyQuota`` when asked), errors as
  ``{"error": {"code", "message", "status"}}``.

Quirks a test switches on: thresholding (rows under a user threshold withheld),
an ``(other)`` row past a cardinality limit, sampling, a quota of tokens per day
and per hour, a one-off 429 / 500, and access tokens that expire after N calls.

The data: ``make_days`` draws consistent per-day truth (``DayTruth``) from a seed;
every report is computed from it, so a test can compare what Umami stores with it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.json_server import JsonServer

SCOPE = "https://www.googleapis.com/auth/analytics.readonly"
#: What google-auth (and Google's token endpoint) use as a service account assertion's audience.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"

COUNTRIES = {"DE": ("Berlin", "Berlin"), "US": ("California", "San Francisco"), "FR": ("Île-de-France", "Paris")}
#: (deviceCategory, operatingSystem, operatingSystemVersion, browser) -> Umami's browser for it
TECHNOLOGY = {
    ("desktop", "Windows", "10", "Chrome"): "chrome",
    ("desktop", "Windows", "7", "Firefox"): "firefox",
    ("desktop", "Macintosh", "14.1", "Safari"): "safari",
    ("mobile", "iOS", "17.1", "Safari"): "ios",
    ("mobile", "Android", "14", "Chrome"): "chrome",
    ("tablet", "iOS", "17.1", "Chrome"): "crios",
}
LANGUAGES = ("en-us", "de-de", "fr-fr")
SCREENS = ("1920x1080", "390x844", "1440x900")
PAGES = ("/", "/pricing", "/blog/launch", "/docs", "/contact", "/about", "/jobs", "/legal")


@dataclass
class DayTruth:
    """What GA4 knows of one day; every report of the day is a view of it."""

    day: dt.date
    users: int
    sessions: int
    pageviews: int
    engaged: int
    revenue: float
    transactions: int
    pages: list[tuple[str, str, str, int]]  # (host, path, title, views)
    sources: list[tuple[str, str, int]]  # (source, medium, sessions)
    events: list[tuple[str, int]]  # (name, count), GA's automatic ones included
    countries: list[tuple[str, int]]  # (countryId, users)
    places: list[tuple[str, str, str, int]]  # (countryId, region, city, users)
    breakdowns: dict[str, list[tuple[tuple[str, ...], int]]] = field(default_factory=dict)  # dimension -> rows

    @property
    def bounces(self) -> int:
        return self.sessions - self.engaged


def _split(rnd: random.Random, total: int, parts: int) -> list[int]:
    """``total`` over ``parts`` values, each >= 0, at random."""
    cuts = sorted(rnd.randint(0, total) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def make_days(seed: int, first: dt.date, n: int) -> list[DayTruth]:
    """Consistent days: users <= sessions <= pageviews, bounces possible, breakdowns adding up."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        day = first + dt.timedelta(days=i)
        users = rnd.randint(6, 14)
        sessions = users + rnd.randint(0, 6)
        pageviews = sessions * 2 + rnd.randint(0, 10)
        engaged = rnd.randint(max(1, sessions - (pageviews - sessions)), sessions - 1)  # bounces feasible
        views = _split(rnd, pageviews - len(PAGES), len(PAGES))
        pages = [("www.example.org", p, f"Title of {p}", v + 1) for p, v in zip(PAGES, views, strict=True)]
        src = _split(rnd, sessions, 3)
        sources = [("google", "organic", src[0]), ("(direct)", "(none)", src[1]), ("news.example", "referral", src[2])]
        purchases = rnd.randint(0, 2)
        events = [
            ("page_view", pageviews),
            ("session_start", sessions),
            ("click", rnd.randint(1, 5)),
            ("file_download", rnd.randint(0, 2)),
            ("purchase", purchases),
        ]
        per_country = _split(rnd, users, len(COUNTRIES))
        countries = list(zip(COUNTRIES, per_country, strict=True))
        places = []
        for cc, u in countries:
            region, city = COUNTRIES[cc]
            if u:
                places.append((cc, region, city, u - (1 if u > 2 else 0)))  # one user without a city
        truth = DayTruth(
            day=day,
            users=users,
            sessions=sessions,
            pageviews=pageviews,
            engaged=engaged,
            revenue=round(rnd.uniform(10, 200), 2) * purchases,
            transactions=purchases,
            pages=pages,
            sources=sources,
            events=[(n, c) for n, c in events if c],
            countries=[(cc, u) for cc, u in countries if u],
            places=[p for p in places if p[3]],
        )
        for dim, values in (("languageCode", LANGUAGES), ("screenResolution", SCREENS), ("technology", TECHNOLOGY)):
            counts = _split(rnd, users, len(values))
            truth.breakdowns[dim] = [
                ((v,) if isinstance(v, str) else v, c) for v, c in zip(values, counts, strict=True) if c
            ]
        out.append(truth)
    return out


# --------------------------------------------------------------------------- reports from the truth

_METRIC_TYPES = {"purchaseRevenue": "TYPE_CURRENCY"}


def _table(truth: DayTruth, dims: list[str], metrics: list[str]) -> list[tuple[list[str], list[str]]]:
    """(dimension values, metric values) rows of one report for one day."""
    date = f"{truth.day:%Y%m%d}"
    rest = [d for d in dims if d != "date"]

    def row(values: dict[str, str], metric: dict[str, Any]) -> tuple[list[str], list[str]]:
        return [date if d == "date" else values[d] for d in dims], [_fmt(metric.get(m, 0)) for m in metrics]

    totals = {
        "totalUsers": truth.users,
        "activeUsers": truth.users,
        "sessions": truth.sessions,
        "screenPageViews": truth.pageviews,
        "engagedSessions": truth.engaged,
        "purchaseRevenue": truth.revenue,
        "transactions": truth.transactions,
    }
    if not rest:
        return [row({}, totals)]
    key = tuple(rest)
    if key == ("hostName", "pagePath", "pageTitle"):
        return [
            row({"hostName": h, "pagePath": p, "pageTitle": t}, {"screenPageViews": v}) for h, p, t, v in truth.pages
        ]
    if key == ("sessionSource", "sessionMedium"):
        return [row({"sessionSource": s, "sessionMedium": m}, {"sessions": n}) for s, m, n in truth.sources if n]
    if key == ("eventName",):
        return [row({"eventName": n}, {"eventCount": c}) for n, c in truth.events]
    if key == ("countryId",):
        return [row({"countryId": cc}, {"totalUsers": u}) for cc, u in truth.countries]
    if key == ("countryId", "region", "city"):
        return [row({"countryId": cc, "region": r, "city": c}, {"totalUsers": u}) for cc, r, c, u in truth.places]
    if key == ("deviceCategory", "operatingSystem", "operatingSystemVersion", "browser"):
        return [
            row(dict(zip(key, combo, strict=True)), {"totalUsers": u}) for combo, u in truth.breakdowns["technology"]
        ]
    if len(rest) == 1 and rest[0] in truth.breakdowns:
        return [row({rest[0]: v[0]}, {"totalUsers": u}) for v, u in truth.breakdowns[rest[0]]]
    raise KeyError(f"the fake has no report for dimensions {rest}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


# --------------------------------------------------------------------------- the server


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass
class Quirks:
    """What the fake does to its answers (set by a test before or between runs)."""

    thresholded: dict[dt.date, int] = field(default_factory=dict)  # day -> users below which rows are withheld
    other_row: dict[dt.date, int] = field(default_factory=dict)  # day -> rows kept before "(other)" (pages)
    sampled: set[dt.date] = field(default_factory=set)
    tokens_per_request: int = 7
    tokens_per_day: int = 200_000
    tokens_per_hour: int = 40_000
    token_uses: int | None = None  # an access token stops working after this many API calls
    fail_once: list[int] = field(default_factory=list)  # statuses answered to the next calls, once each
    invalid: set[str] = field(default_factory=set)  # dimension names answered with 400 INVALID_ARGUMENT
    hour_seconds: float = 3600.0  # how long the fake's "hour" lasts (its hourly tokens refresh after it)


class FakeGoogle(JsonServer):
    """Token endpoint + Data API on 127.0.0.1; ``with FakeGoogle(days) as google: google.url``."""

    def __init__(self, days: list[DayTruth], *, property_id: str = "123456789", public_key: Any = None) -> None:
        self.days = {d.day: d for d in days}
        self.property_id = property_id
        self.public_key = public_key  # the service account's, to check JWT signatures
        self.client_email = "backfill@project.iam.gserviceaccount.com"
        self.refresh_tokens = {"1//refresh-token-secret"}
        self.client_secret = "client-secret-value"
        self.quirks = Quirks()
        self.tokens: dict[str, int] = {}  # access token -> API calls made with it
        self.issued: list[str] = []
        self.calls: list[dict[str, Any]] = []  # every runReport body answered 200
        self.token_grants: list[str] = []
        self.consumed_today = 0
        self.consumed_hour = 0
        self.hour_started = time.monotonic()
        self.lock = threading.Lock()

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def respond(self, verb: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        return self.handle(path, headers, body)

    def new_day(self) -> None:
        """Google's midnight Pacific: the daily (and hourly) tokens are whole again."""
        with self.lock:
            self.consumed_today = self.consumed_hour = 0

    # ----------------------------------------------------------------- requests

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if path == "/token":
            return self._token(body)
        prefix = f"/v1beta/properties/{self.property_id}:runReport"
        if not path.startswith("/v1beta/properties/"):
            return 404, _error(404, "NOT_FOUND", f"Method not found: {path}")
        if path != prefix:
            return 403, _error(403, "PERMISSION_DENIED", "User does not have sufficient permissions for this property.")
        return self._run_report(headers, body)

    def _token(self, body: bytes) -> tuple[int, dict[str, Any]]:
        form = dict(urllib.parse.parse_qsl(body.decode()))
        grant = form.get("grant_type", "")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            why = self._bad_assertion(form.get("assertion", ""))
        elif grant == "refresh_token":
            ok = form.get("refresh_token") in self.refresh_tokens and form.get("client_secret") == self.client_secret
            why = None if ok else "Token has been expired or revoked."
        else:
            why = f"unsupported grant_type {grant!r}"
        if why:
            return 400, {"error": "invalid_grant", "error_description": why}
        with self.lock:
            token = f"ya29.fake-access-{len(self.issued) + 1}-{random.randrange(10**9)}"
            self.issued.append(token)
            self.tokens[token] = 0
            self.token_grants.append(grant)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _bad_assertion(self, assertion: str) -> str | None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            head, payload, signature = assertion.split(".")
            claims = json.loads(_b64(payload))
            if self.public_key is not None:
                self.public_key.verify(
                    _b64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
                )
        except Exception:
            return "Invalid JWT Signature."
        if claims.get("iss") != self.client_email or claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return "Invalid JWT: iss or aud"
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: scope"
        if claims.get("exp", 0) < time.time():
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        return None

    def _run_report(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        token = (headers.get("Authorization") or headers.get("authorization") or "").removeprefix("Bearer ")
        q = self.quirks
        with self.lock:
            if token not in self.tokens or (q.token_uses is not None and self.tokens[token] >= q.token_uses):
                return 401, _error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                    "cookie or other valid authentication credential.",
                )
            self.tokens[token] += 1
            if time.monotonic() - self.hour_started >= q.hour_seconds:
                self.consumed_hour, self.hour_started = 0, time.monotonic()
            if q.fail_once:
                code = q.fail_once.pop(0)
                if code == 429:
                    return 429, _error(429, "RESOURCE_EXHAUSTED", "Exhausted concurrent requests quota.")
                return code, _error(code, "INTERNAL", "Internal error encountered.")
            if self.consumed_today + q.tokens_per_request > q.tokens_per_day:
                return 429, _error(
                    429, "RESOURCE_EXHAUSTED", "Exhausted property tokens per day for a project per property."
                )
            if self.consumed_hour + q.tokens_per_request > q.tokens_per_hour:
                return 429, _error(
                    429, "RESOURCE_EXHAUSTED", "Exhausted property tokens per hour for a project per property."
                )
        request = json.loads(body)
        (dates,) = request["dateRanges"]
        day = dt.date.fromisoformat(dates["startDate"])
        if dates["endDate"] != dates["startDate"]:
            return 400, _error(400, "INVALID_ARGUMENT", "the fake answers one day per request")
        dims = [d["name"] for d in request.get("dimensions", [])]
        metrics = [m["name"] for m in request.get("metrics", [])]
        for name in dims:
            if name in q.invalid:
                return 400, _error(400, "INVALID_ARGUMENT", f"Field {name} is not a valid dimension.")
        truth = self.days.get(day)
        try:
            rows = _table(truth, dims, metrics) if truth else []
        except KeyError as exc:
            return 400, _error(400, "INVALID_ARGUMENT", str(exc))
        metadata: dict[str, Any] = {"currencyCode": "EUR", "timeZone": "Europe/Berlin"}
        threshold = q.thresholded.get(day)
        if threshold and any(d in dims for d in ("countryId", "city", "region")):
            rows = [r for r in rows if int(r[1][0]) >= threshold]
            metadata["subjectToThresholding"] = True
        keep = q.other_row.get(day)
        if keep is not None and "pagePath" in dims and len(rows) > keep:
            tail = rows[keep:]
            other = [
                ["(other)" if d != "date" else f"{day:%Y%m%d}" for d in dims],
                [_fmt(sum(int(r[1][i]) for r in tail)) for i in range(len(metrics))],
            ]
            rows = [*rows[:keep], (other[0], other[1])]
            metadata["dataLossFromOtherRow"] = True
        if day in q.sampled:
            metadata["samplingMetadatas"] = [{"samplesReadCount": "1000", "samplingSpaceSize": "5000"}]
        offset, limit = int(request.get("offset", 0)), int(request.get("limit", 10000))
        page = rows[offset : offset + limit]
        with self.lock:
            self.consumed_today += q.tokens_per_request
            self.consumed_hour += q.tokens_per_request
            self.calls.append(request)
            left_day, left_hour = q.tokens_per_day - self.consumed_today, q.tokens_per_hour - self.consumed_hour
        answer: dict[str, Any] = {
            "dimensionHeaders": [{"name": d} for d in dims],
            "metricHeaders": [{"name": m, "type": _METRIC_TYPES.get(m, "TYPE_INTEGER")} for m in metrics],
            "rows": [
                {"dimensionValues": [{"value": v} for v in d], "metricValues": [{"value": v} for v in m]}
                for d, m in page
            ],
            "rowCount": len(rows),
            "metadata": metadata,
            "kind": "analyticsData#runReport",
        }
        if not page:
            del answer["rows"]
        if request.get("returnPropertyQuota"):
            answer["propertyQuota"] = {
                "tokensPerDay": {"consumed": q.tokens_per_request, "remaining": left_day},
                "tokensPerHour": {"consumed": q.tokens_per_request, "remaining": left_hour},
                "concurrentRequests": {"consumed": 0, "remaining": 10},
                "serverErrorsPerProjectPerHour": {"consumed": 0, "remaining": 10},
                "potentiallyThresholdedRequestsPerHour": {"consumed": 0, "remaining": 120},
                "tokensPerProjectPerHour": {"consumed": q.tokens_per_request, "remaining": left_hour},
            }
        return 200, answer


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def service_account_key(token_uri: str, client_email: str) -> tuple[dict[str, Any], Any]:
    """A fresh service-account key file's content (pointing at ``token_uri``) and its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "backfill-test",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return info, key.public_key()
