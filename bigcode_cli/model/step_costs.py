"""What a step of n tokens costs on this runner, measured from the steps it runs: the price of a draft.

A speculating row puts 1 + k tokens into one step (its last token and k drafted ones), and whether k drafted
tokens pay depends on how much dearer that step is than a one-token step. That is a property of the
machine, the model and the build, and it varies widely (a 2-core Xeon, the bundled model: 8 tokens cost
1.97x one token in float32, 1.47x in bfloat16 on AMX tiles, 3.45x in bfloat16 without them), so it is
measured, not assumed: the decoding loops (generation/loop.py, generation/batch.py) time each one-row
decoding turn and `record_step` files it under its token count; `relative(n)` answers from the recent medians.
Greedy and sampled turns are kept apart: verifying a sampled draft computes every drafted position's
probabilities, so its turns cost more (priced with them, a greedy generation after a sampled one drafted a
third as much on the forced-copy trace of benchmarks/speculation.py, bfloat16: 0.97x instead of 4.9x).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from bigcode_cli.model.runner import RowTokens, Runner

WINDOW = 15  # recent steps kept per token count: the median of these is the cost
TRUSTED = 3  # steps of a count measured before its median is believed (one slow step must not rule it out)
REFRESH = 16  # records between two updates of the medians (a step's turn must not pay for them each time)
STALE_S = 5.0  # seconds after which a count not measured since is forgotten: measured dear once (a busy
# moment), it would never be chosen, so never measured again, in a server's or REPL's long life. Time, not a
# number of steps: one-token steps (drafting off, or --speculate off) must not push the others out
LARGEST = 32  # steps of more tokens are not recorded (prefill rows; no draft is that long)


class StepCosts:
    """Recent wall times of a runner's one-row decoding turns by their number of tokens, greedy and sampled
    turns apart."""

    def __init__(self) -> None:
        self._curves = {False: _Curve(), True: _Curve()}

    def record(self, tokens: int, seconds: float, sampled: bool = False) -> None:
        """A one-row turn of `tokens` tokens (sampled: its tokens drawn at temperature > 0) took `seconds`."""
        self._curves[sampled].record(tokens, seconds)

    def relative(self, tokens: int, slope: float, sampled: bool = False) -> float:
        """A turn of `tokens` tokens as a multiple of a one-token turn of the same kind (_Curve.relative)."""
        return self._curves[sampled].relative(tokens, slope)


class _Curve:
    """Recent wall times of one kind of one-row turns, by their number of tokens."""

    def __init__(self) -> None:
        self._seconds: dict[int, deque[float]] = {}
        self._seen: set[int] = set()  # counts whose first step was seen (and left out)
        self._medians: dict[int, float] = {}  # of the counts measured TRUSTED times, kept up to date by record
        self._answers: dict[tuple[int, float], float] = {}  # relative()'s, until the medians change
        self._unused = 0  # records since the medians were updated
        self._last: dict[int, float] = {}  # count -> when its latest step was recorded (time.monotonic)

    def record(self, tokens: int, seconds: float) -> None:
        """A one-row step of `tokens` tokens took `seconds`. The first step of each count is left out: it
        grows the workspace and runs cold (3.4 ms against 1.0 for the bundled model's steps of 3 tokens)."""
        if not 1 <= tokens <= LARGEST or seconds <= 0:
            return
        if tokens not in self._seen:
            self._seen.add(tokens)
            return
        now = time.monotonic()
        if now - self._last.get(tokens, now) > STALE_S:  # forgotten: measured afresh
            self._seconds.pop(tokens, None)
            self._medians.pop(tokens, None)
            self._answers.clear()
        self._last[tokens] = now
        recent = self._seconds.setdefault(tokens, deque(maxlen=WINDOW))
        recent.append(seconds)
        self._unused += 1
        if self._unused >= REFRESH or (len(recent) == TRUSTED and tokens not in self._medians):
            self._medians = {n: statistics.median(times) for n, times in self._seconds.items()
                             if len(times) >= TRUSTED and now - self._last[n] <= STALE_S}
            self._answers.clear()
            self._unused = 0

    def relative(self, tokens: int, slope: float) -> float:
        """A step of `tokens` tokens as a multiple of a one-token step: measured where it was, else
        interpolated between the nearest measured counts, or extrapolated along the slope measured next to
        it (at least 0.02 a token); `slope` a token while fewer than two counts were measured. Without a
        one-token step measured its cost is extrapolated back from the two smallest counts. A count is
        measured once TRUSTED steps of it were recorded, and forgotten when STALE_S seconds passed without
        one of it. Costs never fall as the count grows, nor below one token's."""
        answer = self._answers.get((tokens, slope))
        if answer is None:
            answer = self._answers[(tokens, slope)] = self._relative(tokens, slope)
        return answer

    def _relative(self, tokens: int, slope: float) -> float:
        known = dict(sorted(self._medians.items()))
        if not known or (len(known) == 1 and 1 not in known):
            return 1.0 + slope * (tokens - 1)
        counts = list(known)
        if 1 not in known:
            n0, n1 = counts[0], counts[1]
            per_token = max(0.0, (known[n1] - known[n0]) / (n1 - n0))
            known[1] = max(known[n0] - per_token * (n0 - 1), known[n0] / (1.0 + slope * (n0 - 1)))
            counts = [1, *counts]
        ratio: dict[int, float] = {}
        for n in counts:  # never below one token's, never below a smaller count's: noise must not make drafts free
            ratio[n] = max(1.0, known[n] / known[1], *(ratio.values()))
        if tokens in ratio:
            return ratio[tokens]
        below = max((n for n in counts if n < tokens), default=1)
        above = [n for n in counts if n > tokens]
        if above:
            upper = min(above)
            return ratio[below] + (ratio[upper] - ratio[below]) * (tokens - below) / (upper - below)
        if below == 1:
            rise = slope
        else:
            previous = max(n for n in counts if n < below)
            rise = max(0.02, (ratio[below] - ratio[previous]) / (below - previous))
        return ratio[below] + rise * (tokens - below)


def record_step(runner: Runner, rows: Sequence[RowTokens], began: float, sampled: bool) -> None:
    """Record in runner.step_costs a step over `rows` that began at `began` (time.perf_counter) and is done,
    of a generation that samples (`sampled`) or not: a decoding loop times its whole turn (drafting, the
    step, verifying), what a drafted token really adds. Steps of several rows are not recorded: what a
    drafted token adds to them depends on the others. Nor a GPU's: its step returns before it is done."""
    if len(rows) == 1 and runner.device.type == "cpu":
        runner.step_costs.record(len(rows[0].tokens), time.perf_counter() - began, sampled)
