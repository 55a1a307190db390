"""The ``backfill`` command's flags: every subcommand's options, their help and argument types.

Kept apart from :mod:`backfill.cli` (which turns the parsed flags into a run and prints
it) so the long list of options reads on its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from pathlib import Path

from . import __version__
from .config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_ROWS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REJECTS,
    DEFAULT_USER_AGENT,
    MAX_BATCH_SIZE,
)
from .geo import GEO_MODES
from .sources import known_formats
from .sources.access_log.formats import names_listing as log_format_names
from .umami.limits import STORES

EPILOG = """exit status: 0 clean; 1 some rows rejected or in doubt; 2 configuration,
mapping or input error (nothing sent), or Umami refused the run itself (wrong
website, User-Agent, host or endpoint: correct the command); 3 stopped early (run the
same command again to resume).
environment: UMAMI_HOST, UMAMI_WEBSITE_ID (for --host/--website); UMAMI_API_KEY or
UMAMI_USERNAME + UMAMI_PASSWORD (for --check-website and reading back rows in doubt;
never printed or stored); UMAMI_API_CLIENT_ENDPOINT (for --api-url)."""


VERIFY_EPILOG = """exit status: 0 Umami matches the sources within the tolerance; 1 some figure
differs beyond it (the verdict names the day and figure); 2 configuration, input,
credentials or connection error.
environment: UMAMI_HOST, UMAMI_WEBSITE_ID; UMAMI_API_KEY or UMAMI_USERNAME +
UMAMI_PASSWORD (never printed or stored); UMAMI_API_CLIENT_ENDPOINT (for --api-url)."""


HTML_HELP = (
    "write the report as one self-contained HTML page (ledger, per-day charts, top lists; "
    "opens from disk, fetches nothing)"
)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _time_arg(value: str) -> int:
    """--since/--until: a date or ISO time; naive values are UTC (said in --help)."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date or ISO time (e.g. 2024-01-01 or 2024-01-01T00:00:00+01:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return number


def _shard_arg(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match:
        raise argparse.ArgumentTypeError("must be K/N, e.g. 1/4")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"K must be between 1 and N, not {k}/{n}")
    return k, n


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading")
    group.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="files, globs or directories (.gz/.zst/.bz2/.xz read directly); or an API to pull from: "
        "ga4-api:PROPERTY_ID (-m ga_report) or matomo-api:URL?idSite=N (-m matomo-live), see below",
    )
    group.add_argument("--format", choices=known_formats(), help="input format (default: detect)")
    group.add_argument("--delimiter", help="CSV field delimiter (default ',' or tab for .tsv)")
    group.add_argument(
        "--encoding", help="text encoding of CSV files and access logs, e.g. latin-1, cp1252, big5 (default utf-8)"
    )
    group.add_argument(
        "--decimal-comma",
        action="store_true",
        help="numbers in text columns are written 1.234,5 (European exports); as `decimal_comma: true` under reader",
    )
    _add_pull_options(parser)
    _add_log_options(parser)
    _add_matomo_options(parser)


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    logs = parser.add_argument_group("access logs (--format access_log)")
    logs.add_argument(
        "--log-format",
        help="the log's format (default: detected from the first lines): a name, "
        f"{log_format_names()}; or the server's own nginx log_format / Apache LogFormat string "
        "(or the whole config line, a JSON log_format too)",
    )
    logs.add_argument("--hostname", help="the site's hostname, for logs whose lines name no site")
    logs.add_argument("--search-param", help="query keys of the site search, comma-separated (e.g. q,s)")
    logs.add_argument(
        "--w3c-field",
        action="append",
        metavar="NAME=STANDARD",
        help="a W3C log field under another name, read as the standard one (e.g. x-client=c-ip); repeatable",
    )
    logs.add_argument(
        "--log-timezone",
        help="IANA zone of log times written without a UTC offset (HAProxy, IIS date-local/time-local), "
        "e.g. Europe/Paris; without it they are read as UTC",
    )


