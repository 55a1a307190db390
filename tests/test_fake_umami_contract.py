"""Keep the fake Umami honest: replay every case recorded on a live Umami 3.1.

The end-to-end tests trust ``tests/fake_umami.py`` to refuse, drop and
half-store exactly what a real server does. These tests replay the 44 recorded
cases (request, status, answer, stored rows) against it, field by field, and
exercise each injected fault from a plain httpx client, so that a change to the
fake that drifts from the recordings fails here rather than in an import.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_umami import STACK_TRACE, FakeUmami

CASES_FILE = Path(__file__).parent / "data" / "umami_cases.json"
RECORDING = json.loads(CASES_FILE.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = RECORDING["cases"]
DEFAULT_UA: str = RECORDING["default_user_agent"]
BIG_BATCH = "<array of 600 pageviews>"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
TABLES = ("sessions", "events", "event_data", "revenue", "session_data")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUmami]:
    with FakeUmami() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: FakeUmami) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10, headers={"User-Agent": DEFAULT_UA}) as c:
        yield c


@pytest.fixture
def fresh() -> Iterator[FakeUmami]:
    """A server of its own, for tests that break connections or change knobs."""
    with FakeUmami() as srv:
        yield srv


def _pageview(site: str, i: int, **extra: Any) -> dict[str, Any]:
    payload = {
        "website": site,
        "hostname": "example.com",
        "url": f"/big/{i}",
        "id": f"c90146-big{i}",
        "timestamp": 1709280000,
    }
    payload.update(extra)
    return {"type": "event", "payload": payload}


def _substitute(obj: Any, site: str) -> Any:
    if obj == "<uuid>":
        return site
    if isinstance(obj, dict):
        return {k: _substitute(v, site) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, site) for v in obj]
    return obj


def _assert_shape(actual: Any, expected: Any, where: str) -> None:
    """Equal, except the recording's placeholders, which only fix a type."""
    if expected == "<uuid>":
        assert isinstance(actual, str) and UUID_RE.match(actual), f"{where}: {actual!r}"
    elif expected == "<token>":
        assert isinstance(actual, str) and actual, f"{where}: {actual!r}"
    elif expected == "<several KB of stack trace>":
        assert isinstance(actual, str) and len(actual) >= 2048, f"{where}: short stack"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r}"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            _assert_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_shape(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _canon(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def _project(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    return [{k: r.get(k) for k in keys} for r in rows]


def _counts(server: FakeUmami) -> tuple[int, ...]:
    return tuple(len(getattr(server, t)()) for t in TABLES)


def _check_created_now(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        ts = time.mktime(time.strptime(row.pop("created_at"), "%Y-%m-%dT%H:%M:%SZ"))
        assert abs(ts - time.mktime(time.gmtime())) < 60


def _check_table(
    name: str,
    actual: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    *,
    subset: bool,
    now_volatile: bool,
) -> None:
    if not expected:
        assert actual == [], f"{name}: nothing should be stored, got {actual}"
        return
    keys = [k for k in expected[0] if k != "visit_no"]
    got = _project(actual, keys)
    want = [{k: r[k] for k in keys} for r in expected]
    if now_volatile and "created_at" in keys:
        _check_created_now(got)
        for r in want:
            r.pop("created_at")
    if subset:
        canon = {_canon(r) for r in got}
        missing = [r for r in want if _canon(r) not in canon]
        assert not missing, f"{name}: missing {missing}"
        return
    assert sorted(map(_canon, got)) == sorted(map(_canon, want)), name
    if name == "events":
        # visit_no only says which events share a visit: compare the partitions
        order_got = sorted(range(len(got)), key=lambda i: _canon(got[i]))
        order_want = sorted(range(len(want)), key=lambda i: _canon(want[i]))
        pairs = [(actual[g]["visit_id"], expected[w]["visit_no"]) for g, w in zip(order_got, order_want, strict=True)]
        for a_visit, e_visit in pairs:
            for b_visit, f_visit in pairs:
                assert (a_visit == b_visit) == (e_visit == f_visit), "events: visit split"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_recorded_case(case: dict[str, Any], server: FakeUmami, client: httpx.Client) -> None:
    """One recorded request: same status, same answer, same rows stored."""
    site = str(uuid.uuid4())
    unknown_site = case["response"].get("error", {}).get("message") == "Website not found."
    if not unknown_site:
        server.add_website(site)
    if case["request_body"] == BIG_BATCH:
        body: Any = [_pageview(site, i) for i in range(600)]
    else:
        body = _substitute(case["request_body"], site)
    before = _counts(server)

    resp = client.post(
        case["endpoint"],
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **case["request_headers"]},
    )

    assert resp.status_code == case["status"], resp.text[:500]
    answer = resp.json()
    _assert_shape(answer, case["response"], "response")
    stored = case["stored"]
    if stored is None:
        assert _counts(server) == before
        return
    payload = body.get("payload", {}) if isinstance(body, dict) else {}
    now_volatile = isinstance(body, dict) and "timestamp" not in payload
    subset = case["request_body"] == BIG_BATCH
    for table in TABLES:
        rows = getattr(server, table)(site)
        if subset:
            assert len(rows) == (600 if table in ("sessions", "events") else 0), table
        _check_table(table, rows, stored[table], subset=subset, now_volatile=now_volatile)
    if case["endpoint"] == "/api/send" and "sessionId" in answer:
        assert {s["session_id"] for s in server.sessions(site)} == {answer["sessionId"]}
        assert {e["visit_id"] for e in server.events(site)} <= {answer["visitId"]}


