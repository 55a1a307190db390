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

from .schema import COL_DATA, COL_TS, COL_VISITOR, PAYLOAD_STRING_FIELDS

_NULL_MEMBER = r',"(?:[^"\\]|\\.)*":null'
_FIRST_NULL_MEMBER = r'\{"(?:[^"\\]|\\.)*":null,?'
#: The mapping target whose column is a whole JSON object of properties.
DATA_OBJECT = "data.*"


def build_elements(frame: pl.DataFrame, website: str) -> pl.Series:
    """One JSON text per row: ``{"type":...,"payload":{"website":...,...}}``."""
    payload = pl.struct(_payload_fields(frame, website)).alias("payload")
    element = pl.struct(pl.col("type").cast(pl.String).alias("type"), payload)
    encoded = _without_nulls(element.struct.json_encode())
    data = data_text(frame)
    if data is not None:  # "data" is the payload's last member: the element ends "}}"
        head = encoded.str.slice(0, encoded.str.len_chars() - 2)
        with_data = pl.concat_str(head, pl.lit(',"data":'), data, pl.lit("}}"))
        encoded = pl.when(data.is_null()).then(encoded).otherwise(with_data)
    return frame.lazy().select(encoded.alias("_json")).collect().to_series()


def data_text(frame: pl.DataFrame) -> pl.Expr | None:
    """The element's ``data`` object as JSON text (null where a row has no property), as
    :func:`build_elements` writes it; None when the mapping has no ``data.*`` target.

    The database sinks spill this text beside the payload's columns instead of the
    whole element: what they derive is then read from columns, not decoded per row.
    """
    data_cols = [c for c in frame.columns if c.startswith("data.") and c != DATA_OBJECT]
    text: pl.Expr | None = None
    if data_cols:
        encoded = _without_nulls(pl.struct([pl.col(c).alias(c[5:]) for c in data_cols]).struct.json_encode())
        text = pl.when(encoded != "{}").then(encoded)
    if DATA_OBJECT in frame.columns:
        text = _with_data_object(text, pl.col(DATA_OBJECT).cast(pl.String))
    return text


def payload_columns(frame: pl.DataFrame) -> list[pl.Expr]:
    """What an element holds, as columns instead of JSON text: ``type``, the payload's
    string fields but ``id`` (the visitor column is the id), ``data`` as JSON text."""
    present = {e.meta.output_name(): e for e in _payload_fields(frame, "")[1:-1]}
    absent = pl.lit(None, dtype=pl.String)
    data = data_text(frame)
    return [
        pl.col("type").cast(pl.String),
        *(present.get(name, absent).alias(name) for name in PAYLOAD_STRING_FIELDS if name != "id"),
        (data if data is not None else pl.lit(None, dtype=pl.String)).alias(COL_DATA),
    ]


def _payload_fields(frame: pl.DataFrame, website: str) -> list[pl.Expr]:
    """website, the string fields the frame has, timestamp: the payload's members in order."""
    fields: list[pl.Expr] = [pl.lit(website).alias("website")]
    for name in PAYLOAD_STRING_FIELDS:
        if name == "id":
            fields.append(pl.col(COL_VISITOR).alias("id"))
        elif name in frame.columns:
            fields.append(pl.col(name).cast(pl.String).alias(name))
    fields.append(pl.col(COL_TS).cast(pl.Int64).alias("timestamp"))
    return fields


def _without_nulls(encoded: pl.Expr) -> pl.Expr:
    """Umami refuses ``"name": null`` where it accepts an absent name: null members cut out."""
    return encoded.str.replace_all(_NULL_MEMBER, "").str.replace_all(_FIRST_NULL_MEMBER, "{")


def _with_data_object(encoded: pl.Expr | None, members: pl.Expr) -> pl.Expr:
    """Splice a JSON object's members into the ``data`` object text (null: none yet)."""
    inner = members.str.strip_chars().str.strip_prefix("{").str.strip_suffix("}").str.strip_chars()
    alone = pl.concat_str(pl.lit("{"), inner, pl.lit("}"))
    spliced = (
        alone
        if encoded is None
        else pl.when(encoded.is_null())
        .then(alone)
        .otherwise(pl.concat_str(encoded.str.slice(0, encoded.str.len_chars() - 1), pl.lit(","), inner, pl.lit("}")))
    )
    return pl.when(members.is_null() | (inner == "")).then(encoded).otherwise(spliced)


def elements_from_columns(frame: pl.DataFrame, website: str) -> pl.Series:
    """The JSON elements of rows spilled as columns (:func:`payload_columns`): the same text
    :func:`build_elements` writes from the source's columns (for the rejects file)."""
    return build_elements(frame.rename({COL_DATA: DATA_OBJECT}), website)
