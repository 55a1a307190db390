"""A GA4 param's value fields: which one a param takes, and which events say two things.

BigQuery gives every event param a ``value`` record with four fields
(``string_value``, ``int_value``, ``float_value``, ``double_value``); GA4's tag
sets one. Exports that went through other tools sometimes set two: the same
value twice (string "16.22" and double 16.22, harmless), or two different
figures (int 3082 beside double 30.82: the amount and the same amount in cents).
The second kind is a choice the user should see, named by file and line.
"""

from __future__ import annotations

import polars as pl

#: Order in which a param's value fields are taken when more than one is set.
VALUE_ORDER = ("string_value", "int_value", "double_value", "float_value")
#: The same for a number param (``value``): a decimal field before an integer one. GA4's tag
#: writes an amount with decimals to double_value; an int_value beside it that differs is
#: the same amount in minor units (3082 cents for 30.82) or another tool's figure.
NUMBER_ORDER = ("double_value", "float_value", "string_value", "int_value")
#: Relative difference under which two value fields hold the same number (float_value
#: is a 32-bit float: 30.82 comes back as 30.8199997).
SAME_NUMBER = 1e-6
#: Disagreeing params named by file:line in the note, at most.
NAMED_LINES = 5
#: Per event: its first param whose value fields disagree, shown ("value: int_value 3082, ...").
DISAGREE = "__ga4_multi"
#: Per event: its first param with more than one value field set, all holding the same value.
SAME = "__ga4_same"


def choose(fields: dict[str, pl.Expr], key: pl.Expr, number_keys: list[str]) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(the value as text, the param shown where its fields disagree, shown where they agree).

    ``fields``: the value fields the export has, by name, as text; ``key`` the param's key.
    A number param (``number_keys``) takes :data:`NUMBER_ORDER`, any other :data:`VALUE_ORDER`.
    """
    set_fields = [expr.is_not_null() for expr in fields.values()]
    doubled = pl.sum_horizontal(set_fields) > 1
    shown = pl.concat_str(
        key,
        pl.lit(": "),
        pl.concat_str([pl.lit(f"{f} ") + expr for f, expr in fields.items()], separator=", ", ignore_nulls=True),
    )
    numbers = [_as_number(expr) for expr in fields.values()]
    all_numbers = pl.sum_horizontal(n.is_not_null() for n in numbers) == pl.sum_horizontal(set_fields)
    high, low = pl.max_horizontal(numbers), pl.min_horizontal(numbers)
    same_number = all_numbers & ((high - low).abs() <= SAME_NUMBER * pl.max_horizontal(high.abs(), low.abs(), 1.0))
    texts = [expr.str.strip_chars() for expr in fields.values()]
    same_text = pl.max_horizontal(texts) == pl.min_horizontal(texts)
    agree = doubled & (same_number | same_text).fill_null(False)
    value = (
        pl.when(key.is_in(number_keys))
        .then(pl.coalesce(fields[f] for f in NUMBER_ORDER if f in fields))
        .otherwise(pl.coalesce(fields[f] for f in VALUE_ORDER if f in fields))
    )
    return value, pl.when(doubled & agree.not_()).then(shown), pl.when(agree).then(shown)


def _as_number(text: pl.Expr) -> pl.Expr:
    """A value field as a number; "true" / "false" count as 1 / 0 (``outbound`` is written
    both ways: string_value "true" beside int_value 1 say the same)."""
    clean = text.str.strip_chars()
    words = {"true": 1.0, "false": 0.0}
    boolean = clean.str.to_lowercase().replace_strict(words, default=None, return_dtype=pl.Float64)
    return pl.coalesce(clean.cast(pl.Float64, strict=False), boolean)


class FieldClashes:
    """Over one file: the events whose value fields disagree (the first named by line)
    and the ones that only repeat the same value, for the run's notes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.disagree = 0
        self.lines: list[tuple[int, str]] = []
        self.same = 0
        self.same_example: str | None = None

    def add(self, rows: pl.Series, params: pl.DataFrame, index: str) -> None:
        """``rows``: the line of each event of the chunk; ``params``: its pivoted params,
        ``index`` naming their event's position in the chunk."""
        if DISAGREE not in params.columns:
            return
        clashes = params.filter(pl.col(DISAGREE).is_not_null())
        self.disagree += clashes.height
        if clashes.height and len(self.lines) < NAMED_LINES:
            lines = rows.gather(clashes.get_column(index).head(NAMED_LINES - len(self.lines)))
            self.lines += zip(lines.to_list(), clashes.get_column(DISAGREE).to_list(), strict=False)
        same = params.get_column(SAME).drop_nulls()
        self.same += same.len()
        self.same_example = self.same_example or (same[0] if same.len() else None)

    def notes(self) -> list[str]:
        notes = []
        if self.disagree:
            named = "; ".join(f"{self.path}:{line} ({shown})" for line, shown in self.lines)
            more = f"; and {self.disagree - len(self.lines):,} more" if self.disagree > len(self.lines) else ""
            notes.append(
                f"ga4: {self.disagree:,} events have a param whose value fields disagree: {named}{more}. "
                f"For `value` the decimal field was kept ({', '.join(NUMBER_ORDER)}, the first set): GA4's tag "
                "writes an amount with decimals to double_value, and an int_value that differs from it is "
                "usually the same amount in minor units (cents); for text params the first set of "
                f"{', '.join(VALUE_ORDER)} (mappings/ga4.yaml). Check these lines in GA4 if the amounts matter"
            )
        if self.same:
            notes.append(
                f"ga4: {self.path}: {self.same:,} events have a param in more than one value field, "
                f"all the same value (e.g. {self.same_example}); nothing to choose, that value was used"
            )
        return notes
