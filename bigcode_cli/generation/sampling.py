"""Next-token choice: repetition penalty, temperature, top-k, top-p, then greedy or seeded sampling.

Every step computes in float32 and keeps each row finite for any valid parameter, however extreme
(a temperature of 5e-324, a repetition penalty of 1e-308): a parameter beyond float32's range acts as
the nearest value float32 holds, and the scores are shifted so their maximum is 0 before dividing
by the temperature. A row with an inf or NaN in it would make the sampler fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bigcode_cli.errors import UsageError

if TYPE_CHECKING:
    import torch

# torch is not imported at module level (tensor methods do the work), so that settings can be built
# without it: `bigcode complete --server URL` never loads torch


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is picked.

    Defaults follow the BigCode evaluation harness for code (temperature 0.2, top-p 0.95):
    close to greedy but not stuck in loops, and still varied across `-n` samples.
    temperature 0 = greedy; top_k 0 = off; top_p 1.0 = off; repetition_penalty 1.0 = off;
    seed None = a fresh random seed each run.
    """

    temperature: float = 0.2
    top_k: int = 0
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        # `not (x >= 0)` also rejects NaN
        if not (self.temperature >= 0) or math.isinf(self.temperature):
            raise UsageError(f"--temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise UsageError(f"--top-p must be in (0, 1] (1 = off), got {self.top_p}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise UsageError(f"--top-k must be an integer >= 0 (0 = off), got {self.top_k}")
        if not (self.repetition_penalty > 0) or math.isinf(self.repetition_penalty):
            raise UsageError(f"--repetition-penalty must be a finite number > 0 (1 = off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        """Whether the next token is the argmax rather than a sample."""
        return self.temperature == 0


def make_generator(params: SamplingParams, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device`, seeded from params.seed (or randomly when it is None)."""
    import torch

    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def in_float_range(value: float, dtype: torch.dtype) -> float:
    """A positive parameter as the nearest value `dtype` holds: between its smallest normal and largest number."""
    import torch

    info = torch.finfo(dtype)
    return min(max(value, info.tiny), info.max)


def apply_repetition_penalty(scores: torch.Tensor, seen_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make already-seen tokens less likely: positive logits divided by penalty, negative ones multiplied
    (the results bounded to the finite range of the scores' dtype)."""
    import torch

    # scores (B, V), seen_ids (B, T)
    if penalty == 1.0 or seen_ids.numel() == 0:
        return scores
    penalty = in_float_range(penalty, scores.dtype)
    largest = torch.finfo(scores.dtype).max
    seen = scores.gather(1, seen_ids)
    seen = (seen * penalty).where(seen < 0, seen / penalty).clamp(-largest, largest)
    return scores.scatter(1, seen_ids, seen)


def apply_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by a positive temperature (one below the dtype's range acts as its smallest normal)."""
    return scores if temperature == 1.0 else scores / in_float_range(temperature, scores.dtype)


def apply_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k highest logits per row (ties with the k-th kept too); 0 = off."""
    if top_k <= 0 or top_k >= scores.shape[-1]:
        return scores
    kth = scores.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill(scores < kth, -math.inf)


def apply_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability adds up to at least top_p (never none); 1 = off."""
    if top_p >= 1.0:
        return scores
    ordered, order = scores.sort(dim=-1, descending=True)  # (B, V)
    probs = ordered.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the strictly better tokens
    drop_sorted = mass_before >= top_p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return scores.masked_fill(drop, -math.inf)


def penalized_scores(logits: torch.Tensor, generated_ids: torch.Tensor | None, params: SamplingParams) -> torch.Tensor:
    """The float32 scores the next token is chosen from: the logits after the repetition penalty (greedy takes
    their argmax)."""
    # logits (B, V); generated_ids (B, T): prompt + generated so far, for the repetition penalty
    scores = logits.float()
    if generated_ids is not None:
        scores = apply_repetition_penalty(scores, generated_ids.to(scores.device).long(), params.repetition_penalty)
    return scores


def best_ids(scores: torch.Tensor) -> torch.Tensor:
    """The argmax of each row (B, V) -> (B,): the first of equal maxima, a NaN counting as the largest, as
    torch.argmax. On the CPU through NumPy, whose argmax is a plain scan: torch's took 591 us for 8 rows of a
    49,152-token vocabulary and 108 us for the 9 rows of a verify step of the bundled model, NumPy's 24 and 5
    (a few percent of a decode step of the bundled model, and of a serve step of eight rows; measured by
    benchmarks/step_overheads.py)."""
    import torch

    if scores.device.type == "cpu" and scores.dtype == torch.float32:
        return torch.from_numpy(scores.detach().contiguous().numpy().argmax(axis=-1))
    return scores.argmax(dim=-1)


def sampling_probs(scores: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution (B, V) a sampled token is drawn from: penalized scores after temperature, top-k, top-p."""
    # softmax does not change with the shift; the best score becomes 0 / temperature = 0, never inf or NaN
    scores = apply_temperature(scores - scores.amax(dim=-1, keepdim=True), params.temperature)
    scores = apply_top_k(scores, params.top_k)
    scores = apply_top_p(scores, params.top_p)
    return scores.softmax(dim=-1)


def next_tokens(logits: torch.Tensor, generated_ids: torch.Tensor | None, params: SamplingParams,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row from the last-position logits."""
    # logits (B, V); generated_ids (B, T): prompt + generated so far, for the repetition penalty
    scores = penalized_scores(logits, generated_ids, params)
    if params.greedy:
        return best_ids(scores)  # (B,)
    probs = sampling_probs(scores, params)
    return probs.multinomial(num_samples=1, generator=generator).squeeze(1)  # (B,)
