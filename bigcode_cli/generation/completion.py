"""Completing code at a cursor: the prompt (continue or fill-in-the-middle), fitted to the context,
generated with the one generation loop and cleaned like an editor's completion tool would.

Used by `complete`, `generate`, `infill` and the REPL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from bigcode_cli.choices import FIM_ORDERS, SPECULATE_CHOICES, SPECULATE_DEFAULT, FimOrder, listed
from bigcode_cli.errors import UsageError
from bigcode_cli.generation.fim import (
    FIM_OVERHEAD,
    Mode,
    check_lines,
    clean_completion,
    fim_prompt_from_ids,
    fit_fim,
    fit_left,
)
from bigcode_cli.generation.loop import Decoding, Generation, OnText, ShouldStop
from bigcode_cli.generation.sampling import SamplingParams
from bigcode_cli.generation.stopping import check_stops

if TYPE_CHECKING:
    from bigcode_cli.generation.prompt_cache import PromptCache
    from bigcode_cli.model.runner import Runner
    from bigcode_cli.text.tokenizer import Tokenizer

# samples of one prompt are rows of one batch, each with its own key/value cache and logits: memory grows
# with every one, so more is a second run (seeded apart), not a bigger one
MAX_SAMPLES = 8
# no byte-level BPE token covers more characters than this, so longer text cannot fit the budget anyway
MAX_CHARS_PER_TOKEN = 32


@dataclass
class CompletionSettings:
    """What the user asked for, shared by every generation command and the REPL's /set."""

    max_new_tokens: int = 128
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stops: list[str] = field(default_factory=list)
    num_samples: int = 1
    lines: int | None = None
    block: bool = True
    order: FimOrder = "psm"
    min_indent: int = 0  # lines after the first indented less end the completion (llama.cpp's n_indent)
    speculate: str = SPECULATE_DEFAULT  # "ngram": verify drafts from the request's own tokens; "off"
    # every sample makes exactly max_new_tokens (llama.cpp's ignore_eos, for benchmarks): neither an end-of-text
    # token nor the cleaning rule ends it (the text is still cleaned); stop strings still do
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise UsageError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.num_samples > MAX_SAMPLES:
            raise UsageError(f"--num-samples is at most {MAX_SAMPLES}, got {self.num_samples}: every sample is one more "
                             "row of the batch, with its own cache and logits in memory; run again for more samples")
        check_lines(self.lines)
        check_stops(self.stops)
        if self.order not in FIM_ORDERS:
            raise UsageError(f"--fim-order must be {listed(FIM_ORDERS)}, got {self.order!r}")
        if self.speculate not in SPECULATE_CHOICES:
            raise UsageError(f"--speculate must be {listed(SPECULATE_CHOICES)}, got {self.speculate!r}")


@dataclass
class Prompt:
    """The exact token ids given to the model, and how the text was cut to fit."""

    ids: list[int]
    mode: Mode
    prefix: str
    suffix: str
    truncated: bool
    max_new_tokens: int


@dataclass
class Completion:
    """A finished completion request: the prompt, the generation, and the cleaned texts."""

    prompt: Prompt
    generation: Generation

    @property
    def texts(self) -> list[str]:
        """The completion of each sample."""
        return [s.text for s in self.generation.samples]


def _trim_prefix(text: str, budget: int) -> str:
    limit = budget * MAX_CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    cut = text.find("\n", len(text) - limit)
    return text[cut + 1 :] if cut >= 0 else text[-limit:]


def _trim_suffix(text: str, budget: int) -> str:
    limit = budget * MAX_CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut + 1] if cut >= 0 else text[:limit]


def fit_max_new_tokens(max_new_tokens: int, context: int) -> int:
    """max_new_tokens, halved to context // 2 when it would leave (next to) no room for a prompt."""
    if max_new_tokens > context // 2 and max_new_tokens >= context - 16:
        return context // 2
    return max_new_tokens


