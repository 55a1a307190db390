"""Canonical rows -> the exact /api/batch elements, as JSON text, column-wise.

One polars ``struct.json_encode`` per chunk writes every element; nulls are
then cut out with a regex, because Umami refuses ``"name": null`` where it
accepts an absent name. The regex is safe: inside an encoded string every
quote is escaped, so ``,"`` and ``{"`` only ever start a key.

A ``data.*`` column (mapping line ``data.*: <column>``) holds each row's whole
set of event properties as one JSON object text, for sources whose keys differ
row by row (Umami's own export). Its members are spliced into ``data`` after
the encoding, verbatim: a JSON null inside it stays (Umami stores it).
"""

from __future__ import annotations

import polars as pl

from .schema import COL_TS, COL_VISITOR, PAYLOAD_STRING_FIELDS

_NULL_MEMBER = r',"(?:[^"\\]|\\.)*":null'
_FIRST_NULL_MEMBER = r'\{"(?:[^"\\]|\\.)*":null,?'
_EMPTY_DATA = ',"data":{}'
#: The mapping target whose column is a whole JSON object of properties.
DATA_OBJECT = "data.*"


def build_elements(frame: pl.DataFrame, website: str) -> pl.Series:
    """One JSON text per row: ``{"type":...,"payload":{"website":...,...}}``."""
    fields: list[pl.Expr] = [pl.lit(website).alias("website")]
    for name in PAYLOAD_STRING_FIELDS:
        if name == "id":
            fields.append(pl.col(COL_VISITOR).alias("id"))
        elif name in frame.columns:
            fields.append(pl.col(name).cast(pl.String).alias(name))
    fields.append(pl.col(COL_TS).cast(pl.Int64).alias("timestamp"))
    data_cols = [c for c in frame.columns if c.startswith("data.") and c != DATA_OBJECT]
    if data_cols:
        fields.append(pl.struct([pl.col(c).alias(c[5:]) for c in data_cols]).alias("data"))
    element = pl.struct(pl.col("type").cast(pl.String).alias("type"), pl.struct(fields).alias("payload"))
    encoded = (
        element.struct.json_encode()
        .str.replace_all(_NULL_MEMBER, "")
        .str.replace_all(_FIRST_NULL_MEMBER, "{")
        .str.replace(_EMPTY_DATA, "", literal=True)
    )
    if DATA_OBJECT in frame.columns:
        encoded = _with_data_object(encoded, pl.col(DATA_OBJECT).cast(pl.String))
    return frame.lazy().select(encoded.alias("_json")).collect().to_series()


def _with_data_object(encoded: pl.Expr, members: pl.Expr) -> pl.Expr:
    """Splice a JSON object's members into the element's ``data`` (the payload's last member).

    The element ends ``...}}`` (payload, element), or ``...}}}`` when it has ``data``."""
    inner = members.str.strip_chars().str.strip_prefix("{").str.strip_suffix("}").str.strip_chars()
    has_data = encoded.str.ends_with("}}}") & encoded.str.contains(',"data":{', literal=True)
    head_without = encoded.str.slice(0, encoded.str.len_chars() - 2)
    head_with = encoded.str.slice(0, encoded.str.len_chars() - 3)
    spliced = (
        pl.when(has_data)
        .then(pl.concat_str(head_with, pl.lit(","), inner, pl.lit("}}}")))
        .otherwise(pl.concat_str(head_without, pl.lit(',"data":{'), inner, pl.lit("}}}")))
    )
    return pl.when(members.is_null() | (inner == "")).then(encoded).otherwise(spliced)
