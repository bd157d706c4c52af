"""Verifying a draft: which of the drafted tokens a sample keeps, and the token it chooses after them.

A row fed its last token and k drafted ones gets k + 1 rows of logits: row j scores the token after
draft token j (row 0: after the last chosen token). Going along the draft:
- greedy: a drafted token is accepted while it is the argmax, exactly the token decoding one at a time
  would choose; the first that is not is replaced by the argmax, and a fully accepted draft is followed by
  the argmax of its last row (the bonus token). The output is token for token the non-speculative one.
- sampling: the draft is a point mass q on token x, so the speculative-sampling rule (accept with
  probability min(1, p(x) / q(x)), else draw from max(0, p - q) renormalized) becomes: accept x with
  probability p(x), else draw from p with x removed. p is exactly the distribution the sampler draws from
  (repetition penalty over the tokens so far, temperature, top-k, top-p), so every output token has
  distribution p: the output distribution is the non-speculative one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from bigcode_cli.generation.sampling import SamplingParams, penalized_scores, sampling_probs

if TYPE_CHECKING:
    import torch


def verify(logits: torch.Tensor, draft: Sequence[int], seen: Sequence[int], params: SamplingParams,
           generator: torch.Generator | None = None) -> tuple[list[int], int]:
    """The tokens a sample makes from one verify step, and how many drafted tokens they begin with.

    logits (len(draft) + 1, V): the step's rows for the last chosen token and each drafted one. seen: the
    prompt and the tokens chosen so far (the repetition penalty's history; accepted drafted tokens join it).
    """
    import torch

    if params.greedy and params.repetition_penalty == 1.0:
        best = penalized_scores(logits, None, params).argmax(dim=-1).tolist()  # (k + 1,)
        accepted = 0
        while accepted < len(draft) and draft[accepted] == best[accepted]:
            accepted += 1
        return [*draft[:accepted], best[accepted]], accepted
    history = list(seen)
    for j in range(len(draft) + 1):
        past = torch.tensor([history], dtype=torch.long) if params.repetition_penalty != 1.0 else None
        scores = penalized_scores(logits[j : j + 1], past, params)  # (1, V)
        if params.greedy:
            chosen = int(scores.argmax(dim=-1).item())
            if j < len(draft) and chosen == draft[j]:
                history.append(chosen)
                continue
            return [*draft[:j], chosen], j
        probs = sampling_probs(scores, params)[0]  # (V,)
        if j < len(draft):
            x = draft[j]
            u = torch.rand((), generator=generator, device=probs.device)
            if u.item() < probs[x].item():
                history.append(x)
                continue
            probs = probs.clone()
            probs[x] = 0  # rejected: the rest of p, renormalized by multinomial
        chosen = int(probs.multinomial(num_samples=1, generator=generator).item())
        return [*draft[:j], chosen], j
    raise AssertionError("unreachable: the last row always chooses")
