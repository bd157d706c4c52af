"""What the worker has done since it started, for `GET /metrics`, and what each slot is doing, for `GET /slots`.

The worker thread writes both; the app's event loop reads them. Counters change under one lock and are
read as one consistent snapshot; the slot list is replaced whole (an immutable tuple), never edited in place.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

SlotState = Literal["idle", "prefill", "decoding"]


@dataclass(frozen=True)
class Totals:
    """The counters at one moment."""

    requests_finished: int = 0
    prompt_tokens_evaluated: int = 0  # prompt tokens run through the model
    prompt_tokens_cached: int = 0  # prompt tokens reused from the prompt cache instead
    generated_tokens: int = 0
    draft_tokens: int = 0  # tokens drafted by n-gram speculation and verified
    draft_accepted: int = 0  # of them, those accepted


@dataclass(frozen=True)
class Slot:
    """One slot of the batch; never the prompt's text (other clients' prompts must not leak)."""

    id: int
    state: SlotState
    prompt_tokens: int = 0
    generated_tokens: int = 0


class ServeCounters:
    """Counters the worker adds to as requests finish (thread-safe) and the slots it publishes after each step."""

    def __init__(self, parallel: int) -> None:
        self._lock = threading.Lock()
        self._totals = Totals()
        self.slots: tuple[Slot, ...] = tuple(Slot(i, "idle") for i in range(parallel))

    def finished(self, *, prompt_tokens: int, cached_tokens: int, generated_tokens: int, draft_tokens: int = 0,
                 draft_accepted: int = 0) -> None:
        """Count one finished request."""
        with self._lock:
            t = self._totals
            self._totals = Totals(t.requests_finished + 1, t.prompt_tokens_evaluated + prompt_tokens - cached_tokens,
                                  t.prompt_tokens_cached + cached_tokens, t.generated_tokens + generated_tokens,
                                  t.draft_tokens + draft_tokens, t.draft_accepted + draft_accepted)

    def totals(self) -> Totals:
        """The counters now."""
        with self._lock:
            return self._totals

    def publish(self, busy: dict[int, Slot]) -> None:
        """The busy slots by id; every other slot is idle."""
        self.slots = tuple(busy.get(i, Slot(i, "idle")) for i in range(len(self.slots)))
