"""Verifying a draft: which of the drafted tokens a sample keeps, and the token it chooses after them.

A row fed its last token and k drafted ones gets k + 1 rows of logits: row j scores the token after
draft token j (row 0: after the last chosen token). Going along the draft, the sample chooses its token
from row j exactly as it would without speculation (argmax, or a draw from the sampler's distribution p
with its own generator); a drafted token is accepted when it is that choice, and the first choice that
differs from the draft (or the one after a fully accepted draft) ends the run. Every token made is
therefore the token one-at-a-time decoding makes from the same logits and the same random draws:
greedy output is unchanged, and a seeded sample is too (one sample per prompt; several samples draw
their tokens in another order, from the same distributions).

For a draft that is a point mass on x this is the speculative-sampling rule (accept with probability
min(1, p(x) / q(x)) = p(x), else draw from p with x removed, renormalized): the choice equals x with
probability p(x), and otherwise is distributed as p without x. So the output distribution is exactly
the non-speculative one; tests/test_speculation.py checks it with a chi-square test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from bigcode_cli.generation.sampling import SamplingParams, best_ids, penalized_scores, sampling_probs

if TYPE_CHECKING:
    import torch


def verify(logits: torch.Tensor, draft: Sequence[int], seen: Sequence[int], params: SamplingParams,
           generator: torch.Generator | None = None, best: torch.Tensor | None = None) -> tuple[list[int], int]:
    """The tokens a sample makes from one verify step, and how many drafted tokens they begin with.

    logits (len(draft) + 1, V): the step's rows for the last chosen token and each drafted one. seen: the
    prompt and the tokens chosen so far (the repetition penalty's history, read only with a penalty; accepted
    drafted tokens join it). best: the logits rows' argmax where the step found it (Runner.step_best), or None.
    """
    import torch

    if params.greedy and params.repetition_penalty == 1.0:
        chosen = (best if best is not None else best_ids(penalized_scores(logits, None, params))).tolist()  # (k + 1,)
        accepted = 0
        while accepted < len(draft) and draft[accepted] == chosen[accepted]:
            accepted += 1
        return [*draft[:accepted], chosen[accepted]], accepted
    history = list(seen)
    for j in range(len(draft) + 1):
        past = torch.tensor([history], dtype=torch.long) if params.repetition_penalty != 1.0 else None
        scores = penalized_scores(logits[j : j + 1], past, params)  # (1, V)
        if params.greedy:
            chosen = int(best_ids(scores)[0])
        else:  # the draw next_tokens makes for one row: the same random numbers from the same generator
            chosen = int(sampling_probs(scores, params).multinomial(num_samples=1, generator=generator).item())
        if j < len(draft) and chosen == draft[j]:
            history.append(chosen)
            continue
        return [*draft[:j], chosen], j
    raise AssertionError("unreachable: the last row always chooses")
