"""The page: escaping, tables, figures and the stylesheet, in one self-contained file.

No script, no external stylesheet, font or image: a Content-Security-Policy of
``default-src 'none'`` tells the browser to fetch nothing, so the file opens the
same from disk, an e-mail attachment or a web server with no network.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
:root { color-scheme: light; --fg: #1c1c1c; --muted: #5b5b5b; --line: #d9d9d9; --bad: #c62828;
  --bad-bg: #fdecea; --good: #1b6e20; --good-bg: #e8f5e9; --src: #1f6fb4; --umami: #e07b00; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--fg); margin: 0 auto; padding: 1.5rem 2rem 4rem; max-width: 1180px; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.3rem; margin: 2.4rem 0 .6rem; padding-bottom: .25rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.08rem; margin: 1.6rem 0 .4rem; }
p, li { max-width: 78ch; }
.muted, figcaption, caption { color: var(--muted); }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; overflow-wrap: anywhere; }
.banner { border-radius: 6px; padding: .7rem 1rem; margin: .8rem 0 1rem; font-size: 1.05rem; }
.banner.good { background: var(--good-bg); color: var(--good); border: 1px solid #a5d6a7; }
.banner.bad { background: var(--bad-bg); color: var(--bad); border: 1px solid #ef9a9a; }
nav ol { columns: 2; padding-left: 1.2rem; margin: .4rem 0; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-variant-numeric: tabular-nums; min-width: 18rem; }
caption { text-align: left; font-size: .92rem; padding: .2rem 0 .35rem; caption-side: top; }
th, td { border-bottom: 1px solid var(--line); padding: .22rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #f6f6f6; font-weight: 600; border-bottom: 2px solid #c9c9c9; }
td.n, th.n { text-align: right; white-space: nowrap; }
tr.differs td, tr.differs th { background: var(--bad-bg); }
tr.differs > :first-child { box-shadow: inset 4px 0 0 var(--bad); }
th[scope=row] { white-space: nowrap; }
thead th.group { text-align: center; border-bottom: 1px solid #c9c9c9; }
td.mark { color: var(--bad); font-weight: 700; width: 1.6em; text-align: center; }
td.bad, span.bad { color: var(--bad); font-weight: 600; }
.ledger td.n { font-size: 1.05rem; }
.ledger tr.total td { font-weight: 700; border-top: 2px solid #999; }
.sum { font-size: 1.05rem; margin: .3rem 0 .8rem; }
figure { margin: 1rem 0 .4rem; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: .92rem; margin-top: .2rem; }
.key { display: inline-block; width: 1.6em; height: .35em; vertical-align: middle; margin: 0 .25em; }
.key.src { background: var(--src); } .key.umami { background: var(--umami); }
.key.bad { background: var(--bad); opacity: .6; width: .35em; height: 1em; }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1.5rem; align-items: start; }
@media (max-width: 900px) { .pair { grid-template-columns: 1fr; } nav ol { columns: 1; } }
.scroll { max-height: 32rem; overflow: auto; border: 1px solid var(--line); }
.scroll table { margin: 0; }
.scroll thead th { position: sticky; top: 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: .4rem 0; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media print { .scroll { max-height: none; overflow: visible; border: 0; } body { padding: 0; } }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any) -> str:
    """A count with thousands separators; other values as text."""
    if isinstance(value, bool) or value is None:
        return esc(value if value is not None else "")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return esc(value)


def signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


@dataclass
class Cell:
    """A table cell: its HTML, whether it is a number, whether it is a header of its row."""

    html: str
    numeric: bool = False
    css: str = ""


def cell(value: Any, *, css: str = "") -> Cell:
    """A cell for a plain value (numbers right-aligned)."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return Cell(num(value) if numeric else esc(value), numeric, css)


def raw(markup: str, *, numeric: bool = False, css: str = "") -> Cell:
    return Cell(markup, numeric, css)


