"""The HTTP sink: Umami's ``/api/batch``, through the throttled, checkpointed sender.

The package, by concern:

- :mod:`.settings`: :class:`SendSettings`, the HTTP client, the checks before the first row;
- :mod:`.answers`: reading a batch answer (element errors, refusals of the whole run);
- :mod:`.attempt`: one POST, classified (answered, retry, too large, in doubt, refused);
- :mod:`.grouping`: the prepared stream regrouped into lanes and segments (location, visit);
- :mod:`.queues`: lane queues, batches and the body limit;
- :mod:`.doubt`: rows whose fate is unknown, from earlier runs and in the in-doubt file;
- :mod:`.run` (with :mod:`.state`, :mod:`.stream`, :mod:`.delivery`, :mod:`.books`): one send run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...ordering import emit
from .. import Delivery
from ..outcome import SendOutcome, SendProgress
from .answers import BatchVerdict, ElementError, describe_element_error, read_batch_answer, run_wide_refusal
from .doubt import IN_DOUBT_KILLED
from .grouping import regroup, regrouped
from .run import send_stream
from .settings import SendSettings, make_client, preflight

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

    kind = "http"

    def destination(self) -> dict[str, Any]:
        return {"host": self.settings.host, "website": self.settings.website}

    def preflight(self, say: Callable[[str], None]) -> None:
        from ...umami_api import check_website

        preflight(self.settings)
        if self.check_website:
            with make_client(self.settings) as client:
                answer = check_website(client, self.settings.base_url, self.settings.website)
                say(f"website {self.settings.website}: {answer}")

    def deliver(self, delivery: Delivery) -> SendOutcome:
        prepared = delivery.prepared
        return send_stream(
            emit(prepared.runs),
            prepared.files,
            self.settings,
            delivery.checkpoint,
            delivery.checkpoint_path,
            delivery.rejects,
            delivery.in_doubt,
            delivery.run_ledger,
            delivery.progress,
            delivery.stop,
            crossing=prepared.visits,
        )
