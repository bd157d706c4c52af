"""Continuous batching: many generations (`Decoding`s) advanced together, one pass over the weights a step.

Each `advance()` feeds one prefill chunk of one joining generation, then runs ONE step (`Runner.step_best`) over the
rows of every generation that is decoding (a speculating one's rows carry drafts when it has the step to
itself), and hands back the ones that finished. A joining generation whose prompt cache left only a few
tokens to feed (a keystroke: Decoding.prefill_row) is fed as one more row of that step instead of by a pass
over the weights of its own. A generation joins with `add()` between advances and leaves as soon as it
finishes or is stopped, freeing its place. A long prompt is cut into chunks, so it holds the others back by
one chunk per step, not by its whole prefill. Each row is computed alone in the step (Runner.step's batch
invariance), and a prefill chunk is cut at the same places whatever else runs, so a greedy generation makes
the same tokens alone or in company (with drafts or without).
Not thread-safe: one owner (the serve worker's thread).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from bigcode_cli.model.step_costs import record_step

if TYPE_CHECKING:
    from bigcode_cli.generation.loop import Decoding
    from bigcode_cli.model.runner import Runner

# prompt tokens fed per prefill chunk: a few times a decode step's cost on small models, and big enough
# that a prefill's matrix products stay efficient
PREFILL_CHUNK = 256

# A speculating generation drafts only in a step it has to itself. A drafted token adds about as much to a
# crowded step as to a lone one (its attention over the row's cache, and past 16 tokens a second pass of the
# int8 tiles) while it gains tokens for one row of the many the step serves, and everyone waits for the longer
# step; the draft policy prices drafts by one-row steps. Measured (`serve_parallel.py --model 116m --dtype int8
# --threads 1 --rounds 2 --requests 12 --no-llama`, `--speculate ngram` against `off`, twice, Intel Xeon):
# 1 editor 190-192 against 185 tokens/s, 2 editors 310-312 against 305-316, 4 editors 473 against 506-512 and
# p50 136 against 123 ms, 8 editors 592-603 against 702-714 and p50 209-214 against 174-177 ms.

# on_error(decoding, exception): a generation failed inside a prefill or a step (it has left the batch)
OnError = Callable[["Decoding", Exception], None]


class Batch:
    """The generations running together on one runner, in the order they joined."""

    def __init__(self, runner: Runner, prefill_chunk: int = PREFILL_CHUNK) -> None:
        self.runner = runner
        self.prefill_chunk = max(1, prefill_chunk)
        self.members: list[Decoding] = []

    def __len__(self) -> int:
        return len(self.members)

    def add(self, decoding: Decoding) -> None:
        """Join the batch: its prefill starts at the next advance()."""
        self.members.append(decoding)

    def advance(self, on_error: OnError) -> list[Decoding]:
        """One prefill chunk and one step over every decoding row; the generations that finished (they left)."""
        import torch

        with torch.inference_mode():
            for member in self.members:
                if member.decoding:  # a client gone or a deadline passed: leave before spending a step on it
                    member.stop_if_asked()
            joining = next((m for m in self.members if m.prefilling), None)
            tail = None
            if joining is not None:
                try:
                    tail = joining.prefill_row()
                    if tail is None:
                        joining.prefill(self.prefill_chunk)
                except Exception as exc:  # noqa: BLE001 - that generation fails, the others go on
                    tail = None
                    self._fail([joining], exc, on_error)
            began = time.perf_counter()
            decoding = [m for m in self.members if m.decoding]
            alone = len(decoding) + (tail is not None) == 1  # drafts only then (see the top of this file)
            rows = [m.rows(draft=alone) for m in decoding]
            if tail is not None:  # a keystroke's few uncached tokens: one more row of this step
                decoding.append(joining)
                rows.append([tail])
            if decoding:
                try:
                    step_rows = [row for group in rows for row in group]
                    logits, best = self.runner.step_best(step_rows)  # (tokens of the rows, V), (tokens,) | None
                except Exception as exc:  # noqa: BLE001
                    self._fail(decoding, exc, on_error)
                else:
                    start = 0
                    for member, group in zip(decoding, rows):
                        count = sum(len(row.tokens) for row in group)  # one, or one plus a draft, per row
                        mine = best[start : start + count] if best is not None else None
                        try:
                            if member.prefilling:  # the prompt's rest: its last token's logits choose
                                member.accept_prefill(logits[start + count - 1 : start + count],
                                                      mine[-1:] if mine is not None else None)
                            else:
                                member.accept(logits[start : start + count], mine)
                        except Exception as exc:  # noqa: BLE001
                            self._fail([member], exc, on_error)
                        start += count
                    if tail is None:  # a decoding turn, not a prompt's rest (cheaper: no drafts, one row of logits)
                        record_step(self.runner, step_rows, began, sampled=not decoding[0].params.greedy)
        finished = [m for m in self.members if m.finished]
        self.members = [m for m in self.members if not m.finished]
        return finished

    def _fail(self, members: list[Decoding], exc: Exception, on_error: OnError) -> None:
        for member in members:
            member.finished = True
            self.members.remove(member)
            member.release()
            on_error(member, exc)
