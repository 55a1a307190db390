"""Hints a line gives beyond its fields: HAProxy's captured headers, and requests that look like people.

``looks_like_person``: the preset's named filters skip whole kinds of requests
(API calls, admin pages, feeds, files), which is right for the scripts that make
most of them, but a documentation page under ``/api`` or a PDF linked from a
search engine is read by people. A request that is no page and yet looks like
a person's (a successful GET by a browser, not a known bot, that came from
another site or carries campaign tags) gets a short text saying why,
``/api/docs?utm_source=news (utm_source=news)``; the mapping's
``skip_warning`` counts them per filter and the summary shows examples, so the
cost of a filter is seen before anything is imported.
"""

from __future__ import annotations

import polars as pl

S = pl.String()
#: The column (made per distinct user agent by the reader) saying a browser that is no known bot sent it.
BROWSER = "_browser"

#: Campaign tags and click ids a person's link carries (a script's request has none).
CAMPAIGN = r"[?&]((?:utm_[a-z]+|gclid|fbclid|msclkid|dclid|yclid|twclid|mc_cid|mtm_[a-z]+|pk_[a-z]+)=[^&#]*)"
_REFERRER_HOST = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:www\.)?([^/?#:@]+)"

#: A captured header value by its shape: a referrer is a URL, a Host a domain (with a
#: letter in its last label, so an X-Forwarded-For address is none), a user agent text.
_URL = r"^[A-Za-z][A-Za-z0-9+.-]*://"
_DOMAIN = r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z][A-Za-z0-9-]*(?::\d+)?$"
#: HAProxy writes these characters of a captured header as #XX.
_HAPROXY_ESCAPES = {"#22": '"', "#7B": "{", "#7D": "}", "#7C": "|", "#23": "#"}


def captured_headers(parts: pl.DataFrame) -> pl.DataFrame:
    """HAProxy's ``{host|user agent|referer}``: each captured value is placed by its shape,
    whatever order the ``capture request header`` lines gave them (a part the line has
    in its own field is kept)."""
    values = pl.col("captured").str.split("|")

    def first(condition: pl.Expr) -> pl.Expr:
        return values.list.eval(pl.element().filter(condition)).list.first()

    element = pl.element()
    url, domain = element.str.contains(_URL), element.str.contains(_DOMAIN)
    derived = {
        "referrer": first(url),
        "host": first(domain),
        "user_agent": first(~url & ~domain & element.str.contains("[A-Za-z]")),
    }
    frame = parts.with_columns(expr.alias(part) for part, expr in derived.items() if part not in parts.columns)
    escaped = [c for c in derived if c not in parts.columns and frame[c].str.contains("#", literal=True).any()]
    for code, char in _HAPROXY_ESCAPES.items():
        frame = frame.with_columns(pl.col(c).str.replace_all(code, char, literal=True) for c in escaped)
    return frame


def looks_like_person(frame: pl.DataFrame) -> pl.Series:
    """Why each request that is no page looks like a person's, else null (see the module); ``frame``
    has the reader's columns and :data:`BROWSER`."""
    status = pl.col("status")
    candidate = (
        pl.col(BROWSER)
        & ~pl.col("kind").is_in(["page", "tracker"])  # a tracker hit's page is in the log itself
        & pl.col("method").is_in(["GET", "HEAD"])
        & (((status >= 200) & (status < 300)) | (status == 304))
    ).fill_null(False)
    index = frame.select(candidate.arg_true()).to_series()
    out = pl.repeat(None, frame.height, dtype=S, eager=True).alias("looks_like_person")
    if index.len() == 0:
        return out
    keys = ["path", "referrer", "host"]
    rows = frame.select(keys).gather(index)
    signs = rows.unique().with_columns(_sign().alias("sign"))  # few distinct (file, referrer) pairs
    marked = rows.join(signs, on=keys, how="left", nulls_equal=True, maintain_order="left")["sign"]
    return out.scatter(index, marked)


def _sign() -> pl.Expr:
    site = pl.col("host").str.to_lowercase().str.strip_prefix("www.")
    source = pl.col("referrer").str.extract(_REFERRER_HOST, 1).str.to_lowercase()
    campaign = pl.col("path").str.extract(CAMPAIGN, 1)
    return (
        pl.when(source.is_not_null() & (source != site.fill_null("")))
        .then(pl.concat_str(pl.col("path"), pl.lit(" (from "), source, pl.lit(")")))
        .when(campaign.is_not_null())
        .then(pl.concat_str(pl.col("path"), pl.lit(" ("), campaign, pl.lit(")")))
    )