def test_recording_is_complete() -> None:
    assert len(CASES) == 44
    assert DEFAULT_UA == "Mozilla/5.0 umami-backfill/0.1"


def test_stack_trace_is_several_kb() -> None:
    assert len(STACK_TRACE) > 4000


# --------------------------------------------------------------------------- beyond the recordings


def test_cache_header_keeps_a_visit_across_the_hour(fresh: FakeUmami) -> None:
    """Contract §10: first event via /api/send, the rest as one batch with its token."""
    site = fresh.add_website()
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        first = c.post("/api/send", json=_pageview(site, 0, id="v", timestamp=1709290200)).json()
        rest = [_pageview(site, i, id="v", timestamp=t) for i, t in ((1, 1709291100), (2, 1709292000))]
        out = c.post("/api/batch", json=rest, headers={"x-umami-cache": first["cache"]}).json()
        assert out["errors"] == 0
        assert {e["visit_id"] for e in fresh.events(site)} == {first["visitId"]}
        # without the header the hour boundary (10:50, 11:05) splits the visit
        split = [_pageview(site, 3, id="w", timestamp=t) for t in (1709290200, 1709291100)]
        c.post("/api/batch", json=split)
    assert len({e["visit_id"] for e in fresh.events(site) if e["distinct_id"] == "w"}) == 2


