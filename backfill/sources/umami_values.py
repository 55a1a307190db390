"""Column expressions that turn Umami's stored values back into what its API takes.

Umami splits what it receives (a url into url_path and url_query, a referrer
into domain, path and query, event properties into one typed row per key);
these expressions put each back together so that sending it again stores the
same values. Used by ``backfill.sources.umami_export``.
"""

from __future__ import annotations

import polars as pl

S = pl.String()

#: Umami's export prefixes a text cell starting with one of these with ' (against
#: spreadsheet formula injection); the quote is not part of the stored value.
FORMULA_TRIGGERS = "=+-@\t\r"
#: A JSON number as Umami's decimal(19,4) is written (PostgreSQL "49.9900", ClickHouse "49.99").
_JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"
#: Umami's DATA_TYPE codes (src/lib/constants.ts).
DATA_STRING, DATA_NUMBER, DATA_BOOLEAN, DATA_DATE, DATA_ARRAY = 1, 2, 3, 4, 5


def formula_unquoted(expr: pl.Expr) -> pl.Expr:
    """Text with the export's anti-formula quote taken off; blank becomes null."""
    text = expr.cast(S)
    quoted = text.str.contains(f"^'[{FORMULA_TRIGGERS}]")
    text = pl.when(quoted).then(text.str.slice(1)).otherwise(text)
    return pl.when(text == "").then(None).otherwise(text)


def epoch_ms(expr: pl.Expr) -> pl.Expr:
    """Unix milliseconds of a stored time: ISO with T or a space, any fraction, Z, +00,
    +01:00 or no zone (UTC: ClickHouse ``DateTime('UTC')`` is written without one).
    Null when it is not such a time. Two fixed-format parses (a regex is 40x slower)."""
    text = (
        expr.cast(S)
        .str.strip_chars()
        .str.replace("T", " ", literal=True, n=1)
        .str.replace(r"Z$", "+00:00")
        .str.replace(r" ([+-])", "$1")
    )
    zoned = text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f%#z", strict=False, time_unit="us")
    naive = text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    return pl.coalesce(zoned.dt.convert_time_zone("UTC"), naive).dt.epoch("ms")


def iso_millis(ms: pl.Expr) -> pl.Expr:
    """``2024-03-01T08:00:00.000Z``: how Umami writes a date property (JavaScript toISOString)."""
    return pl.from_epoch(ms, time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")


def json_string(expr: pl.Expr) -> pl.Expr:
    """A JSON string literal (quotes and escapes) of a text column; polars does the escaping."""
    encoded = pl.struct(expr.cast(S).alias("x")).struct.json_encode()
    return encoded.str.slice(5, encoded.str.len_chars() - 6)


def data_value(data_type: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(JSON value text, problem) of one event_data / session_data row, by its data_type.

    Number: the stored decimal as a JSON number; boolean: true/false; date: the ISO
    text Umami itself sends back; array: its stored JSON; string (and anything else):
    a JSON string. Problem is a reason text when the row cannot be rebuilt.
    """
    string = pl.col("string_value")
    number = pl.coalesce(pl.col("number_value"), string).str.strip_chars()
    boolean = string.str.strip_chars().str.to_lowercase()
    date_ms = pl.coalesce(epoch_ms(string), epoch_ms(pl.col("date_value")))
    array = string.str.strip_chars()
    value = (
        pl.when(data_type == DATA_NUMBER)
        .then(pl.when(number.str.contains(_JSON_NUMBER)).then(number))
        .when(data_type == DATA_BOOLEAN)
        .then(pl.when(boolean.is_in(["true", "false"])).then(boolean))
        .when(data_type == DATA_DATE)
        .then(pl.when(date_ms.is_not_null()).then(json_string(iso_millis(date_ms))))
        .when(data_type == DATA_ARRAY)
        .then(pl.when(array.str.contains(r"^(\[.*\]|null)$")).then(array))
        .when(string.is_null())
        .then(pl.lit("null"))
        .otherwise(json_string(string))
    )
    what = (
        pl.when(data_type == DATA_NUMBER)
        .then(pl.lit("a number"))
        .when(data_type == DATA_BOOLEAN)
        .then(pl.lit("true or false"))
        .when(data_type == DATA_DATE)
        .then(pl.lit("a date"))
        .otherwise(pl.lit("a JSON array"))
    )
    problem = pl.when(value.is_null()).then(
        pl.concat_str(
            pl.lit('data_key "'),
            pl.col("data_key").fill_null(""),
            pl.lit('"'),
            pl.lit(": data_type "),
            data_type.cast(S),
            pl.lit(" needs "),
            what,
            pl.lit(', the row has "'),
            pl.coalesce(string, pl.col("number_value"), pl.col("date_value"), pl.lit("")),
            pl.lit('"'),
        )
    )
    return value, problem


def data_members(frame: pl.DataFrame) -> pl.DataFrame:
    """Adds ``member`` (``"key":value``) and ``problem`` to event_data / session_data rows."""
    data_type = pl.col("data_type").cast(pl.Int64, strict=False).fill_null(DATA_STRING)
    value, problem = data_value(data_type)
    member = pl.concat_str(json_string(pl.col("data_key").fill_null("")), pl.lit(":"), value)
    return frame.with_columns(member.alias("member"), problem.alias("problem"))


def join_members(members: pl.Expr) -> pl.Expr:
    """An aggregation: the members of one event as a JSON object, keys in sorted order."""
    return pl.concat_str(pl.lit("{"), members.sort().str.join(","), pl.lit("}"))


def rebuilt_url(path: pl.Expr, query: pl.Expr) -> pl.Expr:
    """url_path (which holds the #fragment) + url_query -> the url Umami splits the same way."""
    base = path.str.replace(r"#.*$", "")
    fragment = path.str.extract(r"(#.*)$", 1).fill_null("")
    has_query = query.is_not_null() & (query != "")
    return (
        pl.when(path.is_null() & has_query.not_())
        .then(None)
        .when(has_query)
        .then(pl.concat_str(base.fill_null(""), pl.lit("?"), query, fragment))
        .otherwise(path)
    )


def rebuilt_referrer(domain: pl.Expr, path: pl.Expr, query: pl.Expr) -> pl.Expr:
    """``https://`` + domain + path + ?query; null without a domain (Umami keeps none then)."""
    has_query = query.is_not_null() & (query != "")
    return pl.when(domain.is_not_null()).then(
        pl.concat_str(
            pl.lit("https://"),
            domain,
            path.fill_null(""),
            pl.when(has_query).then(pl.concat_str(pl.lit("?"), query)).otherwise(pl.lit("")),
        )
    )
