"""Generate realistic event files of any size for benchmarks (CSV, Parquet, NDJSON.gz).

    python bench/generate.py --rows 1000000 --format csv --out bench/out/events-1m.csv

Columns match ``bench/events.yaml``. Built column-wise with polars, in blocks,
so making a 20M-row file needs little memory.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import polars as pl

BLOCK = 500_000
START = 1_704_067_200  # 2024-01-01
SPAN = 365 * 86_400
PATHS = [f"/blog/post-{i}" for i in range(400)] + ["/", "/pricing", "/signup", "/docs", "/features"]
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",  # noqa: E501
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",  # noqa: E501
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",  # noqa: E501
]
REFERRERS = [
    "",
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://t.co/abc",
    "https://duckduckgo.com/",
]
EVENTS = ["pageview"] * 14 + ["signup", "download", "add_to_cart", "purchase"]
LANGS = ["en-US", "de-DE", "fr-FR", "en-GB", "es-ES"]
SCREENS = ["1920x1080", "1440x900", "390x844", "2560x1440"]
#: ``--countries``: a visitor's country (ISO 3166-1), weighted roughly like a site's audience.
COUNTRIES = ["US"] * 8 + ["DE"] * 4 + ["GB"] * 3 + ["FR"] * 3 + ["IN"] * 2 + ["BR", "JP", "CA", "NL", "ES", "IT", "PL"]
COUNTRIES += ["SE", "AU", "KR", "MX", "CZ", "TR", "CH", "AT", "BE", ""]


def block(start_row: int, rows: int, visitors: int, seed: int, countries: bool = False) -> pl.DataFrame:
    """One block of events, time-ordered within the block (blocks follow each other in time);
    with ``countries`` a ``country`` column too, one per visitor ("" for an unknown one)."""
    idx = pl.int_range(start_row, start_row + rows, eager=True).alias("i")
    frame = pl.DataFrame({"i": idx})
    h = pl.col("i").hash(seed)

    def pick(values: list[str], salt: int) -> pl.Expr:
        return pl.lit(pl.Series(values)).gather((pl.col("i").hash(seed + salt) % len(values)).cast(pl.Int64))

    country = pl.lit(pl.Series(COUNTRIES)).gather(((h % visitors).hash(seed + 7) % len(COUNTRIES)).cast(pl.Int64))
    out = frame.select(
        pl.from_epoch(START + pl.col("i") * SPAN // max(1, TOTAL[0]), "s")
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("timestamp"),
        pl.format("v{}", (h % visitors)).alias("visitor_id"),
        pick(EVENTS, 1).alias("event"),
        pl.concat_str(
            pick(PATHS, 2),
            pl.when(h % 9 == 0).then(pl.lit("?utm_source=newsletter&utm_medium=email")).otherwise(pl.lit("")),
        ).alias("url"),
        pl.lit("www.example.com").alias("hostname"),
        pick(REFERRERS, 3).alias("referrer"),
        pl.format("Page {}", pick(PATHS, 2)).alias("title"),
        pick(UAS, 4).alias("user_agent"),
        pick(LANGS, 5).alias("language"),
        pick(SCREENS, 6).alias("screen"),
        pl.when(pick(EVENTS, 1) == "purchase").then((h % 20_000) / 100 + 1).otherwise(None).alias("revenue"),
        pl.when(pick(EVENTS, 1) == "purchase").then(pl.lit("USD")).otherwise(None).alias("currency"),
        country.alias("country"),
    )
    return out if countries else out.drop("country")


TOTAL = [1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--format", choices=["csv", "parquet", "ndjson.gz"], required=True)
    parser.add_argument("--visitors", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=7, help="the same seed writes the same rows")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--countries", action="store_true", help="add a country column (one per visitor)")
    args = parser.parse_args()
    TOTAL[0] = args.rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    blocks = (
        block(s, min(BLOCK, args.rows - s), args.visitors, args.seed, args.countries)
        for s in range(0, args.rows, BLOCK)
    )
    if args.format == "csv":
        with open(args.out, "wb") as fh:
            for n, b in enumerate(blocks):
                b.write_csv(fh, include_header=n == 0)
    elif args.format == "ndjson.gz":
        with gzip.open(args.out, "wb", compresslevel=3) as fh:
            for b in blocks:
                b.write_ndjson(fh)
    else:
        import pyarrow.parquet as pq

        writer = None
        for b in blocks:
            table = b.to_arrow()
            writer = writer or pq.ParquetWriter(str(args.out), table.schema, compression="zstd")
            writer.write_table(table)
        if writer:
            writer.close()
    print(f"wrote {args.rows:,} rows to {args.out}")


if __name__ == "__main__":
    main()