def build_prompt(tokenizer: Tokenizer, prefix: str, suffix: str, mode: Mode, *, context: int,
                 max_new_tokens: int, order: str = "psm", notice: Callable[[str], None] | None = None) -> Prompt:
    """The prompt ids for a cursor, cut from the far ends so that prompt + max_new_tokens fits `context`."""
    reduced = fit_max_new_tokens(max_new_tokens, context)
    if reduced != max_new_tokens:
        if notice:
            notice(f"--max-new-tokens {max_new_tokens} leaves no room for the prompt in a {context}-token "
                   f"context; generating at most {reduced} tokens")
        max_new_tokens = reduced
    if mode == "fim":
        fim = tokenizer.require_fim()
        budget = context - max_new_tokens - FIM_OVERHEAD
        small_prefix, small_suffix = _trim_prefix(prefix, budget), _trim_suffix(suffix, budget)
        fitted = fit_fim(tokenizer, small_prefix, small_suffix, budget)
        truncated = fitted.truncated or small_prefix != prefix or small_suffix != suffix
        ids = fim_prompt_from_ids(fim, fitted.prefix_ids, fitted.suffix_ids, order)  # type: ignore[arg-type]
        kept_prefix, kept_suffix = fitted.prefix, fitted.suffix
    else:
        budget = context - max_new_tokens
        small = _trim_prefix(prefix, budget)
        ids, cut = fit_left(tokenizer.encode(small), budget)
        truncated = cut or small != prefix
        kept_prefix, kept_suffix = prefix, ""
    if truncated and notice:
        notice(f"the input is longer than the model's {context}-token context: kept the {len(ids)} tokens "
               f"nearest the cursor" + (" (whole lines)" if mode == "fim" else ""))
    return Prompt(ids, mode, kept_prefix, kept_suffix, truncated, max_new_tokens)


def _cleaner(prefix: str, suffix: str, settings: CompletionSettings) -> Callable[[str], tuple[str, bool]] | None:
    """The edit rule for streaming: clean whole lines, and end the sample once cleaning cuts anything."""
    if not settings.block and settings.lines is None and not suffix and not settings.min_indent:
        return None

    def edit(text: str) -> tuple[str, bool]:
        cleaned = clean_completion(text, suffix, prefix=prefix, lines=settings.lines, block=settings.block,
                                   min_indent=settings.min_indent)
        return cleaned, len(cleaned.rstrip()) < len(text.rstrip())

    return edit


def start_completion(runner: Runner, tokenizer: Tokenizer, prefix: str, suffix: str, mode: Mode,
                     settings: CompletionSettings, *, on_text: OnText | None = None,
                     notice: Callable[[str], None] | None = None, lead_ids: Sequence[int] = (),
                     prompt_cache: PromptCache | None = None,
                     should_stop: ShouldStop | None = None) -> tuple[Prompt, Decoding]:
    """The prompt of `complete` and its generation, not yet run (`bigcode serve` runs many together)."""
    lead = list(lead_ids)
    prompt = build_prompt(tokenizer, prefix, suffix, mode, context=runner.context_length - len(lead),
                          max_new_tokens=settings.max_new_tokens, order=settings.order, notice=notice)
    if lead:
        prompt.ids = lead + prompt.ids
    decoding = Decoding(
        runner, tokenizer, prompt.ids, max_new_tokens=prompt.max_new_tokens, params=settings.sampling,
        stops=settings.stops, num_samples=settings.num_samples,
        edit=_cleaner(prompt.prefix, prompt.suffix, settings), on_text=on_text, ignore_eos=settings.ignore_eos,
        prompt_cache=prompt_cache, should_stop=should_stop, speculate=settings.speculate,
    )
    return prompt, decoding


