"""Canonical rows -> the exact /api/batch elements, as JSON text, column-wise.

One polars ``struct.json_encode`` per chunk writes every element; nulls are
then cut out with a regex, because Umami refuses ``"name": null`` where it
accepts an absent name. The regex is safe: inside an encoded string every
quote is escaped, so ``,"`` and ``{"`` only ever start a key.
"""

from __future__ import annotations

import polars as pl

from .schema import COL_TS, COL_VISITOR, PAYLOAD_STRING_FIELDS

_NULL_MEMBER = r',"(?:[^"\\]|\\.)*":null'
_FIRST_NULL_MEMBER = r'\{"(?:[^"\\]|\\.)*":null,?'
_EMPTY_DATA = ',"data":{}'


def build_elements(frame: pl.DataFrame, website: str) -> pl.Series:
    """One JSON text per row: ``{"type":...,"payload":{"website":...,...}}``."""
    fields: list[pl.Expr] = [pl.lit(website).alias("website")]
    for name in PAYLOAD_STRING_FIELDS:
        if name == "id":
            fields.append(pl.col(COL_VISITOR).alias("id"))
        elif name in frame.columns:
            fields.append(pl.col(name).cast(pl.String).alias(name))
    fields.append(pl.col(COL_TS).cast(pl.Int64).alias("timestamp"))
    data_cols = [c for c in frame.columns if c.startswith("data.")]
    if data_cols:
        fields.append(pl.struct([pl.col(c).alias(c[5:]) for c in data_cols]).alias("data"))
    element = pl.struct(pl.col("type").cast(pl.String).alias("type"), pl.struct(fields).alias("payload"))
    encoded = (
        element.struct.json_encode()
        .str.replace_all(_NULL_MEMBER, "")
        .str.replace_all(_FIRST_NULL_MEMBER, "{")
        .str.replace(_EMPTY_DATA, "", literal=True)
    )
    return frame.lazy().select(encoded.alias("_json")).collect().to_series()