def _add_matomo_options(parser: argparse.ArgumentParser) -> None:
    matomo = parser.add_argument_group("Matomo (--format matomo_logs / matomo_live)")
    matomo.add_argument(
        "--matomo-site",
        metavar="ID",
        help="the Matomo site (idsite) to import, when the dump or export holds several; "
        "without it such an input is refused, listing its sites",
    )


def _add_run_options(parser: argparse.ArgumentParser, *, rejects_default: str) -> None:
    _add_selection_options(parser)
    parser.add_argument(
        "--store",
        choices=list(STORES),
        default=None,
        help="where the Umami keeps its events, for what it refuses: PostgreSQL's columns refuse a browser, OS "
        "or device over 20 characters, a utm value over 255, a city over 50, event data text over 500; "
        "ClickHouse's (Umami Cloud's) keep them. Default: clickhouse with --clickhouse-url, else postgres",
    )
    _add_output_options(parser, rejects_default)


def _add_selection_options(parser: argparse.ArgumentParser, *, shard: bool = True) -> None:
    """The mapping, the rows selected and how location and visits are sent (import, validate, verify)."""
    parser.add_argument(
        "--mapping",
        "-m",
        required=True,
        help=(
            "mapping YAML file, or a preset name from mappings/ (a bare name is the preset when"
            " one exists; write ./NAME for a file named like a preset)"
        ),
    )
    group = parser.add_argument_group("selecting rows")
    group.add_argument("--since", type=_time_arg, help="only events at or after this time (UTC if naive)")
    group.add_argument("--until", type=_time_arg, help="only events before this time (UTC if naive)")
    group.add_argument("--limit", type=_positive_int, help="read at most N rows in all")
    group.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=DEFAULT_CHUNK_ROWS,
        help="rows read and checked at a time; fewer use less memory",
    )
    if shard:
        group.add_argument(
            "--shard",
            type=_shard_arg,
            metavar="K/N",
            help="take only shard K of N (by visitor): N processes import disjoint parts; see README",
        )
    fidelity = parser.add_argument_group("location and visits")
    fidelity.add_argument(
        "--geo",
        choices=GEO_MODES,
        default="auto",
        help="how location reaches Umami: payload ip, CDN location headers per request, or "
        "neither (headers/off never send ips); auto: ip where mapped, else headers",
    )
    fidelity.add_argument(
        "--visits",
        choices=["exact", "hourly"],
        help="exact: keep a source visit that crosses hh:00 one Umami visit (one extra request "
        "each); hourly: Umami's clock-hour visits (default: exact when the mapping names a visit)",
    )


def _add_output_options(parser: argparse.ArgumentParser, rejects_default: str) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--rejects", type=Path, default=Path(rejects_default), help="file of refused rows")
    out.add_argument("--rejects-format", choices=["ndjson", "csv"], default="ndjson", help="format of the rejects file")
    out.add_argument("--out", type=Path, help="write the exact payloads (one /api/batch element per line)")
    out.add_argument("--report", type=Path, help="write the summary as JSON")
    out.add_argument("--html", type=Path, metavar="FILE", help=HTML_HELP)
    verbosity = out.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    verbosity.add_argument("--verbose", "-v", action="store_true", help="print more detail")