def differs_mark(differs: bool) -> Cell:
    """The first cell of a compared row: ``≠`` (with a spoken word) where it differs."""
    if not differs:
        return Cell('<span class="sr">same</span>', css="mark")
    return Cell('<span aria-hidden="true">≠</span><span class="sr">differs</span>', css="mark")


def table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    differs: Iterable[bool] | None = None,
    numeric_headers: Sequence[bool] | None = None,
    css: str = "",
    scroll: bool = False,
    table_id: str | None = None,
    groups: Sequence[tuple[str, int]] = (),
) -> str:
    """A table with a caption and column headers; rows flagged in ``differs`` are highlighted.
    ``groups``: an upper header row of (label, columns spanned)."""
    flags = list(differs) if differs is not None else None
    body = []
    for i, row in enumerate(rows):
        cls = ' class="differs"' if flags is not None and i < len(flags) and flags[i] else ""
        cells = []
        for j, c in enumerate(row):
            classes = " ".join(x for x in ("n" if c.numeric else "", c.css) if x)
            attr = f' class="{classes}"' if classes else ""
            tag = "th" if j == 0 and c.css == "rowhead" else "td"
            scope = ' scope="row"' if tag == "th" else ""
            cells.append(f"<{tag}{attr}{scope}>{c.html}</{tag}>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    heads = []
    for j, h in enumerate(headers):
        numeric = bool(numeric_headers and j < len(numeric_headers) and numeric_headers[j])
        css_n = ' class="n"' if numeric else ""
        heads.append(f'<th scope="col"{css_n}>{h}</th>')
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cls = f' class="{css}"' if css else ""
    upper = ""
    if groups:
        spans = "".join(
            f'<th scope="colgroup" colspan="{n}" class="group">{label}</th>' if n > 1 else f"<td>{label}</td>"
            for label, n in groups
        )
        upper = f"<tr>{spans}</tr>"
    markup = (
        f"<table{ident}{cls}><caption>{caption}</caption><thead>{upper}<tr>{''.join(heads)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    return f'<div class="scroll">{markup}</div>' if scroll else markup


def figure(svg: str, caption: str, *, figure_id: str | None = None) -> str:
    ident = f' id="{esc(figure_id)}"' if figure_id else ""
    return f"<figure{ident}>{svg}<figcaption>{caption}</figcaption></figure>"


def facts(items: Iterable[tuple[str, str]]) -> str:
    """A definition list of (term, HTML) pairs; empty values left out."""
    rows = [f"<dt>{esc(term)}</dt><dd>{value}</dd>" for term, value in items if value]
    return f'<dl class="facts">{"".join(rows)}</dl>' if rows else ""


@dataclass
class Section:
    ident: str
    heading: str
    body: str


@dataclass
class Page:
    """A whole report: a title, a banner and sections listed in a table of contents."""

    title: str
    lead: str = ""
    banner: str = ""
    banner_good: bool = True
    sections: list[Section] = field(default_factory=list)

    def add(self, ident: str, heading: str, body: str) -> None:
        if body:
            self.sections.append(Section(ident, heading, body))

    def render(self) -> str:
        toc = "".join(f'<li><a href="#{s.ident}">{esc(s.heading)}</a></li>' for s in self.sections)
        banner = ""
        if self.banner:
            kind = "good" if self.banner_good else "bad"
            banner = f'<p class="banner {kind}" role="status">{self.banner}</p>'
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="umami-backfill">',
            f"<title>{esc(self.title)}</title><style>{STYLE}</style></head><body>",
            f"<header><h1>{esc(self.title)}</h1>{self.lead}{banner}</header>",
            f'<nav aria-label="Contents"><ol>{toc}</ol></nav><main>',
        ]
        for s in self.sections:
            parts.append(f'<section id="{s.ident}" aria-labelledby="{s.ident}-h">')
            parts.append(f'<h2 id="{s.ident}-h">{esc(s.heading)}</h2>{s.body}</section>')
        parts.append("</main></body></html>\n")
        return "\n".join(parts)
