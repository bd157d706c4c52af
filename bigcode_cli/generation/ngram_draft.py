"""Drafts for n-gram speculation: guesses of the next tokens taken from the request's own tokens.

Code repeats itself: a completion re-types the suffix after the cursor, an identifier, a call or a block
of the prompt, or the model falls into repeating its own output. `NgramDrafter` looks up the longest
n-gram (MAX_NGRAM tokens down to MIN_NGRAM) that ends the sequence and also occurs earlier in it, and
drafts the tokens that followed its most recent earlier occurrence. `DraftPolicy` decides how many to
draft from how often drafts were accepted and what a step of more tokens costs on this runner (measured:
bigcode_cli.model.step_costs), and stops drafting where they keep failing (trying again now and then), so
text that does not repeat pays for few rejected tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from bigcode_cli.model.step_costs import StepCosts

MAX_NGRAM = 4
MIN_NGRAM = 1
MAX_DRAFT = 8  # tokens; past this the acceptance of the bundled model's drafts is near 0 (README "Speculation")
# one more token in a decode step, as a fraction of a one-token step, until this runner's steps have been
# measured (bigcode_cli.model.step_costs; then the measured costs decide): measured by
# benchmarks/step_overheads.py on a 2-core Xeon, 0.03-0.05 a token up to 4 tokens and 0.13 at 8 for the bundled
# model in float32, 0.04-0.07 in bfloat16 on AMX tiles, 0.3 without them; the 116M shape in int8 at 1,640
# positions 0.1-0.13. 0.25 errs towards short drafts while nothing is known
STEP_COST = 0.25
# a draft is made only if it is expected to make this much more per unit of time than none: a measured cost
# is a median of noisy steps, and with 0.03 a one-token draft was made at most steps of text that does not
# repeat, each step measured as dear as a one-token one (benchmarks/speculation.py's fresh trace: 0.98x -> 0.94x)
MIN_GAIN = 0.1
# acceptance is an average over recent draft positions, older ones weighing DECAY as much per position
DECAY = 0.9
# with drafting off, one token is drafted after this many steps, doubling (up to PROBE_MAX) while such
# probes fail: a one-token probe costs STEP_COST, so at most STEP_COST / PROBE_MAX of a step when nothing repeats
PROBE_MIN = 4
PROBE_MAX = 64
# a probe drafts only from a match of at least this many tokens: a lone repeated token or pair is weak evidence
# that the text repeats, and on text that does not (benchmarks/speculation.py's fresh trace) most probes were
# such matches, each a rejected token paid for
PROBE_NGRAM = 3


class NgramDrafter:
    """The tokens of one sequence (prompt, then output) and an index of where each n-gram last occurred."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        # n -> n-gram -> the index just after its most recent occurrence that has a token after it
        self._after: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(MIN_NGRAM, MAX_NGRAM + 1)}
        self._indexed = 0  # n-grams ending before this index are in `_after`
        self.matched = 0  # tokens of the n-gram the last draft came from (0: none)

    def copy(self) -> NgramDrafter:
        """An independent drafter of the same tokens (one per sample of a prompt)."""
        twin = NgramDrafter.__new__(NgramDrafter)
        twin.ids = list(self.ids)
        twin._after = {n: dict(index) for n, index in self._after.items()}
        twin._indexed = self._indexed
        twin.matched = self.matched
        return twin

    def extend(self, tokens: Sequence[int]) -> None:
        """Tokens appended to the sequence."""
        self.ids.extend(tokens)

    def draft(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest n-gram ending the sequence."""
        self.matched = 0
        if k < 1:
            return []
        self._catch_up()
        ids = self.ids
        for n in range(min(MAX_NGRAM, len(ids)), MIN_NGRAM - 1, -1):
            after = self._after[n].get(tuple(ids[len(ids) - n :]))
            if after is not None:
                self.matched = n
                return ids[after : after + k]
        return []

    def _catch_up(self) -> None:
        # index the n-grams ending at every position that now has a token after it (the last one has none)
        ids, end = self.ids, len(self.ids) - 1
        for stop in range(max(self._indexed, MIN_NGRAM), end + 1):
            for n, index in self._after.items():
                if stop >= n:
                    index[tuple(ids[stop - n : stop])] = stop
        self._indexed = max(self._indexed, end + 1)


def best_length(rate: float, step_cost: float | Callable[[int], float] | None = None, longest: int | None = None) -> int:
    """The draft length that makes the most tokens per unit of step time when each drafted token is accepted
    with probability `rate` (given the ones before it were): 0 when drafting does not pay. step_cost: what
    one more token adds to a step, as a fraction of a one-token step, or a function of a step's token count
    giving its cost relative to one token (StepCosts.relative); STEP_COST unless given. longest: MAX_DRAFT
    unless given."""
    step_cost = STEP_COST if step_cost is None else step_cost
    cost = step_cost if callable(step_cost) else (lambda tokens: 1.0 + step_cost * (tokens - 1))
    longest = MAX_DRAFT if longest is None else longest
    best, best_yield = 0, 1.0 + MIN_GAIN
    made, p = 1.0, 1.0  # expected tokens a step makes (the one chosen after the accepted run included)
    for k in range(1, longest + 1):
        p *= rate
        made += p
        value = made / cost(1 + k)
        if value > best_yield:
            best, best_yield = k, value
    return best


class DraftPolicy:
    """How many tokens one sample drafts next, adapting to how often its drafts were accepted."""

    def __init__(self, costs: StepCosts | None = None, sampled: bool = False) -> None:
        self.costs = costs  # what the runner's steps of n tokens cost (None: STEP_COST a token)
        self.sampled = sampled  # its sample's tokens are drawn (temperature > 0): priced by sampled turns
        self.hits = 1.0  # accepted draft positions (a prior of one in two)
        self.trials = 2.0  # draft positions judged: accepted ones, and the first rejected one of each draft
        self._idle = 0  # steps without a draft since drafting was last off
        self._probe_every = PROBE_MIN
        self._probing = False

    @property
    def rate(self) -> float:
        """The recent share of judged draft positions that were accepted."""
        return self.hits / self.trials

    def length(self) -> int:
        """Tokens to draft for the next step (0: none)."""
        measured = self.costs
        k = best_length(self.rate, (lambda tokens: measured.relative(tokens, STEP_COST, self.sampled))
                        if measured else None)
        self._probing = False
        if k > 0:
            return k
        self._idle += 1
        if self._idle < self._probe_every:
            return 0
        self._probing = True
        return 1

    @property
    def probing(self) -> bool:
        """Whether the last length() asked for a probe (one token while drafting is off)."""
        return self._probing

    def unused(self) -> None:
        """The drafter had nothing to draft for the length asked: the step was an ordinary one."""
        if self._probing:
            self._idle = self._probe_every  # probe again at the next step that can draft

    def judged(self, drafted: int, accepted: int) -> None:
        """A draft of `drafted` tokens had its first `accepted` accepted."""
        rejected = 1 if accepted < drafted else 0
        for _ in range(accepted + rejected):
            self.hits *= DECAY
            self.trials *= DECAY
        self.hits += accepted
        self.trials += accepted + rejected
        if self._probing:
            self._idle = 0
            self._probe_every = PROBE_MIN if accepted else min(2 * self._probe_every, PROBE_MAX)


def next_draft(drafter: NgramDrafter, policy: DraftPolicy, room: int) -> list[int]:
    """The draft of a sample's next step: as many tokens as its policy asks (at most `room`), from its drafter;
    a probe only from a match of PROBE_NGRAM tokens or more (else none now, and a probe at the next step)."""
    k = min(policy.length(), room)
    draft = drafter.draft(k) if k > 0 else []
    if draft and policy.probing and drafter.matched < PROBE_NGRAM:
        draft = []
    if k > 0 and not draft:
        policy.unused()
    return draft