def _add_send_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sending")
    group.add_argument(
        "--host",
        default=os.environ.get("UMAMI_HOST"),
        help="Umami URL (env UMAMI_HOST); none = dry run",
    )
    group.add_argument(
        "--website",
        default=os.environ.get("UMAMI_WEBSITE_ID"),
        help="website UUID (env UMAMI_WEBSITE_ID)",
    )
    group.add_argument(
        "--endpoint",
        choices=["auto", "batch", "send"],
        default="auto",
        help="Umami's collection endpoint: batch (/api/batch, many rows per request), send (/api/send, one "
        "row per request: Umami Cloud, Umami before 2.17); auto: batch, or send when the server has no batch",
    )
    group.add_argument(
        "--api-url",
        help="Umami's read API, for --check-website and reading back rows in doubt, when it is not "
        "HOST/api (env UMAMI_API_CLIENT_ENDPOINT); for Umami Cloud hosts (*.umami.is) the default is "
        "https://api.umami.is/v1, with UMAMI_API_KEY",
    )
    group.add_argument(
        "--state",
        type=Path,
        help="checkpoint directory (default: .backfill-state next to --rejects)",
    )
    database = parser.add_argument_group(
        "writing into Umami's database instead of its API (README: 'Writing into Umami's database')"
    )
    database.add_argument(
        "--database-url",
        default=None,
        help="Umami's PostgreSQL URL (its DATABASE_URL; env UMAMI_DATABASE_URL): write its tables directly, "
        "about 50x faster than the API, exactly once; never printed or stored",
    )
    database.add_argument(
        "--app-secret",
        default=os.environ.get("APP_SECRET"),
        help="the Umami server's APP_SECRET (env APP_SECRET; without one set on the server, its DATABASE_URL): "
        "session ids then match the ones Umami derives, so live traffic joins imported sessions",
    )
    database.add_argument(
        "--transaction-rows",
        type=_positive_int,
        default=20_000,
        help="rows per database transaction (the checkpoint moves after each commit)",
    )
    database.add_argument(
        "--clickhouse-url",
        default=None,
        help="the ClickHouse of an Umami that runs on it (its CLICKHOUSE_URL, http[s]://user:password@host:8123/db; "
        "env UMAMI_CLICKHOUSE_URL): write its tables directly, exactly once; never printed or stored. "
        "--database-url is then Umami's PostgreSQL, read only to check the website",
    )
    database.add_argument(
        "--insert-rows",
        type=_positive_int,
        default=100_000,
        help="rows per ClickHouse insert (the checkpoint moves after each)",
    )
    database.add_argument(
        "--parallel-inserts",
        type=_positive_int,
        default=2,
        help="ClickHouse inserts in flight at once (default 2: ClickHouse writes one insert on one core; "
        "blocks are still recorded in order, so a resume stays exact)",
    )
    database.add_argument(
        "--skip-website-check",
        action="store_true",
        help="with --clickhouse-url and no --database-url: write into --website without checking that Umami knows it",
    )
    database.add_argument(
        "--geoip-db",
        type=Path,
        help="the GeoLite2-City.mmdb Umami uses: locates rows whose mapping sends an ip, as Umami would",
    )
    group.add_argument(
        "--restart",
        action="store_true",
        help="discard the checkpoint and import from the start (duplicates what was sent)",
    )
    group.add_argument(
        "--resend-in-doubt",
        action="store_true",
        help="send rows left in doubt by a crash again: risks duplicates (not resending risks gaps)",
    )
    group.add_argument(
        "--read-back-timeout",
        type=float,
        default=300.0,
        help="seconds the read-back of rows in doubt may take (needs read credentials); rows not read "
        "by then stay in doubt and the next run reads them",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"events per request (max {MAX_BATCH_SIZE})",
    )
    group.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="request body cap (proxy limit)",
    )
    group.add_argument("--concurrency", type=_positive_int, help="requests in flight (default: adaptive, from 2)")
    group.add_argument("--rate", type=float, help="cap in events per second (default: none)")
    group.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")
    group.add_argument(
        "--on-error",
        choices=["stop", "reject"],
        default="stop",
        help="when retries run out: stop the run, or reject the batch's rows",
    )
    group.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    group.add_argument(
        "--check-website",
        action="store_true",
        help="before sending, confirm the website exists (needs UMAMI_API_KEY, or UMAMI_USERNAME and UMAMI_PASSWORD)",
    )
    group.add_argument(
        "--user-agent",
        default=DEFAULT_USER_AGENT,
        help="User-Agent for rows without one (must pass Umami's bot check)",
    )