def test_batch_with_cdn_headers_stores_their_location(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    headers = {
        "User-Agent": DEFAULT_UA,
        "cf-connecting-ip": "203.0.113.9",
        "cf-ipcountry": "BR",
        "cf-region-code": "SP",
        "cf-ipcity": "São Paulo".encode(),  # raw UTF-8 bytes, read as latin-1 by the server
    }
    with httpx.Client(base_url=fresh.url) as c:
        r = c.post("/api/batch", json=[_pageview(site, i) for i in range(2)], headers=headers)
    assert r.json()["errors"] == 0
    locs = {(s["country"], s["region"], s["city"]) for s in fresh.sessions(site)}
    assert locs == {("BR", "BR-SP", "São Paulo")}


def test_session_keeps_its_first_event(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        c.post("/api/send", json=_pageview(site, 1, id="s", os="Linux", screen="2560x1440"))
        c.post("/api/send", json=_pageview(site, 2, id="s", os="Mac OS", screen="1280x720"))
    (session,) = fresh.sessions(site)
    assert (session["os"], session["screen"], session["device"]) == (
        "Linux",
        "2560x1440",
        "desktop",
    )
    assert len(fresh.events(site)) == 2


def test_without_id_one_session_per_month(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    events = [
        {"type": "event", "payload": {"website": site, "url": f"/{i}", "timestamp": ts}}
        for i, ts in enumerate((1709280000, 1709366400, 1711929600))  # Mar 1, Mar 2, Apr 1
    ]
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        c.post("/api/batch", json=events)
    assert len(fresh.sessions(site)) == 2


def test_bot_check_can_be_disabled() -> None:
    with FakeUmami(disable_bot_check=True) as srv:
        site = srv.add_website()
        r = httpx.post(f"{srv.url}/api/send", json=_pageview(site, 1), headers={"User-Agent": "curl/8.0"})
        assert "sessionId" in r.json()
        assert srv.sessions(site)[0]["browser"] == "curl"


def test_login_website_and_stats(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    t0 = 1709280000
    batch = [
        _pageview(site, 0, id="a", timestamp=t0, url="/home"),
        _pageview(site, 1, id="a", timestamp=t0 + 300, name="signup"),
        _pageview(site, 2, id="a", timestamp=t0 + 600, url="/pricing"),
        _pageview(site, 3, id="b", timestamp=t0 + 60, url="/home"),
        _pageview(site, 4, id="b", timestamp=t0 + 120, name="signup"),
        _pageview(site, 5, id="c", timestamp=t0 + 60, name="signup"),
    ]
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        assert c.post("/api/batch", json=batch).json()["errors"] == 0
        assert c.get(f"/api/websites/{site}").status_code == 401
        bad = c.post("/api/auth/login", json={"username": "admin", "password": "nope"})
        assert bad.status_code == 401
        login = c.post("/api/auth/login", json={"username": "admin", "password": "umami"})
        auth = {"Authorization": f"Bearer {login.json()['token']}"}
        assert c.get(f"/api/websites/{site}", headers=auth).json()["id"] == site
        assert c.get(f"/api/websites/{uuid.uuid4()}", headers=auth).status_code == 404
        rng = {"startAt": t0 * 1000, "endAt": (t0 + 3600) * 1000}
        stats = c.get(f"/api/websites/{site}/stats", params=rng, headers=auth).json()
        paths = c.get(f"/api/websites/{site}/metrics", params={**rng, "type": "path"}, headers=auth).json()
        names = c.get(f"/api/websites/{site}/metrics", params={**rng, "type": "event"}, headers=auth).json()
    assert {k: stats[k] for k in ("pageviews", "visitors", "visits", "bounces", "totaltime")} == {
        "pageviews": 3,
        "visitors": 2,
        "visits": 2,
        "bounces": 1,
        "totaltime": 600,
    }
    assert paths == [{"x": "/home", "y": 2}, {"x": "/pricing", "y": 1}]
    assert names == [{"x": "signup", "y": 3}]


def test_api_key_header() -> None:
    with FakeUmami(api_key="k-123") as srv:
        site = srv.add_website()
        ok = httpx.get(f"{srv.url}/api/websites/{site}", headers={"x-umami-api-key": "k-123"})
        bad = httpx.get(f"{srv.url}/api/websites/{site}", headers={"x-umami-api-key": "nope"})
    assert (ok.status_code, bad.status_code) == (200, 401)


# --------------------------------------------------------------------------- faults


def test_rate_limit_then_recover(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    fresh.faults.rate_limit(times=2, retry_after=3)
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        answers = [c.post("/api/batch", json=[_pageview(site, 1)]) for _ in range(3)]
    assert [r.status_code for r in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3"
    assert len(fresh.events(site)) == 1
    assert [e["status"] for e in fresh.request_log] == [429, 429, 200]
    assert [e["elements"] for e in fresh.request_log] == [1, 1, 1]


def test_service_unavailable_once(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    fresh.faults.unavailable(times=1)
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        first = c.post("/api/batch", json=[_pageview(site, 1)])
        second = c.post("/api/batch", json=[_pageview(site, 1)])
    assert (first.status_code, second.status_code) == (503, 200)
    assert "<html>" in first.text
    assert len(fresh.events(site)) == 1


def test_fault_skip_hits_a_chosen_request(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    fresh.faults.unavailable(times=1, skip=2)
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        codes = [c.post("/api/batch", json=[_pageview(site, i)]).status_code for i in range(4)]
    assert codes == [200, 200, 503, 200]


def test_body_too_large_and_element_cap(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    fresh.faults.max_body_bytes = 2000
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        big = c.post("/api/batch", json=[_pageview(site, i) for i in range(50)])
        assert big.status_code == 413
        assert c.post("/api/batch", json=[_pageview(site, 1)]).status_code == 200
        fresh.faults.max_body_bytes = None
        fresh.faults.max_batch_elements = 500
        capped = c.post("/api/batch", json=[_pageview(site, i) for i in range(501)])
    assert capped.status_code == 400
    assert capped.json()["error"]["errors"] == ["Too big: expected array to have <=500 items"]
    assert len(fresh.events(site)) == 1


def test_reset_after_k_stores_exactly_k(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    fresh.faults.reset_after(3)
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        with pytest.raises(httpx.ReadError) as caught:
            c.post("/api/batch", json=[_pageview(site, i) for i in range(10)])
        assert "reset" in str(caught.value).lower()
        assert sorted(e["url_path"] for e in fresh.events(site)) == ["/big/0", "/big/1", "/big/2"]
        # the next request works (a new connection)
        assert c.post("/api/batch", json=[_pageview(site, 9)]).status_code == 200
    assert fresh.request_log[0]["status"] is None
    assert fresh.request_log[0]["fault"] == "reset"


def test_restart_keeps_data_and_port(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    port = fresh.port
    # No keep-alive: a connection the restart closed could otherwise be reused in the
    # instant before the client sees the close (a flaky "disconnected" on a loaded machine).
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}, limits=no_reuse) as c:
        assert c.post("/api/batch", json=[_pageview(site, 1)]).status_code == 200
        fresh.restart()
        assert fresh.port == port
        assert c.post("/api/batch", json=[_pageview(site, 2)]).status_code == 200
        # during a restart's downtime nothing listens
        t = threading.Thread(target=fresh.restart, kwargs={"downtime": 0.5})
        t.start()
        time.sleep(0.2)
        with pytest.raises(httpx.TransportError):
            c.post("/api/batch", json=[_pageview(site, 3)])
        t.join()
        assert c.post("/api/batch", json=[_pageview(site, 4)]).status_code == 200
    assert sorted(e["url_path"] for e in fresh.events(site)) == ["/big/1", "/big/2", "/big/4"]


def test_hang_times_out_client_side_and_does_not_block_stop() -> None:
    srv = FakeUmami().start()
    site = srv.add_website()
    srv.faults.hang(times=2)
    with httpx.Client(base_url=srv.url, headers={"User-Agent": DEFAULT_UA}, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/api/batch", json=[_pageview(site, 1)])
        assert srv.events(site) == []
    # a hung request still open while the server stops
    outcome: list[BaseException] = []

    def wait_for_answer() -> None:
        try:
            httpx.post(f"{srv.url}/api/send", json={}, timeout=5)
        except httpx.TransportError as exc:
            outcome.append(exc)

    pending = threading.Thread(target=wait_for_answer)
    pending.start()
    time.sleep(0.2)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 2
    pending.join(timeout=5)
    assert not pending.is_alive()
    assert outcome and not isinstance(outcome[0], httpx.TimeoutException)


def test_hang_after_storing() -> None:
    with FakeUmami() as srv:
        site = srv.add_website()
        srv.faults.hang(process=True)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{srv.url}/api/batch",
                json=[_pageview(site, 1)],
                headers={"User-Agent": DEFAULT_UA},
                timeout=0.3,
            )
        assert len(srv.events(site)) == 1


def test_latency_is_added(fresh: FakeUmami) -> None:
    fresh.faults.latency_ms = 150
    started = time.monotonic()
    httpx.get(f"{fresh.url}/api/heartbeat")
    assert time.monotonic() - started >= 0.15


def test_keep_alive_connection_is_reused(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    ports = set()
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        for i in range(5):
            r = c.post("/api/send", json=_pageview(site, i), extensions={})
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(ports) == 1


def test_fast_enough_for_benchmarks(fresh: FakeUmami) -> None:
    """Thousands of events per second, so the fake never is the bottleneck."""
    site = fresh.add_website()
    batches = [
        json.dumps(
            [_pageview(site, b * 500 + i, referrer="https://www.example.org/a?b=c", title="T") for i in range(500)]
        )
        for b in range(6)
    ]
    headers = {"User-Agent": DEFAULT_UA, "Content-Type": "application/json"}
    with httpx.Client(base_url=fresh.url, headers=headers) as c:
        started = time.monotonic()
        for body in batches:
            assert c.post("/api/batch", content=body).json()["errors"] == 0
        elapsed = time.monotonic() - started
    assert fresh.event_count(site) == 3000
    assert 3000 / elapsed > 1500, f"{3000 / elapsed:.0f} events/s"  # loose: CI is shared


def test_no_internal_errors(server: FakeUmami) -> None:
    """Runs after the replay (module order): the fake hit no bug of its own."""
    assert server.internal_errors == []


def test_data_types_by_key(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    data = {"n": 0.03125, "big": 12345678901234567890, "d": "2024-02-30T00:00:00Z", "x": None}
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        r = c.post("/api/send", json=_pageview(site, 1, name="e", data=data))
    assert r.status_code == 500  # 1.2e19 overflows decimal(19,4): no data row, event kept
    assert fresh.event_data(site) == [] and len(fresh.events(site)) == 1
    del data["big"]
    with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
        assert c.post("/api/send", json=_pageview(site, 2, name="e", data=data)).status_code == 200
    rows = {r["data_key"]: (r["string_value"], r["data_type"]) for r in fresh.event_data(site)}
    assert rows == {
        "n": ("0.0313", 2),
        "d": ("2024-03-01T00:00:00.000Z", 4),
        "x": ("null", 5),
    }


def test_concurrent_batches_all_land(fresh: FakeUmami) -> None:
    site = fresh.add_website()

    def sender(lane: int) -> None:
        with httpx.Client(base_url=fresh.url, headers={"User-Agent": DEFAULT_UA}) as c:
            for b in range(5):
                batch = [_pageview(site, lane * 1000 + b * 100 + i) for i in range(100)]
                assert c.post("/api/batch", json=batch).json()["errors"] == 0

    threads = [threading.Thread(target=sender, args=(lane,)) for lane in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fresh.event_count(site) == 2000
    assert len(fresh.sessions(site)) == 2000


def test_nul_character_is_a_database_error(fresh: FakeUmami) -> None:
    """PostgreSQL text refuses 0x00: the session lands, the event does not."""
    site = fresh.add_website()
    r = httpx.post(
        f"{fresh.url}/api/send",
        json=_pageview(site, 1, title="a\x00b"),
        headers={"User-Agent": DEFAULT_UA},
    )
    assert r.status_code == 500
    cause = r.json()["error"]["errorObject"]["meta.driverAdapterError.cause"]
    assert "0x00" in cause["originalMessage"]
    assert len(fresh.sessions(site)) == 1 and fresh.events(site) == []


def test_malformed_bodies(fresh: FakeUmami) -> None:
    site = fresh.add_website()
    headers = {"User-Agent": DEFAULT_UA, "Content-Type": "application/json"}
    with httpx.Client(base_url=fresh.url, headers=headers) as c:
        not_json = c.post("/api/send", content=b"{nope")
        items = c.post("/api/batch", json=[_pageview(site, 1), 5])
        stale = c.post("/api/send", json=_pageview(site, 2), headers={"x-umami-cache": "not-a-token"})
    assert not_json.status_code == 400
    assert not_json.json()["error"]["errors"] == ["Invalid input: expected object, received undefined"]
    assert items.status_code == 400
    assert items.json()["error"]["items"] == [
        None,
        {"errors": ["Invalid input: expected record, received number"]},
    ]
    assert stale.status_code == 200  # an unknown token is ignored, like Umami does
    assert len(fresh.events(site)) == 1


def test_nested_error_meta_option() -> None:
    with FakeUmami(nested_error_meta=True) as srv:
        site = srv.add_website()
        r = httpx.post(
            f"{srv.url}/api/send",
            json=_pageview(site, 1, os="o" * 21),
            headers={"User-Agent": DEFAULT_UA},
        )
    cause = r.json()["error"]["errorObject"]["meta"]["driverAdapterError"]["cause"]
    assert cause["originalMessage"] == "value too long for type character varying(20)"
