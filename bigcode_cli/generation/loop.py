"""The one generation loop behind `complete`, `generate`, `infill` and the REPL.

Prefill the prompt once (batch 1), copy its cache into one cache per sample, then decode the samples
as rows of one `Runner.step` (one pass over the weights for all of them), leaving out rows as they
finish. One such generation is a `Decoding`: `generate` runs one alone, `bigcode serve` runs many
together (generation/batch.py), their rows in one step. Text is streamed through a UTF-8 safe decoder, a stop matcher and an optional `edit` hook (FIM
cleaning) before it reaches the caller's callback.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from bigcode_cli.generation import ngram_draft
from bigcode_cli.generation.sampling import SamplingParams, make_generator, next_tokens
from bigcode_cli.generation.stopping import StopMatcher
from bigcode_cli.model.step_costs import record_step

if TYPE_CHECKING:
    from bigcode_cli.generation.prompt_cache import PromptCache
    from bigcode_cli.model.runner import RowTokens, Runner
    from bigcode_cli.text.tokenizer import Tokenizer

# on_text(sample_index, new_text): called as soon as text is final
OnText = Callable[[int, str], None]
# edit(full_text_so_far) -> (text to keep, finished): a rule that may end a sample early (FIM cleaning)
Edit = Callable[[str], "tuple[str, bool]"]
# should_stop() -> True ends generation before the next token (a client gone, a deadline passed)
ShouldStop = Callable[[], bool]
# a prompt whose uncached rest is at most this many tokens is fed as one row of a Runner.step (the C kernel's
# multi-token row) rather than by a forward of its own: with the prompt cache, what a keystroke leaves
STEP_PREFILL = 16


@dataclass
class Sample:
    """One generated continuation."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    stop_reason: str = "length"  # "eos" | "length" | "stop"


@dataclass
class Generation:
    """Everything a command reports about one generation call."""

    samples: list[Sample]
    prompt_tokens: int
    prefill_s: float = 0.0
    decode_s: float = 0.0
    interrupted: bool = False  # Ctrl-C, or should_stop() said so
    cached_tokens: int = 0  # prompt tokens whose keys and values came from a prompt cache, not prefilled
    draft_tokens: int = 0  # tokens drafted by n-gram speculation and verified (llama.cpp's draft_n)
    draft_accepted: int = 0  # of them, those accepted (draft_n_accepted)

    @property
    def new_tokens(self) -> int:
        """Tokens generated over all samples."""
        return sum(len(s.token_ids) for s in self.samples)

    @property
    def tokens_per_s(self) -> float:
        """Decode rate: tokens after each sample's first, over the decode time."""
        later = sum(max(len(s.token_ids) - 1, 0) for s in self.samples)
        return later / self.decode_s if self.decode_s > 0 else 0.0


