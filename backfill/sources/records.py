"""Records a reader could not read: kept as rows that say why, or the file refused.

A CSV row with the wrong number of fields, or an NDJSON line that is not a JSON
object, is one bad record in an otherwise sound file: the reader yields it as a
row whose data columns are null, with ``_source_error`` (the reason) and
``_source_raw`` (its text, cut to ``SOURCE_RAW_MAX`` characters) set, so it is
counted and written to the rejects file instead of stopping the run. Sound rows
have both null; a chunk without a bad record has neither column (no cost on the
clean path).

When most records of the start of a file are bad, the file is not what the
reader was told it is (a wrong delimiter, not JSON lines, ...): turning every
row into a reject would only hide that, so ``refuse_mostly_bad`` refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW, SOURCE_RAW_MAX

#: Records looked at from the start of a file to tell a file with some bad records
#: from a file that is not what it was declared to be.
SAMPLE_RECORDS = 1000
#: More than this share of bad records in that sample refuses the file.
MOSTLY_BAD_SHARE = 0.5


def raw_text(record: bytes) -> str:
    """A record's text for the rejects file: line end removed, at most ``SOURCE_RAW_MAX`` characters."""
    text = record[: SOURCE_RAW_MAX * 4].decode("utf-8", "replace").rstrip("\r\n")
    return text[:SOURCE_RAW_MAX]


def mark_bad(frame: pl.DataFrame, bad: dict[int, tuple[str, str]]) -> pl.DataFrame:
    """Null every data column of the rows whose ``_row`` is in ``bad``; set their reason and text.

    ``bad`` maps ``_row`` -> (reason, raw text). Rows not in it keep their values and
    get null ``_source_error``/``_source_raw``.
    """
    rows = list(bad)
    marks = pl.DataFrame(
        {
            COL_ROW: pl.Series(rows, dtype=frame.schema[COL_ROW]),
            COL_SOURCE_ERROR: pl.Series([bad[r][0] for r in rows], dtype=pl.String),
            COL_SOURCE_RAW: pl.Series([bad[r][1] for r in rows], dtype=pl.String),
        }
    )
    frame = frame.drop(COL_SOURCE_ERROR, COL_SOURCE_RAW, strict=False)
    joined = frame.join(marks, on=COL_ROW, how="left", maintain_order="left")
    is_bad = pl.col(COL_SOURCE_ERROR).is_not_null()
    data = [c for c in frame.columns if c != COL_ROW]
    return joined.with_columns(pl.when(is_bad).then(None).otherwise(pl.col(c)).alias(c) for c in data)


def bad_rows_frame(rows: Sequence[int], reasons: Sequence[str], raws: Sequence[str]) -> pl.DataFrame:
    """Rows with no data at all, only their number, reason and text (for ``pl.concat(how="diagonal")``)."""
    return pl.DataFrame(
        {
            COL_ROW: pl.Series(list(rows), dtype=pl.UInt64),
            COL_SOURCE_ERROR: pl.Series(list(reasons), dtype=pl.String),
            COL_SOURCE_RAW: pl.Series(list(raws), dtype=pl.String),
        }
    )


def refuse_mostly_bad(frames: Iterable[pl.DataFrame], name: str, *, unit: str, hint: str) -> Iterator[pl.DataFrame]:
    """Pass frames through, unless most of the first ``SAMPLE_RECORDS`` records are bad.

    Frames are held back until the sample is complete (or the file ends), so a
    refused file yields no row at all. ``unit`` names a record ("data row", "line").
    """
    iterator = iter(frames)
    held: list[pl.DataFrame] = []
    seen = bad = 0
    first: tuple[int, str] | None = None
    for frame in iterator:
        held.append(frame)
        seen += frame.height
        if COL_SOURCE_ERROR in frame.columns:
            errors = frame.select(COL_ROW, COL_SOURCE_ERROR).filter(pl.col(COL_SOURCE_ERROR).is_not_null())
            bad += errors.height
            if first is None and errors.height:
                first = (int(errors[COL_ROW][0]), str(errors[COL_SOURCE_ERROR][0]))
        if seen >= SAMPLE_RECORDS:
            break
    if first is not None and bad > seen * MOSTLY_BAD_SHARE:
        row, reason = first
        raise SourceError(
            f"{name}: {bad} of the first {seen} {unit}s cannot be read, so the file is refused as a "
            f"whole rather than rejected row by row; the first is {unit} {row}: {reason}. {hint}"
        )
    yield from held
    held.clear()
    yield from iterator
