"""The one generation loop behind `complete`, `generate`, `infill` and the REPL.

Prefill the prompt once (batch 1), copy its cache into one cache per sample, then decode the samples
as rows of one `Runner.step` (one pass over the weights for all of them), leaving out rows as they
finish. Text is streamed through a UTF-8 safe decoder, a stop matcher and an optional `edit` hook (FIM
cleaning) before it reaches the caller's callback.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from bigcode_cli.generation.sampling import SamplingParams, make_generator, next_tokens
from bigcode_cli.generation.stopping import StopMatcher

if TYPE_CHECKING:
    from bigcode_cli.generation.prompt_cache import PromptCache
    from bigcode_cli.model.runner import Runner
    from bigcode_cli.text.tokenizer import Tokenizer

# on_text(sample_index, new_text): called as soon as text is final
OnText = Callable[[int, str], None]
# edit(full_text_so_far) -> (text to keep, finished): a rule that may end a sample early (FIM cleaning)
Edit = Callable[[str], "tuple[str, bool]"]
# should_stop() -> True ends generation before the next token (a client gone, a deadline passed)
ShouldStop = Callable[[], bool]


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
                 on_text: OnText | None) -> None:
        self.index = index
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
        return self._advance(piece, final=False) or stopped

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


def generate(runner: Runner, tokenizer: Tokenizer | None, prompt_ids: Sequence[int], *, max_new_tokens: int,
             params: SamplingParams, stops: Sequence[str] = (), num_samples: int = 1, edit: Edit | None = None,
             on_text: OnText | None = None, ignore_eos: bool = False, prompt_cache: PromptCache | None = None,
             should_stop: ShouldStop | None = None) -> Generation:
    """Generate up to `max_new_tokens` for each of `num_samples` samples of one prompt.

    The prompt plus max_new_tokens must fit the model's context (callers truncate first).
    Ctrl-C, or `should_stop()` returning True before a token, stops generation and returns what was
    produced, with `interrupted` set.
    ignore_eos: an end-of-text token does not end a sample, so every sample makes exactly max_new_tokens
    (benchmarks). Without a tokenizer no text is made, only token ids, and the config's eos_token_id ends a sample.
    With a `prompt_cache`, only the prompt tokens after the longest prefix it already holds are prefilled,
    and the cache keeps this prompt (and sample 0's tokens) afterwards.
    """
    import torch  # here, not at module level: settings and types of this module are used without torch (--server)

    from bigcode_cli.model.runner import RowTokens

    if not prompt_ids:
        eos = tokenizer.eos_id if tokenizer is not None else runner.config.eos_token_id
        if eos is None:
            raise ValueError("an empty prompt needs an end-of-text id to start from")
        prompt_ids = [eos]
    capacity = len(prompt_ids) + max_new_tokens
    device = runner.device
    generator = make_generator(params, device)
    streams = [_Stream(i, tokenizer, stops, edit, on_text) for i in range(num_samples)]
    samples = [Sample() for _ in range(num_samples)]
    stop_ids = _stop_ids(runner, tokenizer, ignore_eos)
    result = Generation(samples, len(prompt_ids))
    penalty = params.repetition_penalty != 1.0
    with torch.inference_mode():
        started = time.perf_counter()
        prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
        if prompt_cache is not None:
            cache = prompt_cache.claim(prompt_ids, capacity)
            result.cached_tokens = cache.length
        else:
            cache = runner.new_cache(1, capacity)
        kept = cache  # the one-row cache of the prompt (sample 0's own when there is one sample)
        settings = contextlib.ExitStack()
        first = True  # no token chosen yet (Ctrl-C may land during the prefill)
        try:
            reused = cache.length if cache is not None else 0  # None: a runner that keeps no cache
            logits = runner(prompt[:, reused:], cache=cache, last_only=True)[:, -1]  # (1, V)
            caches = cache.split(num_samples) if cache is not None else [None] * num_samples  # sample i's own
            if num_samples > 1:
                logits = logits.expand(num_samples, -1)
            seen = prompt.expand(num_samples, -1) if penalty else None
            active = list(range(num_samples))  # sample index of each cache row
            settings.enter_context(runner.decoding(num_samples))
            for _ in range(max_new_tokens):
                if should_stop is not None and should_stop():
                    result.interrupted = True
                    break
                chosen = next_tokens(logits, seen, params, generator)  # (rows,)
                ids = chosen.tolist()
                if first:
                    result.prefill_s = time.perf_counter() - started
                    decode_started = time.perf_counter()
                    first = False
                keep_rows = []
                for row, (index, token) in enumerate(zip(active, ids)):
                    sample = samples[index]
                    if token in stop_ids:
                        sample.stop_reason = "eos"
                        continue
                    sample.token_ids.append(token)
                    if streams[index].push(token):
                        sample.stop_reason = "stop"
                        continue
                    keep_rows.append(row)
                if not keep_rows:
                    active = []
                    break
                if len(keep_rows) < len(active):
                    rows = torch.tensor(keep_rows, device=device)
                    chosen = chosen.index_select(0, rows)
                    if seen is not None:
                        seen = seen.index_select(0, rows)
                    active = [active[r] for r in keep_rows]
                if seen is not None:
                    seen = torch.cat([seen, chosen.unsqueeze(1)], dim=1)
                if len(samples[active[0]].token_ids) >= max_new_tokens:
                    break
                logits = runner.step([RowTokens(caches[index], [samples[index].token_ids[-1]]) for index in active],
                                     last_only=True)  # (rows, V)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            settings.close()
            if prompt_cache is not None:
                # `kept` holds the prompt, then (one sample) the tokens fed back after it
                written = (list(prompt_ids) + samples[0].token_ids)[: kept.length]
                prompt_cache.release(kept, written)
        if not first:
            result.decode_s = time.perf_counter() - decode_started
        else:
            result.prefill_s = time.perf_counter() - started
    for stream, sample in zip(streams, samples):
        stream.finish()
        sample.text = stream.kept
    return result