class _NoText:
    """The decoder of a generation without a tokenizer: ids make no text (benchmarks of the model loop alone)."""

    def push(self, _token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


class _Stream:
    """The text pipeline of one sample: ids -> UTF-8 safe text -> stop strings -> edit rule -> callback."""

    def __init__(self, index: int, tokenizer: Tokenizer | None, stops: Sequence[str], edit: Edit | None,
                 on_text: OnText | None, edit_ends: bool = True) -> None:
        self.index = index
        self.edit_ends = edit_ends  # whether the edit rule's "finished" ends the sample (not with ignore_eos)
        self.decoder = tokenizer.stream_decoder() if tokenizer is not None else _NoText()
        self.stops = StopMatcher(stops)
        self.edit = edit
        self.on_text = on_text
        self.raw = ""  # text that passed the stop matcher
        self.kept = ""  # what the edit rule keeps of it
        self.sent = 0  # characters of the kept text already given to on_text

    def push(self, token_id: int) -> bool:
        """Feed one id; True when the sample must end (stop string or edit rule)."""
        piece, stopped = self.stops.push(self.decoder.push(token_id))
        return (self._advance(piece, final=False) and self.edit_ends) or stopped

    def finish(self) -> None:
        """Release held text at the end of the sample."""
        if not self.stops.stopped:
            piece, _ = self.stops.push(self.decoder.flush())
            self._advance(piece + self.stops.flush(), final=True)
        else:
            self._advance("", final=True)

    def _advance(self, piece: str, final: bool) -> bool:
        self.raw += piece
        finished = False
        if self.edit is None:
            kept = self.raw
        elif final:
            kept, finished = self.edit(self.raw)
        else:
            # edit rules work on whole lines: judge only text up to the last newline
            cut = self.raw.rfind("\n") + 1
            kept, finished = self.edit(self.raw[:cut]) if cut else ("", False)
        if len(kept) > self.sent and self.on_text is not None:
            self.on_text(self.index, kept[self.sent :])
        self.sent = max(self.sent, len(kept))
        self.kept = kept
        return finished


def _stop_ids(runner: Runner, tokenizer: Tokenizer | None, ignore_eos: bool) -> frozenset[int]:
    """The ids that end a sample: the tokenizer's end-of-text ids, else the config's eos_token_id; none with ignore_eos."""
    if ignore_eos:
        return frozenset()
    if tokenizer is not None:
        return tokenizer.stop_ids
    eos = runner.config.eos_token_id
    return frozenset() if eos is None else frozenset([eos])


class Decoding:
    """One prompt's generation as pieces of work: prefill chunks, then one step per token over its samples' rows.

    `run()` does the whole generation alone (`generate`); `bigcode serve` (generation/batch.py) runs many
    at once, their rows in one `Runner.step`. Either way a row is computed the same, so greedy output
    does not depend on what else runs. Call every method under torch.inference_mode().
    """

    def __init__(self, runner: Runner, tokenizer: Tokenizer | None, prompt_ids: Sequence[int], *,
                 max_new_tokens: int, params: SamplingParams, stops: Sequence[str] = (), num_samples: int = 1,
                 edit: Edit | None = None, on_text: OnText | None = None, ignore_eos: bool = False,
                 prompt_cache: PromptCache | None = None, should_stop: ShouldStop | None = None,
                 speculate: str = "off") -> None:
        if not prompt_ids:
            eos = tokenizer.eos_id if tokenizer is not None else runner.config.eos_token_id
            if eos is None:
                raise ValueError("an empty prompt needs an end-of-text id to start from")
            prompt_ids = [eos]
        self.runner = runner
        self.prompt_ids = list(prompt_ids)
        self.max_new_tokens = max_new_tokens
        self.params = params
        self.num_samples = num_samples
        self.prompt_cache = prompt_cache
        self.should_stop = should_stop
        self.generator = make_generator(params, runner.device)
        self.streams = [_Stream(i, tokenizer, stops, edit, on_text, edit_ends=not ignore_eos) for i in range(num_samples)]
        self.samples = [Sample() for _ in range(num_samples)]
        self.stop_ids = _stop_ids(runner, tokenizer, ignore_eos)
        self.result = Generation(self.samples, len(self.prompt_ids))
        self.started = time.perf_counter()
        self.decode_started = 0.0
        self.first = True  # no token chosen yet (Ctrl-C may land during the prefill)
        self.finished = False  # no more tokens: finish() makes the Generation
        self._claimed = False
        self._rest_in_step = False  # the prompt's uncached rest goes in as a row of a step (prefill_row)
        self._released = False
        self._reported = False  # finish() made the texts
        self._kept: Any = None  # the one-row cache of the prompt (sample 0's own when there is one sample)
        self._written = 0  # prompt tokens whose keys and values the cache holds
        self._caches: list[Any] = []  # sample i's own cache
        self._logits: Any = None  # (rows, V) of the next choice
        self._best: Any = None  # (rows,): their argmax, where the step found it (Runner.step_best), else None
        self._seen: Any = None  # (rows, T) prompt + tokens so far, for the repetition penalty
        self._active: list[int] = []  # sample index of each row
        self.speculate = speculate != "off"  # n-gram drafts, verified in the step (see generation/verification.py)
        self._drafters: list[Any] = []  # sample i's NgramDrafter
        self._policies: list[Any] = []  # sample i's DraftPolicy
        self._drafts: list[list[int]] = []  # the drafted tokens of each row of the last rows()

    @property
    def prefilling(self) -> bool:
        """Whether prompt tokens are still to be fed."""
        return not self.finished and self._logits is None

    @property
    def decoding(self) -> bool:
        """Whether the next piece of work is a step over `rows()`."""
        return not self.finished and self._logits is not None

    def prefill(self, chunk: int | None = None) -> None:
        """Feed the next `chunk` prompt tokens (all that are left for None); after the last one the first
        token of every sample is chosen. A short rest (prefill_row) goes through Runner.step_best instead."""
        row = self.prefill_row()
        if row is not None:
            self.accept_prefill(*self.runner.step_best([row], last_only=True))  # (1, V), (1,) | None
            return
        import torch

        end = len(self.prompt_ids)
        if chunk is not None and self._kept is not None:
            end = min(end, self._written + max(1, chunk))
        piece = torch.tensor([self.prompt_ids[self._written : end]], dtype=torch.long, device=self.runner.device)
        logits = self.runner(piece, cache=self._kept, last_only=True)[:, -1]  # (1, V)
        self._written = end
        if end < len(self.prompt_ids):
            return
        self._prefilled(logits)

    def prefill_row(self) -> RowTokens | None:
        """The whole prefill as one row of a step, when the prompt cache left at most STEP_PREFILL tokens to feed
        (an editor's keystroke): one more row of a pass over the weights instead of a pass of its own. Decided by
        the prompt and the cache alone, so a generation feeds its prompt the same way alone or in a batch."""
        from bigcode_cli.model.runner import RowTokens

        self._claim()
        if not self._rest_in_step or not self.prefilling:
            return None
        return RowTokens(self._kept, self.prompt_ids[self._written :])

    def accept_prefill(self, logits: Any, best: Any = None) -> None:
        """Take the step's logits ((1, V)) of prefill_row()'s row (and their argmax, Runner.step_best): the prompt is
        in, the first tokens are chosen."""
        self._written = len(self.prompt_ids)
        self._prefilled(logits, best)

    def _claim(self) -> None:
        """The prompt's cache, once: from the prompt cache (its longest cached prefix already in) or new."""
        if self._claimed:
            return
        self.started = time.perf_counter()  # made ahead of time (serve prepares prompts early): the prefill starts now
        capacity = len(self.prompt_ids) + self.max_new_tokens
        if self.prompt_cache is not None:
            self._kept = self.prompt_cache.claim(self.prompt_ids, capacity)
            self.result.cached_tokens = self._kept.length
        else:
            self._kept = self.runner.new_cache(1, capacity)
        self._claimed = True
        self._written = self._kept.length if self._kept is not None else 0  # None: a runner that keeps no cache
        rest = len(self.prompt_ids) - self._written
        self._rest_in_step = self._kept is not None and self._written > 0 and 0 < rest <= STEP_PREFILL

    def _prefilled(self, logits: Any, best: Any = None) -> None:
        """After the prompt's last token ((1, V) logits, (1,) argmax or None): one cache per sample, the first
        tokens chosen."""
        import torch

        n = self.num_samples
        self._caches = self._kept.split(n) if self._kept is not None else [None] * n
        self._logits = logits.expand(n, -1) if n > 1 else logits
        self._best = best.expand(n) if best is not None and n > 1 else best
        if self.params.repetition_penalty != 1.0:
            prompt = torch.tensor([self.prompt_ids], dtype=torch.long, device=self.runner.device)
            self._seen = prompt.expand(n, -1)
        self._active = list(range(n))
        if self.speculate:
            drafter = ngram_draft.NgramDrafter(self.prompt_ids)
            self._drafters = [drafter] + [drafter.copy() for _ in range(n - 1)]
            # one sample: drafts priced by the runner's measured steps; several: by the fixed prior, since their
            # draft lengths set the order of their random draws, which must not depend on timing (seeded -n).
            # Measured prices only where a step of several tokens gives the bits of one-token steps (the C
            # kernel): on the PyTorch path the draft lengths shape the output's float rounding, so timing would
            # make a run's text differ from the next run's
            costs = self.runner.step_costs if n == 1 and self.runner.decode_path == "kernel" else None
            self._policies = [ngram_draft.DraftPolicy(costs, sampled=not self.params.greedy) for _ in range(n)]
            self._drafts = [[] for _ in range(n)]
            self._verify(self._logits, self._best)
            return
        self._choose()

    def rows(self, draft: bool = True) -> list[RowTokens]:
        """The rows of the next step: each running sample's cache, its last token and (speculating, unless told not
        to draft this step) a draft."""
        from bigcode_cli.model.runner import RowTokens

        if not self.speculate or not draft:
            return [RowTokens(self._caches[i], [self.samples[i].token_ids[-1]]) for i in self._active]
        self._drafts = [self._draft(i) for i in self._active]
        return [RowTokens(self._caches[i], [self.samples[i].token_ids[-1], *draft])
                for i, draft in zip(self._active, self._drafts)]

    def accept(self, logits: Any, best: Any = None) -> None:
        """Take the step's logits of the tokens of `rows()` ((their count, V)), and their argmax where the step found
        it (Runner.step_best), and choose the next tokens."""
        if self.speculate:
            self._verify(logits, best)
            return
        self._logits, self._best = logits, best
        self._choose()

    def stop_if_asked(self) -> bool:
        """Finish now (interrupted) when should_stop() says so, as before every token; whether it did."""
        if not self.finished and self.should_stop is not None and self.should_stop():
            self.interrupt()
        return self.finished

    def interrupt(self) -> None:
        """Finish now, keeping what was made (a prefill in progress ends too)."""
        self.result.interrupted = True
        self.finished = True

    def run(self) -> Generation:
        """The whole generation, alone (Ctrl-C stops it and keeps what was made)."""
        import torch

        settings = contextlib.ExitStack()
        with torch.inference_mode():
            try:
                self.prefill()
                settings.enter_context(self.runner.decoding(self.num_samples))
                while self.decoding:
                    began = time.perf_counter()
                    rows = self.rows()
                    self.accept(*self.runner.step_best(rows))  # (tokens of the rows, V), (tokens,) | None
                    record_step(self.runner, rows, began, sampled=not self.params.greedy)
            except KeyboardInterrupt:
                self.result.interrupted = True
            finally:
                settings.close()
                self.release()
        return self.finish()

    def release(self) -> None:
        """Give the prompt's cache back to the prompt cache (once); it keeps the prompt and sample 0's tokens."""
        if self._released or self.prompt_cache is None or not self._claimed:
            return
        self._released = True
        written = (self.prompt_ids + self.samples[0].token_ids)[: self._kept.length]
        self.prompt_cache.release(self._kept, written)

    def finish(self) -> Generation:
        """End the generation (releasing its cache) and report it; the samples' texts are final."""
        import torch

        self.finished = True
        with torch.inference_mode():
            self.release()
        if not self._reported:
            self._reported = True
            if not self.first:
                self.result.decode_s = time.perf_counter() - self.decode_started
            else:
                self.result.prefill_s = time.perf_counter() - self.started
            for stream, sample in zip(self.streams, self.samples):
                stream.finish()
                sample.text = stream.kept
        return self.result

    def _draft(self, index: int) -> list[int]:
        """The tokens sample `index` drafts for the next step, within what may still be made."""
        room = self.max_new_tokens - len(self.samples[index].token_ids) - 1  # the step also chooses one more
        return ngram_draft.next_draft(self._drafters[index], self._policies[index], room)

    def _verify(self, logits: Any, best: Any = None) -> None:
        """Judge each row's draft against its logits ((1 + draft, V) per row, rows in order; `best` their argmax
        or None), emit the tokens each sample makes, and roll every cache back to the tokens kept."""
        from bigcode_cli.generation.verification import verify

        if self.stop_if_asked():
            return
        self._first_token_chosen()
        start, keep = 0, []
        for index, draft in zip(self._active, self._drafts or [[]] * len(self._active)):
            sample = self.samples[index]
            rows = logits[start : start + len(draft) + 1]  # (1 + draft, V)
            rows_best = best[start : start + len(draft) + 1] if best is not None else None
            start += len(draft) + 1
            before = len(sample.token_ids)
            seen = self.prompt_ids + sample.token_ids if self.params.repetition_penalty != 1.0 else ()
            made, accepted = verify(rows, draft, seen, self.params, self.generator, rows_best)
            if draft:
                self._policies[index].judged(len(draft), accepted)
                self.result.draft_tokens += len(draft)
                self.result.draft_accepted += accepted
            running = self._emit(index, made)
            kept = len(sample.token_ids) - before
            self._drafters[index].extend(sample.token_ids[before:])
            if draft:
                # the cache keeps the last chosen token and the accepted drafted tokens the sample kept
                self._caches[index].truncate(len(self.prompt_ids) + before + min(kept, accepted))
            if running:
                keep.append(index)
        self._drafts = []
        self._active = keep
        self.finished = not keep

    def _emit(self, index: int, tokens: Sequence[int]) -> bool:
        """Give sample `index` its next tokens in order; whether it runs on (an end-of-text id, a stop string, the
        edit rule or max_new_tokens end it, and the tokens after are dropped: a speculating sample ends exactly
        where one-token decoding ends)."""
        sample = self.samples[index]
        for token in tokens:
            if token in self.stop_ids:
                sample.stop_reason = "eos"
                return False
            sample.token_ids.append(token)
            if self.streams[index].push(token):
                sample.stop_reason = "stop"
                return False
            if len(sample.token_ids) >= self.max_new_tokens:
                return False
        return True

    def _choose(self) -> None:
        """Choose the next token of every running sample from `_logits`; finish when none runs on."""
        import torch

        if self.stop_if_asked():
            return
        if self._best is not None and self.params.greedy and self._seen is None:  # the step's own argmax
            chosen = self._best
        else:
            chosen = next_tokens(self._logits, self._seen, self.params, self.generator)  # (rows,)
        ids = chosen.tolist()
        self._first_token_chosen()
        keep_rows = [row for row, (index, token) in enumerate(zip(self._active, ids)) if self._emit(index, [token])]
        if not keep_rows:
            self._active = []
            self.finished = True
            return
        if len(keep_rows) < len(self._active):
            rows = torch.tensor(keep_rows, device=chosen.device)
            chosen = chosen.index_select(0, rows)
            if self._seen is not None:
                self._seen = self._seen.index_select(0, rows)
            self._active = [self._active[r] for r in keep_rows]
        if self._seen is not None:
            self._seen = torch.cat([self._seen, chosen.unsqueeze(1)], dim=1)

    def _first_token_chosen(self) -> None:
        """The prefill ends, and the decode time starts, when the first token is chosen."""
        if self.first:
            self.result.prefill_s = time.perf_counter() - self.started
            self.decode_started = time.perf_counter()
            self.first = False


def generate(runner: Runner, tokenizer: Tokenizer | None, prompt_ids: Sequence[int], *, max_new_tokens: int,
             params: SamplingParams, stops: Sequence[str] = (), num_samples: int = 1, edit: Edit | None = None,
             on_text: OnText | None = None, ignore_eos: bool = False, prompt_cache: PromptCache | None = None,
             should_stop: ShouldStop | None = None, speculate: str = "off") -> Generation:
    """Generate up to `max_new_tokens` for each of `num_samples` samples of one prompt.

    The prompt plus max_new_tokens must fit the model's context (callers truncate first).
    Ctrl-C, or `should_stop()` returning True before a token, stops generation and returns what was
    produced, with `interrupted` set.
    ignore_eos: neither an end-of-text token nor the `edit` rule ends a sample (its text is still edited), so
    without stop strings every sample makes exactly max_new_tokens (benchmarks: equal work on random weights).
    Without a tokenizer no text is made, only token ids, and the config's eos_token_id ends a sample.
    With a `prompt_cache`, only the prompt tokens after the longest prefix it already holds are prefilled,
    and the cache keeps this prompt (and sample 0's tokens) afterwards. speculate "ngram": each step also
    verifies tokens drafted from the prompt and output so far (same output at temperature 0, same
    distribution when sampling).
    """
    return Decoding(runner, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, params=params, stops=stops,
                    num_samples=num_samples, edit=edit, on_text=on_text, ignore_eos=ignore_eos,
                    prompt_cache=prompt_cache, should_stop=should_stop, speculate=speculate).run()
