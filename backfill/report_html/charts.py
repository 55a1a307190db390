"""The report's charts: Vega-Lite specifications rendered to static SVG in Python.

``vl-convert`` bundles Vega, Vega-Lite and a JavaScript engine in one wheel and
renders a specification to SVG without a browser or network: the report holds
the drawing itself, no script and no fetched library, so it opens from disk,
prints, and stays readable as long as SVG is. Text stays ``<text>`` (copyable,
read by screen readers); every chart also has its figures in a table beside it.

Marks are named so a test (or a person reading the SVG) can count them: the
class ``<name>_marks`` of each layer (``series``, ``points``, ``differs``, ``bars``).
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Sequence
from typing import Any

SOURCE_COLOR = "#1f6fb4"
UMAMI_COLOR = "#e07b00"
DIFFER_COLOR = "#c62828"
WIDTH = 760
#: Ranges up to this many days draw a point per day as well as the line.
POINTS_MAX_DAYS = 92
#: Characters of a top-list value shown as a chart label (the table has the whole value).
LABEL_MAX = 42

_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier: vl-convert fetches nothing
_CONFIG = {
    "aria": False,  # the figure carries one description; the table carries the figures
    "font": "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif",
    "view": {"stroke": None},
    "axis": {
        "labelColor": "#333",
        "titleColor": "#333",
        "gridColor": "#e6e6e6",
        "domainColor": "#999",
        "labelFontSize": 11,
    },
    "legend": {"orient": "top", "title": None, "labelFontSize": 12},
    "background": None,
}


def every_day(first: str, last: str) -> list[str]:
    """Each ISO day from ``first`` to ``last`` inclusive."""
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def day_chart(
    days: Sequence[str],
    series: dict[str, dict[str, int]],
    differs: Sequence[str] = (),
    *,
    colors: Sequence[str] = (SOURCE_COLOR, UMAMI_COLOR),
) -> dict[str, Any]:
    """One figure per day over ``days`` (days without data count 0): a line per series,
    a point per day on short ranges, a red rule on each day in ``differs``."""
    names = list(series)
    values = [{"day": day, "series": name, "value": series[name].get(day, 0)} for name in names for day in days]
    axis = {"format": "%Y-%m-%d", "labelAngle": 0, "grid": False, "tickCount": 8, "labelOverlap": "greedy"}
    x = {"field": "day", "type": "temporal", "title": None, "axis": axis}
    color = {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": names, "range": list(colors[: len(names)])},
        "legend": {"orient": "top", "title": None} if len(names) > 1 else None,
    }
    y = {"field": "value", "type": "quantitative", "title": None, "axis": {"format": ",d", "tickMinStep": 1}}
    layers: list[dict[str, Any]] = []
    if differs:
        layers.append(
            {
                "name": "differs",
                "data": {"values": [{"day": day} for day in differs]},
                "mark": {"type": "rule", "color": DIFFER_COLOR, "strokeWidth": 3, "opacity": 0.55},
                "encoding": {"x": x},
            }
        )
    layers.append(
        {
            "name": "series",
            "data": {"values": values},
            "mark": {"type": "line", "strokeWidth": 1.6, "interpolate": "linear"},
            "encoding": {"x": x, "y": y, "color": color, "strokeDash": _dashes(names)},
        }
    )
    if len(days) <= POINTS_MAX_DAYS:
        layers.append(
            {
                "name": "points",
                "data": {"values": values},
                "mark": {"type": "point", "filled": True, "size": 22},
                "encoding": {"x": x, "y": y, "color": color},
            }
        )
    return {"$schema": _SCHEMA, "width": WIDTH, "height": 150, "config": _CONFIG, "layer": layers}


def _dashes(names: list[str]) -> dict[str, Any]:
    """The second series dashed, so the two lines stay apart without colour."""
    return {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": names, "range": [[1, 0], [5, 3]][: len(names)]},
        "legend": None,
    }


def top_chart(rows: Sequence[dict[str, Any]], series: Sequence[str]) -> dict[str, Any]:
    """Horizontal bars per value, one per series; a value whose figures differ gets a red
    outline and a ``≠`` before its label. ``rows``: ``{"value", <series>: n, "differs"}``."""
    values = []
    order = []
    for row in rows:
        label = _short(str(row["value"]))
        label = f"≠ {label}" if row.get("differs") else label
        while label in order:  # two values cut to the same label
            label += " "
        order.append(label)
        for name in series:
            if row.get(name) is None:
                continue
            values.append({"label": label, "series": name, "n": row[name], "differs": bool(row.get("differs"))})
    encoding: dict[str, Any] = {
        "y": {"field": "label", "type": "nominal", "sort": order, "title": None, "axis": {"labelLimit": 320}},
        "x": {"field": "n", "type": "quantitative", "title": None, "axis": {"format": ",d", "tickMinStep": 1}},
        "color": {
            "field": "series",
            "type": "nominal",
            "scale": {"domain": list(series), "range": [SOURCE_COLOR, UMAMI_COLOR][: len(series)]},
            "legend": {"orient": "top", "title": None} if len(series) > 1 else None,
        },
        "stroke": {
            "condition": {"test": "datum.differs", "value": DIFFER_COLOR},
            "value": None,
        },
        "strokeWidth": {"condition": {"test": "datum.differs", "value": 2}, "value": 0},
    }
    if len(series) > 1:
        encoding["yOffset"] = {"field": "series", "type": "nominal", "sort": list(series)}
    band = 8 * len(series) + 5
    longest = max((len(label) for label in order), default=0)
    return {
        "$schema": _SCHEMA,
        "width": 420,
        # room for labels drawn in a wider font than the one they were measured in
        "padding": {"left": 5 + longest * 2, "top": 5, "right": 10, "bottom": 5},
        "height": {"step": band},
        "config": _CONFIG,
        "layer": [{"name": "bars", "data": {"values": values}, "mark": {"type": "bar"}, "encoding": encoding}],
    }


def _short(text: str) -> str:
    return text if len(text) <= LABEL_MAX else text[: LABEL_MAX - 1] + "…"


_SVG_OPEN = re.compile(r"^<svg\b([^>]*)>")


def to_svg(spec: dict[str, Any], label: str) -> str:
    """The chart as inline SVG: an image with ``label`` as its accessible name (its figures
    are in the table next to it)."""
    import vl_convert

    svg = vl_convert.vegalite_to_svg(spec)
    attrs = f' role="img" aria-label="{html.escape(label, quote=True)}" focusable="false"'
    svg = _SVG_OPEN.sub(lambda m: f"<svg{m.group(1)}{attrs}>", svg.strip(), count=1)
    return _compact(svg)


_NUMBER = re.compile(r"(\d+\.\d{2})\d+")


def _compact(svg: str) -> str:
    """Two decimals are enough for coordinates at screen resolution (a year of days: a third smaller)."""
    return _NUMBER.sub(r"\1", svg)