def _add_pull_options(parser: argparse.ArgumentParser) -> None:
    pull = parser.add_argument_group(
        "pulling from an API (SOURCE ga4-api:PROPERTY_ID or matomo-api:URL?idSite=N; README: 'Migrating from')",
        "The days of --since .. --until (GA4: --since required; --until: up to yesterday) are pulled into "
        "--pull-dir, one file per day, then read like an export; a stopped pull continues where it stood.",
    )
    pull.add_argument(
        "--google-credentials",
        metavar="FILE",
        help="GA4: a service-account key or authorized-user JSON (default: GOOGLE_APPLICATION_CREDENTIALS, "
        "then gcloud's application default credentials, then the token in GOOGLE_OAUTH_ACCESS_TOKEN)",
    )
    pull.add_argument(
        "--ga4-endpoint",
        metavar="URL",
        help="GA4: the Data API's base URL (env GA4_API_ENDPOINT; default https://analyticsdata.googleapis.com)",
    )
    pull.add_argument(
        "--matomo-token-file",
        metavar="FILE",
        help="Matomo: a file holding the token_auth (default: env MATOMO_TOKEN_AUTH); sent in the POST body only",
    )
    pull.add_argument(
        "--pull-dir",
        type=Path,
        help="where pulled days are kept (default: .backfill-pulls next to --rejects)",
    )
    pull.add_argument(
        "--page-size",
        type=_positive_int,
        help="rows per runReport request (GA4, default 100000) or visits per Live request (Matomo, default 500)",
    )
    pull.add_argument(
        "--quota-wait",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="GA4: how long to wait for a spent hourly quota before stopping (a spent daily quota stops at once)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backfill",
        description="Move historical analytics into Umami: through its HTTP API, or straight into its PostgreSQL "
        "or ClickHouse tables as the API would have stored them.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"umami-backfill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = sub.add_parser(
        "import",
        help="send events to Umami (a dry run when no --host is set)",
        description="Read SOURCE files, map and validate them, and send them to Umami (/api/batch, or /api/send "
        "where it has no batch; --database-url or --clickhouse-url write its tables instead). "
        "With no destination (--host, --database-url, --clickhouse-url or their variables) this is a dry run "
        "and says so. Re-running the same command "
        "resumes an interrupted import.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _add_read_options(imp)
    _add_run_options(imp, rejects_default=DEFAULT_REJECTS)
    _add_send_options(imp)

    val = sub.add_parser(
        "validate",
        help="dry run: read, map and validate everything, send nothing, report",
        description="Read every row, apply the mapping, check it against Umami's rules and print the "
        "ledger. Nothing is sent. --out writes the payloads an import would send.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _add_read_options(val)
    _add_run_options(val, rejects_default="validate-rejects.ndjson")
    val.add_argument(
        "--website",
        default=os.environ.get("UMAMI_WEBSITE_ID"),
        help="website UUID for --out payloads",
    )

    ins = sub.add_parser(
        "inspect",
        help="name an export format and its preset, or describe a file and suggest a mapping",
        description="An export format we read (GA4, GA reports, Plausible, ...): its preset, the "
        "next command and what the preset keeps and drops, with the preset on stdout. Any other "
        "file: columns, types, null counts, sample rows and time ranges, then a suggested mapping "
        "YAML on stdout, each line saying why (the description goes to stderr).",
        formatter_class=_Formatter,
    )
    ins.add_argument("source", metavar="SOURCE", help="a file, ZIP, directory or glob")
    ins.add_argument("--format", choices=known_formats(), help="input format (default: detect)")
    ins.add_argument("--delimiter", help="CSV field delimiter (default ',' or tab for .tsv)")
    ins.add_argument(
        "--encoding", help="text encoding of CSV files and access logs, e.g. latin-1, cp1252, big5 (default utf-8)"
    )
    ins.add_argument("--rows", type=_positive_int, default=10_000, help="rows to sample")
    _add_log_options(ins)

    rep = sub.add_parser(
        "report",
        help="work with --report files (merge the reports of --shard runs)",
        description="Work with the JSON summaries that --report writes.",
        formatter_class=_Formatter,
    )
    rep_sub = rep.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    merge = rep_sub.add_parser(
        "merge",
        help="combine the reports of the N shards of one import into one ledger",
        description="Combine the --report files of the N processes of a sharded import (--shard K/N) "
        "into one ledger: rows read once, accepted/rejected/in doubt/skipped summed, the 'not in shard' "
        "skips checked (they must total (N-1) x rows read) and left out. Exit status 2 when the reports "
        "are not the N shards of one import or do not add up; otherwise as for a run.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    merge.add_argument("reports", nargs="+", metavar="REPORT", help="the shards' --report JSON files")
    merge.add_argument("--out", type=Path, help="write the merged summary as JSON")
    merge.add_argument("--html", type=Path, metavar="FILE", help="write the merged summary as an HTML page")
    page = rep_sub.add_parser(
        "html",
        help="render a saved --report file (a run's, a merge's or verify's) as an HTML page",
        description="Render the JSON a --report flag wrote (validate, import, report merge --out, verify) "
        "as the page --html writes: one self-contained file with the ledger, per-day charts and top lists. "
        "Several reports are the shards of one import: they are merged first, as by 'report merge'.",
        formatter_class=_Formatter,
    )
    page.add_argument("reports", nargs="+", metavar="REPORT", help="a --report JSON file, or the shards' files")
    page.add_argument("--out", "-o", type=Path, required=True, metavar="FILE", help="the HTML file to write")

    ver = sub.add_parser(
        "verify",
        help="read an import back from Umami and compare it with the sources",
        description="Compute what Umami should show for SOURCE read with the mapping and options of the "
        "import (pageviews, visitors, visits and custom events per day; top paths, referrers, countries, "
        "browsers, OS), read the same figures from Umami's API and compare them. Pass the options the "
        "import was run with. Needs UMAMI_API_KEY, or UMAMI_USERNAME and UMAMI_PASSWORD.",
        epilog=VERIFY_EPILOG,
        formatter_class=_Formatter,
    )
    _add_read_options(ver)
    _add_selection_options(ver, shard=False)
    _add_verify_options(ver)
    return parser


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading Umami back")
    group.add_argument("--host", default=os.environ.get("UMAMI_HOST"), help="Umami URL (env UMAMI_HOST)")
    group.add_argument(
        "--website", default=os.environ.get("UMAMI_WEBSITE_ID"), help="website UUID (env UMAMI_WEBSITE_ID)"
    )
    group.add_argument(
        "--api-url",
        help="Umami's read API when it is not HOST/api (env UMAMI_API_CLIENT_ENDPOINT); "
        "default for Umami Cloud hosts (*.umami.is): https://api.umami.is/v1, with UMAMI_API_KEY",
    )
    group.add_argument("--timezone", default="UTC", help="IANA zone the days are counted in (e.g. Europe/Berlin)")
    group.add_argument(
        "--tolerance",
        help="allowed difference per figure: 0 (exact), a count, or a percentage like 1%% "
        "(default: 0; 1%% for the ga_report and plausible_csv formats)",
    )
    group.add_argument("--top", type=_positive_int, default=10, help="lines per top list (paths, referrers, ...)")
    group.add_argument(
        "--store",
        choices=["auto", *STORES],
        default="auto",
        help="where the Umami keeps its data; its reports count a little differently on ClickHouse "
        "(auto: told by how the server labels time buckets)",
    )
    group.add_argument(
        "--user-agent",
        default=DEFAULT_USER_AGENT,
        help="the User-Agent the import sent for rows without one (browser/OS are predicted only for the default)",
    )
    group.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")
    group.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    out = parser.add_argument_group("output")
    out.add_argument("--report", type=Path, help="write the comparison as JSON")
    out.add_argument("--html", type=Path, metavar="FILE", help=HTML_HELP)
    verbosity = out.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="print only the comparison")
    verbosity.add_argument("--verbose", "-v", action="store_true", help="print every day, not only the differing ones")
