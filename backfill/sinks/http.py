"""The HTTP sink: Umami's ``/api/batch``, through the throttled, checkpointed sender."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..ordering import emit
from . import Delivery
from .outcome import SendOutcome


@dataclass
class HttpSink:
    """Sends to a running Umami; ``check_website`` reads the website back first (credentials)."""

    settings: Any  # sender.SendSettings
    check_website: bool = False

    kind = "http"

    def destination(self) -> dict[str, Any]:
        return {"host": self.settings.host, "website": self.settings.website}

    def preflight(self, say: Callable[[str], None]) -> None:
        from ..sender import make_client, preflight
        from ..umami_api import check_website

        preflight(self.settings)
        if self.check_website:
            with make_client(self.settings) as client:
                answer = check_website(client, self.settings.base_url, self.settings.website)
                say(f"website {self.settings.website}: {answer}")

    def deliver(self, delivery: Delivery) -> SendOutcome:
        from ..sender import send_stream

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