def complete(runner: Runner, tokenizer: Tokenizer, prefix: str, suffix: str, mode: Mode,
             settings: CompletionSettings, *, on_text: OnText | None = None,
             notice: Callable[[str], None] | None = None, lead_ids: Sequence[int] = (),
             prompt_cache: PromptCache | None = None, should_stop: ShouldStop | None = None) -> Completion:
    """Complete the code between `prefix` and `suffix` (mode "fim") or after `prefix` (mode "continue").

    `lead_ids` go before the prompt (context from other files) and count against the context;
    `prompt_cache` and `should_stop` are passed on to `generate`.
    """
    prompt, decoding = start_completion(runner, tokenizer, prefix, suffix, mode, settings, on_text=on_text,
                                        notice=notice, lead_ids=lead_ids, prompt_cache=prompt_cache,
                                        should_stop=should_stop)
    return Completion(prompt, decoding.run())


def start_text(runner: Runner, tokenizer: Tokenizer, text: str, settings: CompletionSettings, *,
               on_text: OnText | None = None, prompt_cache: PromptCache | None = None,
               should_stop: ShouldStop | None = None) -> tuple[Prompt, Decoding]:
    """The prompt of `complete_text` and its generation, not yet run."""
    context = runner.context_length
    tail = _trim_prefix(text, context - fit_max_new_tokens(settings.max_new_tokens, context))
    ids = tokenizer.encode_with_special_tokens(tail)
    if not ids and tokenizer.eos_id is not None:
        ids = [tokenizer.eos_id]
    prompt, decoding = start_ids(runner, tokenizer, ids, settings, on_text=on_text, prompt_cache=prompt_cache,
                                 should_stop=should_stop)
    prompt.truncated = prompt.truncated or tail != text
    return prompt, decoding


def complete_text(runner: Runner, tokenizer: Tokenizer, text: str, settings: CompletionSettings, *,
                  on_text: OnText | None = None, prompt_cache: PromptCache | None = None,
                  should_stop: ShouldStop | None = None) -> Completion:
    """Continue a prompt a client wrote in the model's own format (control-token spellings read as tokens),
    kept from the end when it does not fit, without cleaning; an empty prompt starts from end-of-text.

    Only the end of the text that can reach the context is tokenized: a 4 MB prompt costs what its last
    few thousand lines cost, not seconds and hundreds of MB of token data.
    """
    prompt, decoding = start_text(runner, tokenizer, text, settings, on_text=on_text, prompt_cache=prompt_cache,
                                  should_stop=should_stop)
    return Completion(prompt, decoding.run())


def start_ids(runner: Runner, tokenizer: Tokenizer, ids: Sequence[int], settings: CompletionSettings, *,
              on_text: OnText | None = None, prompt_cache: PromptCache | None = None,
              should_stop: ShouldStop | None = None) -> tuple[Prompt, Decoding]:
    """The prompt of `complete_ids` and its generation, not yet run."""
    context = runner.context_length
    max_new_tokens = fit_max_new_tokens(settings.max_new_tokens, context)
    kept, cut = fit_left(ids, context - max_new_tokens)
    prompt = Prompt(kept, "continue", "", "", cut, max_new_tokens)
    decoding = Decoding(
        runner, tokenizer, prompt.ids, max_new_tokens=max_new_tokens, params=settings.sampling,
        stops=settings.stops, num_samples=settings.num_samples, on_text=on_text, ignore_eos=settings.ignore_eos,
        prompt_cache=prompt_cache, should_stop=should_stop, speculate=settings.speculate,
    )
    return prompt, decoding


def complete_ids(runner: Runner, tokenizer: Tokenizer, ids: Sequence[int], settings: CompletionSettings, *,
                 on_text: OnText | None = None, prompt_cache: PromptCache | None = None,
                 should_stop: ShouldStop | None = None) -> Completion:
    """Continue a prompt given as token ids (kept from the end when it does not fit), without cleaning."""
    prompt, decoding = start_ids(runner, tokenizer, ids, settings, on_text=on_text, prompt_cache=prompt_cache,
                                 should_stop=should_stop)
    return Completion(prompt, decoding.run())
