"""A send run's workers: take a batch, send it until its fate is known, settle the answer."""

from __future__ import annotations

import random
import time
from typing import Any

from ...errors import TerminalSendError, TransientSendError
from ...throttle import WINDOW_ONE_PER_REQUEST
from ...umami.api import RunRefusedError
from .answers import read_batch_answer, run_wide_refusal, website_missing
from .attempt import Attempt, http_refusal, post_batch, post_element, refuses_the_run
from .queues import Batch
from .settings import NO_BATCH_ENDPOINT
from .state import RunState

#: Cap of the computed exponential backoff (seconds).
MAX_BACKOFF = 60.0
#: Batches in a row whose fate is unknown before the run stops (the server is not answering).
MAX_IN_DOUBT_IN_A_ROW = 3


class Delivering(RunState):
    """The worker threads of a send run (see :class:`~.state.RunState`)."""

    def _worker(self) -> None:
        try:
            while True:
                # Work first, then a slot: a worker never holds a slot while it waits for
                # work, or a retry that needs a slot back could wait for ever.
                batch = self.queues.take(self.body_limit, self._halted)
                if batch is None:
                    return
                probing = False
                try:
                    probing = self._take_probe()
                    if not probing and not self._wait_for_probe():
                        self._put_back(batch)
                        return
                    started = self.concurrency.acquire(self.halt)
                    if started is None:
                        self._put_back(batch)
                        return
                    self._deliver(batch, started)
                finally:
                    if probing:
                        self.probe_done.set()
                    self.queues.done_with(batch.lane)
        except BaseException as exc:  # a bug: stop everything, keep the checkpoint conservative
            self._abort(exc)

    def _take_probe(self) -> bool:
        with self.lock:
            if self.probe_taken:
                return False
            self.probe_taken = True
            return True

    def _wait_for_probe(self) -> bool:
        """Hold every other batch until the first one is answered; False if the run halts."""
        while not self.probe_done.wait(0.05):
            if self._halted():
                return False
        return not self.halt.is_set()

    def _deliver(self, batch: Batch, started: float) -> None:
        """Send one batch until its fate is known, retrying only what provably was not processed."""
        failures = 0
        while True:
            if batch.too_large_reason is not None:
                self.concurrency.cancel()
                self._settle_whole(batch, "rejected", batch.too_large_reason)
                return
            if self.endpoint == "send" and batch.size > 1:  # formed before the run went over to /api/send
                batch = self._first_alone(batch)
            if not self.rate.wait(batch.size, self.halt) or self.halt.is_set() or not self._mark_in_flight(batch):
                self.concurrency.cancel()
                self._put_back(batch)
                return
            body = batch.element() if self.endpoint == "send" else batch.body()
            # The request's latency is the server's: the wait for our own checkpoint write grows
            # with the requests in flight (they share one writer) and is no sign of a server's knee.
            started = self.concurrency.now()
            began = time.perf_counter()
            post = post_element if self.endpoint == "send" else post_batch
            attempt = post(self.client, self.url, body, self.settings, batch.headers)
            with self.lock:
                self.request_seconds += time.perf_counter() - began
            if self._has_no_batch_endpoint(attempt):
                self.concurrency.cancel()
                batch = self._switch_to_send(batch, attempt)
                started_again = self.concurrency.acquire(self.halt)
                if started_again is None:
                    self._put_back(batch)
                    return
                started = started_again
                continue
            if refuses_the_run(attempt, batch.size, self.endpoint):
                self.halt.set()  # before the slot is freed: no other batch may start now
            latency = self.concurrency.release(
                started,
                batch.size if attempt.kind == "answered" else 0,
                overloaded=attempt.overloaded,
                retry_after=attempt.retry_after,
            )
            self.last_latency = latency
            with self.lock:
                self.requests += 1
                if attempt.kind in ("answered", "in_doubt"):
                    self.cp.endpoint = self.endpoint  # saved with the batch's fate
            if attempt.kind == "answered":
                self._settle_answer(batch, attempt.answer)
                return
            if attempt.kind == "in_doubt":
                self._settle_whole(batch, "in_doubt", attempt.detail)
                self._stop_if_umami_is_gone(attempt)
                return
            self._clear_in_flight(batch)  # nothing was processed
            if attempt.kind == "refused":
                self._put_back(batch)
                self._abort(http_refusal(attempt))
                return
            if attempt.kind == "too_large":
                self.body_limit.note_refused(len(body))
                if batch.size == 1:
                    self._settle_whole(batch, "rejected", "larger than the server's body limit (HTTP 413)")
                    return
                batch, rest = batch.split()
                self.queues.put_back(batch.lane, rest.rows)
            else:  # retry
                failures += 1
                if failures >= self.settings.max_attempts:
                    self._give_up(batch, attempt, failures)
                    return
                self._durable(self.change_version)  # nothing stale on disk while we wait
                if self.halt.wait(self._backoff(failures, attempt.retry_after)):
                    self._put_back(batch)
                    return
            started_again = self.concurrency.acquire(self.halt)
            if started_again is None:
                self._put_back(batch)
                return
            started = started_again

    def _has_no_batch_endpoint(self, attempt: Attempt) -> bool:
        """``auto``: the server answered the import's first request as one without ``/api/batch``."""
        return (
            self.may_switch
            and self.endpoint == "batch"
            and attempt.kind == "refused"
            and attempt.status in NO_BATCH_ENDPOINT
        )

    def _switch_to_send(self, batch: Batch, attempt: Attempt) -> Batch:
        """Go on through ``/api/send`` for the whole run (nothing of the import was stored):
        the batch's first row becomes the first request, the others go back to their lane."""
        self._clear_in_flight(batch)
        with self.lock:
            self.endpoint = "send"
            self.may_switch = False
            self.cp.endpoint = "send"
        self.queues.set_batch_size(1)
        self.concurrency.set_maximum(self.settings.most_in_flight("send"), WINDOW_ONE_PER_REQUEST)
        first = self._first_alone(batch)
        message = (
            f"{self.settings.batch_url} answered HTTP {attempt.status}: this server has no batch endpoint"
            " (Umami Cloud, or Umami older than 2.17); the import goes on through /api/send, one row per"
            " request (slower; same guarantees)"
        )
        self.notes.append(message)
        self.announce(message)
        return first

    def _first_alone(self, batch: Batch) -> Batch:
        """The batch's first row as a batch of its own; the others go back to the head of the lane."""
        first, rest = batch.split_first()
        self.queues.put_back(batch.lane, rest.rows)
        return first

    def _stop_if_umami_is_gone(self, attempt: Attempt) -> None:
        """One batch in doubt is bad luck; several in a row mean Umami is not answering.

        Going on would put every remaining batch in doubt, so the run stops
        (resumable) after ``MAX_IN_DOUBT_IN_A_ROW`` of them, or at once when
        the answers are not Umami's at all.
        """
        with self.lock:
            in_a_row = self.in_doubt_in_a_row
        if attempt.not_umami:
            self._abort(
                TerminalSendError(
                    f"{self.url} answered something that is not Umami's collection"
                    f" API ({attempt.detail}): check --host; its rows are recorded as in doubt"
                )
            )
        elif in_a_row >= MAX_IN_DOUBT_IN_A_ROW:
            self._abort(
                TransientSendError(
                    f"{in_a_row} requests in a row got no usable answer from"
                    f" {self.url} (last: {attempt.detail}); the run stopped so"
                    " that no more rows go in doubt: check the server, then resume"
                )
            )

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(MAX_BACKOFF, self.settings.backoff_base * 2 ** (failures - 1))
        return base * random.uniform(0.5, 1.0)

    def _give_up(self, batch: Batch, attempt: Attempt, failures: int) -> None:
        reason = f"not sent: {attempt.detail} on {failures} attempts"
        if self.settings.on_error == "reject":
            self._settle_whole(batch, "rejected", reason)
            return
        self._put_back(batch)
        self._abort(
            TransientSendError(
                f"{self.url}: {attempt.detail} on {failures} attempts; the run"
                " stopped and resumes from here (or pass --on-error reject to list such"
                " batches as rejects and go on)"
            )
        )

    def _put_back(self, batch: Batch) -> None:
        """The batch was not processed: its rows stay unsent (the checkpoint is not advanced)."""
        self.queues.put_back(batch.lane, batch.rows)

    def _settle_answer(self, batch: Batch, answer: Any) -> None:
        try:
            verdict = read_batch_answer(answer, batch.size)
        except ValueError as exc:
            self._settle_whole(batch, "in_doubt", f"in doubt: {exc}")
            self._abort(
                TerminalSendError(
                    f"{self.url} gave an answer that does not match Umami's collection"
                    f" API ({exc}); its rows are recorded as in doubt"
                )
            )
            return
        refusal = run_wide_refusal(
            verdict,
            batch.size,
            self.settings,
            first=not self.probe_done.is_set(),  # the first batch goes alone; the rest wait for it
            rows_carry_user_agent=bool(batch.rows["_json"].str.contains('"userAgent":', literal=True).any()),
        )
        if refusal is not None:
            self._clear_in_flight(batch)  # refused as a whole: nothing stored, nothing rejected
            self._put_back(batch)
            self._abort(RunRefusedError(refusal))
            return
        refused: dict[int, tuple[str | None, str]] = {i: (e.field, e.reason) for i, e in verdict.rejected.items()}
        if verdict.bot_dropped:
            reason = (
                "dropped by Umami's bot filter (nothing stored): the User-Agent"
                f" {self.settings.user_agent!r} or the row's userAgent matches isbot; change"
                " --user-agent or the mapping's userAgent"
            )
            refused.update((i, ("userAgent", reason)) for i in verdict.bot_dropped)
        if batch.opens_visit is not None and 0 not in refused:  # the token is the first element's
            self._open_visit(batch.opens_visit, answer)
        self._commit(batch, refused=refused)
        # Through /api/send a bot drop is one row's fate (rejected above); a whole batch dropped
        # says the run's or the rows' User-Agent is one Umami's isbot list has and ours has not.
        if verdict.bot_dropped and self.endpoint == "batch":
            self._abort(
                TerminalSendError(
                    f"Umami dropped a whole batch as bots (HTTP 200, nothing stored): the"
                    f" User-Agent {self.settings.user_agent!r} or the rows' userAgent matches"
                    " Umami's bot filter (isbot); change --user-agent or the mapping's userAgent"
                )
            )
        elif verdict.website_not_found:
            self._abort(RunRefusedError(website_missing(self.settings)))

    def _open_visit(self, visit: str, answer: Any) -> None:
        """Keep the token Umami gave the visit's first event, for the rest of that visit."""
        token = answer.get("cache") if isinstance(answer, dict) else None
        if isinstance(token, str) and token:
            self.queues.set_token(visit, token)
            with self.lock:
                self.visits_opened += 1

    def _settle_whole(self, batch: Batch, fate: str, reason: str) -> None:
        if fate == "in_doubt":
            self._commit(batch, doubt_reason=reason)
        else:
            self._commit(batch, refused=dict.fromkeys(range(batch.size), (None, reason)))
