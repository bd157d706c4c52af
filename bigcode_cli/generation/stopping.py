"""StopMatcher: finds stop strings in streamed text, even when they arrive split across pieces."""

from __future__ import annotations

from collections.abc import Sequence

from bigcode_cli.errors import UsageError


def check_stops(stops: Sequence[str]) -> None:
    """The one check of stop strings: none may be empty (it would match before any text)."""
    if any(not stop for stop in stops):
        raise UsageError("a --stop string must not be empty; drop the empty --stop")


class StopMatcher:
    """Streams text through, holding back what may start a stop string and cutting at the first stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        check_stops(stops)
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(stops))
        self.stop: str | None = None  # the stop string that matched, once one has
        self._held = ""

    @property
    def stopped(self) -> bool:
        """Whether a stop string has been found."""
        return self.stop is not None

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return what is safe to emit now and whether a stop string was hit."""
        if self.stop is not None:
            return "", True
        buffer = self._held + text
        first: tuple[int, str] | None = None
        for stop in self.stops:
            at = buffer.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self._held = ""
            self.stop = first[1]
            return buffer[: first[0]], True
        # Any stop that began earlier would show here as a suffix that is a proper prefix of a stop,
        # so holding the longest such suffix is enough.
        hold = self._longest_partial(buffer)
        self._held = buffer[len(buffer) - hold:] if hold else ""
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """Release the held text at the end of the stream."""
        held, self._held = self._held, ""
        return "" if self.stop is not None else held

    def _longest_partial(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best
