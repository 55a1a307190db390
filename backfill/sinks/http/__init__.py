"""The HTTP sink: Umami's ``/api/batch`` (or ``/api/send``), through the throttled, checkpointed sender.

The package, by concern:

- :mod:`.settings`: :class:`SendSettings`, the HTTP client, the checks before the first row;
- :mod:`.answers`: reading a batch answer (element errors, refusals of the whole run);
- :mod:`.attempt`: one POST, classified (answered, retry, too large, in doubt, refused);
- :mod:`.grouping`: the prepared stream regrouped into lanes and segments (location, visit);
- :mod:`.queues`: lane queues, batches and the body limit;
- :mod:`.doubt`: rows whose fate is unknown, from earlier runs and in the in-doubt file;
- :mod:`.readback`: rows in doubt settled by reading Umami back (with read credentials);
- :mod:`.run` (with :mod:`.state`, :mod:`.stream`, :mod:`.delivery`, :mod:`.books`): one send run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ...ledger import Ledger
from ...ordering import emit
from ...umami.api import ReadTimeUp
from .. import Delivery
from ..outcome import SendOutcome, SendProgress
from .answers import BatchVerdict, ElementError, describe_element_error, read_batch_answer, run_wide_refusal
from .doubt import IN_DOUBT_KILLED
from .grouping import regroup, regrouped
from .readback import Verdicts, in_doubt_records, read_back
from .run import send_stream
from .settings import SendSettings, make_client, preflight

#: Seconds (at most ``--timeout``) to wait before reading back rows put in doubt by this run.
READBACK_QUIET_S = 10.0

__all__ = [
    "IN_DOUBT_KILLED",
    "BatchVerdict",
    "ElementError",
    "HttpSink",
    "SendOutcome",
    "SendProgress",
    "SendSettings",
    "describe_element_error",
    "make_client",
    "preflight",
    "read_batch_answer",
    "regroup",
    "regrouped",
    "run_wide_refusal",
    "send_stream",
]


@dataclass
class HttpSink:
    """Sends to a running Umami; ``check_website`` reads the website back first (credentials)."""

    settings: SendSettings
    check_website: bool = False
    say: Callable[[str], None] | None = None  # set by preflight: a line for the user, at once

    kind = "http"

    def destination(self) -> dict[str, Any]:
        return {"host": self.settings.host, "website": self.settings.website}

    def preflight(self, say: Callable[[str], None]) -> None:
        from ...umami.api import check_website

        self.say = say
        preflight(self.settings)
        if self.check_website:
            with make_client(self.settings) as client:
                answer = check_website(client, self.settings.read_api, self.settings.website)
                say(f"website {self.settings.website}: {answer}")

    def deliver(self, delivery: Delivery) -> SendOutcome:
        # The earlier run's requests left on the wire were sent before its last save.
        earlier_save = _epoch(delivery.checkpoint.updated_at)
        outcome = self._send(delivery, delivery.run_ledger)
        if outcome.completed and outcome.cumulative.in_doubt and not self.settings.resend_in_doubt:
            from ...umami.api import have_credentials

            if have_credentials():
                return self._settle_in_doubt(delivery, outcome, earlier_save)
        return outcome

    def _send(
        self, delivery: Delivery, ledger: Ledger, settle: dict[tuple[int, int], bool] | None = None
    ) -> SendOutcome:
        prepared = delivery.prepared
        return send_stream(
            emit(prepared.runs),
            prepared.files,
            self.settings,
            delivery.checkpoint,
            delivery.checkpoint_path,
            delivery.rejects,
            delivery.in_doubt,
            ledger,
            delivery.progress,
            delivery.stop,
            crossing=prepared.visits,
            settle=settle,
            announce=self.say,
        )

    def _settle_in_doubt(self, delivery: Delivery, first: SendOutcome, earlier_save: float) -> SendOutcome:
        """Read the rows in doubt back from Umami, then pass over the stream once more: rows
        found stored are accepted, rows not found are sent again (in their lanes' order)."""
        # A request cut off in this run, or in the killed one before it, may still be running on
        # Umami (it stores a batch's elements one after another): give it time to finish before
        # looking. The killed run's requests have had the time since its last save already.
        quiet = min(self.settings.timeout, READBACK_QUIET_S)
        if first.ledger.in_doubt == first.in_doubt_recorded_on_resume:
            quiet -= time.time() - earlier_save
        if first.ledger.in_doubt and quiet > 0 and delivery.stop.wait(quiet):
            return first
        delivery.in_doubt.close()
        verdicts = self._read_back(in_doubt_records(delivery.in_doubt.path))
        if isinstance(verdicts, str):
            first.notes.append(f"the rows in doubt could not be read back from Umami: {verdicts}")
            return first
        note = (
            f"rows in doubt read back from Umami: {len(verdicts.found):,} were stored (accepted),"
            f" {len(verdicts.absent):,} were not (sent again), {verdicts.unknown:,} cannot be told (still in doubt)"
        )
        if verdicts.problems:
            note += f" ({'; '.join(verdicts.problems)})"
        if verdicts.not_read:
            note += (
                f"; the read-back stopped after {self.settings.read_back_timeout:g} s (--read-back-timeout) before"
                f" {verdicts.not_read:,} rows were looked at: run the same command again to read them back"
            )
        if not verdicts.decided:
            first.notes.append(note)
            return first
        index = {path: i for i, path in enumerate(delivery.prepared.files)}
        settle = {(index[f], r): True for f, r in verdicts.found if f in index}
        settle.update({(index[f], r): False for f, r in verdicts.absent if f in index})
        second_ledger = Ledger()
        second = self._send(delivery, second_ledger, settle)
        return _merged(first, second, delivery.run_ledger, second_ledger, note)

    def _read_back(self, records: list[dict[str, Any]]) -> Verdicts | str:
        """The verdicts on the rows in doubt, within ``read_back_timeout``; or why none could be had."""
        from ...errors import BackfillError
        from ...umami.api import ReadApi, auth_headers, visible_since

        api_url = self.settings.read_api
        deadline = time.monotonic() + self.settings.read_back_timeout
        try:
            with make_client(self.settings) as client:
                api = ReadApi(client, api_url, auth_headers(client, api_url), deadline=deadline)
                return read_back(api, self.settings.website, records, visible_since=visible_since(api_url))
        except (BackfillError, ReadTimeUp) as exc:
            return str(exc) or "no answer before the read-back's deadline (--read-back-timeout)"


def _epoch(stamp: str) -> float:
    """Unix seconds of a checkpoint's ``updated_at`` (``2024-03-01T08:00:00Z``); now when unreadable."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


def _merged(first: SendOutcome, second: SendOutcome, ledger: Ledger, settled: Ledger, note: str) -> SendOutcome:
    """One outcome for the run and its settling pass: rows settled leave this run's in-doubt count."""
    read, in_doubt = ledger.read, ledger.in_doubt
    ledger.merge(settled)
    ledger.read = read  # the settling pass read no new rows
    ledger.in_doubt = max(0, in_doubt - (settled.read - settled.in_doubt))
    stale = "rows are in doubt (listed in"  # said by the first pass, before settling
    again = "source visits crossed a clock hour"  # said by the first pass for the whole import
    later = [n for n in second.notes if again not in n and n not in first.notes]
    notes = [n for n in first.notes if stale not in n] + [note] + later
    return replace(
        second,
        ledger=ledger,
        rows_seen=first.rows_seen,
        rows_skipped=first.rows_skipped,
        in_doubt_recorded_on_resume=first.in_doubt_recorded_on_resume,
        requests=first.requests + second.requests,
        elapsed_s=first.elapsed_s + second.elapsed_s,
        checkpoint_saves=first.checkpoint_saves + second.checkpoint_saves,
        checkpoint_save_s=first.checkpoint_save_s + second.checkpoint_save_s,
        visit_first_requests=first.visit_first_requests + second.visit_first_requests,
        checkpoint_wait_s=first.checkpoint_wait_s + second.checkpoint_wait_s,
        request_s=first.request_s + second.request_s,
        notes=notes,
    )
