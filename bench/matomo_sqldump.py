"""How fast a mysqldump file's Matomo tables are read: rows/s of the dump -> TSV conversion.

    .venv/bin/python bench/matomo_sqldump.py --actions 1000000

Generates a dump shaped as MySQL 8's mysqldump writes Matomo's log_link_visit_action
(its 25 columns, ``_binary`` idvisitor, extended inserts of ~1 MB lines) into
bench/out/, then times the conversion and prints rows/s and the peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backfill.sources.matomo_sqldump import DumpConverter

COLUMNS = (
    "idlink_va",
    "idsite",
    "idvisitor",
    "idvisit",
    "idaction_url_ref",
    "idaction_name_ref",
    "custom_float",
    "pageview_position",
    "server_time",
    "idpageview",
    "idaction_name",
    "idaction_url",
    "search_cat",
    "search_count",
    "time_spent_ref_action",
    "idaction_product_cat",
    "idaction_product_cat2",
    "idaction_product_cat3",
    "idaction_product_cat4",
    "idaction_product_cat5",
    "idaction_product_name",
    "product_price",
    "idaction_product_sku",
    "idaction_event_action",
    "idaction_event_category",
)


def generate(path: str, actions: int) -> None:
    """A dump of ``actions`` rows of log_link_visit_action in ~1 MB INSERT lines."""
    defs = ",\n".join(
        f"  `{c}` binary(8) NOT NULL" if c == "idvisitor" else f"  `{c}` varchar(255) DEFAULT NULL" for c in COLUMNS
    )
    with open(path, "wb") as out:
        out.write(f"CREATE TABLE `matomo_log_link_visit_action` (\n{defs}\n) ENGINE=InnoDB;\n".encode())
        rows: list[bytes] = []
        size = 0
        for i in range(1, actions + 1):
            visitor = (i // 4).to_bytes(8, "big").replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\0", b"\\0")
            row = (
                f"({i},1,_binary '".encode()
                + visitor
                + f"',{i // 4},{i - 1},{i % 500},NULL,{i % 4},'2024-03-{1 + i % 28:02d} 10:{i % 60:02d}:00',"
                f"'pv{i % 100000}',{i % 700},{i % 900},NULL,NULL,{i % 30},NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,"
                f"NULL,NULL)".encode()
            )
            rows.append(row)
            size += len(row)
            if size > 1_000_000:
                out.write(b"INSERT INTO `matomo_log_link_visit_action` VALUES " + b",".join(rows) + b";\n")
                rows, size = [], 0
        if rows:
            out.write(b"INSERT INTO `matomo_log_link_visit_action` VALUES " + b",".join(rows) + b";\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1_000_000)
    args = parser.parse_args()
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    os.makedirs(folder, exist_ok=True)
    dump = os.path.join(folder, f"matomo-{args.actions}.sql")
    if not os.path.exists(dump):
        generate(dump, args.actions)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        DumpConverter(dump, tmp).run()
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mb = os.path.getsize(dump) / 1e6
    print(
        f"{args.actions:,} action rows, {mb:.0f} MB dump: {elapsed:.1f} s, "
        f"{args.actions / elapsed:,.0f} rows/s, {mb / elapsed:.1f} MB/s, peak RSS {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
