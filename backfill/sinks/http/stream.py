"""A send run's reading side: classify each row of the stream (sent before, in doubt,
left in flight by a killed process, or to send) and queue the ones to send by lane."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from .doubt import EARLIER_IN_DOUBT, FRESH, IN_DOUBT_KILLED, KILLED_IN_FLIGHT
from .grouping import windows
from .state import RunState


class StreamReading(RunState):
    """The caller's thread of a send run (see :class:`~.state.RunState`)."""

    def _read(self, frames: Iterator[pl.DataFrame]) -> bool:
        """Classify each frame's rows and queue the ones to send; True when the stream ended."""
        expected_seq: int | None = None
        window, last_key = -1, None
        for key, frame in windows(frames, self.crossing, lanes=self.settings.lanes):
            if self._halted():
                return False
            if key is None or key != last_key:  # a new window: the lanes may differ from here on
                self.queues.seal(window)
                window += 1
            last_key = key
            rows = self._tag(frame, expected_seq)
            expected_seq = int(rows["_seq"][-1]) + 1
            self.rows_seen += rows.height
            self._route(rows, window)
            if key is None:  # regrouped: the window is whole
                self.queues.seal(window)
            self.queues.wait_below_bound(self._halted)
        return not self._halted()

    def _tag(self, frame: pl.DataFrame, expected_seq: int | None) -> pl.DataFrame:
        """Add ``_origin``/``_rid``/``_nbytes`` and whether each row is to be sent."""
        twin = pl.len().over("_visitor", "_ts") > 1 if self.settle else pl.lit(False)
        rows = frame.select(
            twin.alias("_twin"),
            pl.col("_seq").cast(pl.Int64),
            pl.col("_lane").cast(pl.Int64),
            pl.col("_file").cast(pl.Int64),
            pl.col("_row").cast(pl.Int64),
            pl.col("_json"),
            pl.col("_geo"),
            pl.col("_seg"),
            pl.col("_open"),
        )
        _check_stream(rows, expected_seq, self.settings.lanes)
        acked = self.start_acked.gather(rows["_lane"])
        doubt_rid = self._range_ids(rows, [(r.lane, r.first, r.last) for r in self.tracked])
        killed_rid = self._range_ids(rows, [(k.lane, k.first, k.last) for k in self.killed.values()])
        resend = self.settings.resend_in_doubt
        rows = rows.with_columns(
            _nbytes=pl.col("_json").str.len_bytes(),
            _rid=doubt_rid,
            _kid=killed_rid,
            _acked=acked,
        ).with_columns(
            _origin=pl.when(pl.col("_rid").is_not_null())
            .then(pl.lit(EARLIER_IN_DOUBT))
            .when(pl.col("_kid").is_not_null())
            .then(pl.lit(KILLED_IN_FLIGHT))
            .otherwise(pl.lit(FRESH))
            .cast(pl.Int8)
        )
        rows = rows.with_columns(_verdict=self._verdicts(rows))
        again = pl.lit(resend) | ((pl.col("_origin") == EARLIER_IN_DOUBT) & (pl.col("_verdict") == False))  # noqa: E712
        send = pl.when(pl.col("_origin") == FRESH).then(pl.col("_seq") > pl.col("_acked")).otherwise(again)
        return rows.with_columns(_send=send.fill_null(False))

    def _verdicts(self, rows: pl.DataFrame) -> pl.Series:
        """What reading Umami back said of each row in doubt: stored (True), not (False), or null.

        A row found stored is settled only when no other row of the import has its
        visitor and second (``_twin``): the event Umami holds could be that one's.
        """
        if not self.settle:
            return pl.Series("_verdict", [None] * rows.height, dtype=pl.Boolean)
        table = pl.DataFrame(
            {
                "_file": [k[0] for k in self.settle],
                "_row": [k[1] for k in self.settle],
                "_found": list(self.settle.values()),
            },
            schema={"_file": pl.Int64, "_row": pl.Int64, "_found": pl.Boolean},
        )
        found = rows.select("_file", "_row", "_twin").join(
            table, on=["_file", "_row"], how="left", maintain_order="left"
        )
        verdict = pl.when(pl.col("_found") & pl.col("_twin")).then(None).otherwise(pl.col("_found"))
        return found.select(verdict.alias("_verdict")).to_series()

    @staticmethod
    def _range_ids(rows: pl.DataFrame, ranges: list[tuple[int, int, int]]) -> pl.Series:
        """Index of the range (lane, first..last) holding each row, or null."""
        if not ranges:
            return pl.Series(values=[None] * rows.height, dtype=pl.Int64)
        table = pl.DataFrame(
            {
                "_lane": [r[0] for r in ranges],
                "_first": [r[1] for r in ranges],
                "_last": [r[2] for r in ranges],
                "_id": list(range(len(ranges))),
            },
            schema={"_lane": pl.Int64, "_first": pl.Int64, "_last": pl.Int64, "_id": pl.Int64},
        ).sort("_first")
        joined = rows.select("_seq", "_lane").join_asof(
            table, left_on="_seq", right_on="_first", by="_lane", check_sortedness=False
        )
        return joined.select(pl.when(pl.col("_seq") <= pl.col("_last")).then(pl.col("_id"))).to_series()

    def _route(self, rows: pl.DataFrame, window: int) -> None:
        """Skip finished rows, record killed-in-flight rows, queue the rest by lane."""
        resend = self.settings.resend_in_doubt
        earlier = rows.filter(pl.col("_origin") == EARLIER_IN_DOUBT)
        if earlier.height:
            with self.lock:
                self.doubt_keys.update(zip(earlier["_file"], earlier["_row"], strict=True))
                if resend or self.settle:
                    for rid, seq in zip(earlier["_rid"], earlier["_seq"], strict=True):
                        self.tracked[rid].seen.append(seq)
            self._settle_found(earlier.filter(pl.col("_verdict").fill_null(False)))
        if not resend and self.killed:
            killed = rows.filter(pl.col("_kid").is_not_null())
            for (lane,), part in killed.partition_by("_lane", as_dict=True).items():
                entry = self.killed[int(lane)]
                entry.seen += part.height
                entry.parts.append(part.filter(pl.col("_origin") == KILLED_IN_FLIGHT))
            self._finalize_killed(upto=int(rows["_seq"][-1]))
        sendable = rows.filter("_send")
        skipped = rows.height - sendable.height - (0 if resend else _count_killed(rows))
        self.rows_skipped += skipped - int(rows["_verdict"].fill_null(False).sum())
        sendable = sendable.select(
            "_seq", "_lane", "_file", "_row", "_json", "_nbytes", "_origin", "_rid", "_geo", "_seg", "_open"
        )
        for (lane,), part in sendable.partition_by("_lane", as_dict=True, include_key=False).items():
            self.queues.put(int(lane), part, window)

    def _settle_found(self, rows: pl.DataFrame) -> None:
        """Rows in doubt that reading Umami back found stored: accepted, no longer in doubt."""
        if rows.height == 0:
            return
        with self.lock:
            self.ledger.read += rows.height
            self.ledger.accepted += rows.height
            self.total.accepted += rows.height
            self._resolve_earlier(rows)
            version = self._changed()
        self._durable(version)

    def _finalize_killed(self, upto: int | None) -> None:
        """Record in doubt the rows of interrupted batches the stream has fully passed.

        Runs before the lane's later rows are queued, so the lane's in-flight
        slot is free (and the rows listed) before anything else of it is sent.
        With ``resend_in_doubt`` the rows are queued instead, and the lane's
        next request takes over the entry.
        """
        if self.settings.resend_in_doubt:
            return
        for lane, entry in list(self.killed.items()):
            if upto is not None and entry.last > upto:
                continue
            rows = pl.concat(entry.parts) if entry.parts else None
            with self.lock:
                if rows is not None and rows.height:
                    self._record_in_doubt(lane, rows, IN_DOUBT_KILLED)
                    self.recorded_on_resume += rows.height
                self.cp.lane_acked[lane] = max(self.cp.lane_acked[lane], entry.last)
                self.cp.lane_inflight[lane] = None
                version = self._changed()
            self._durable(version)
            del self.killed[lane]
            if entry.seen != entry.count:
                self.notes.append(
                    f"lane {lane}: the interrupted batch had {entry.count} rows but the input"
                    f" now gives {entry.seen}: did the prepared data change?"
                )


def _check_stream(rows: pl.DataFrame, expected_seq: int | None, lanes: int) -> None:
    """The prepared stream's contract: contiguous ``_seq``, lanes in range."""
    first, last = int(rows["_seq"][0]), int(rows["_seq"][-1])
    if expected_seq is not None and first != expected_seq:
        raise ValueError(f"prepared stream: _seq jumps from {expected_seq - 1} to {first}")
    if last - first + 1 != rows.height or not rows["_seq"].is_sorted():
        raise ValueError(f"prepared stream: _seq {first}..{last} is not contiguous")
    top = rows["_lane"].max()
    if top is not None and int(top) >= lanes:  # type: ignore[arg-type]
        raise ValueError(f"prepared stream: lane {top} but only {lanes} lanes")


def _count_killed(rows: pl.DataFrame) -> int:
    return int((rows["_origin"] == KILLED_IN_FLIGHT).sum())
