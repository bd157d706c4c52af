"""n-gram drafts and the policy that sizes them (generation/ngram_draft.py), without a model."""

from __future__ import annotations

from bigcode_cli.generation import ngram_draft
from bigcode_cli.generation.ngram_draft import DraftPolicy, NgramDrafter, best_length, next_draft


def test_the_longest_match_ending_the_sequence_drafts_what_followed_its_latest_occurrence():
    drafter = NgramDrafter([1, 2, 3, 9, 1, 2, 3, 4, 5, 7, 2, 3])
    assert drafter.draft(3) == [4, 5, 7] and drafter.matched == 2  # "2 3" last seen before "4 5 7"
    drafter.extend([4])
    assert drafter.draft(2) == [5, 7] and drafter.matched == 3  # "2 3 4" now
    drafter.extend([8])
    assert drafter.draft(4) == [] and drafter.matched == 0  # 8 never occurred before


def test_a_copy_drafts_on_its_own():
    drafter = NgramDrafter([5, 6, 7, 5, 6])
    twin = drafter.copy()
    twin.extend([9])
    assert drafter.draft(1) == [7] and twin.draft(1) == []


def test_drafting_pays_only_where_drafts_are_accepted():
    assert best_length(0.95) == ngram_draft.MAX_DRAFT
    assert best_length(0.05) == 0
    assert best_length(0.6, step_cost=0.05) > best_length(0.6, step_cost=0.5)


def _failing_policy() -> DraftPolicy:
    policy = DraftPolicy()
    while policy.length():
        policy.judged(1, 0)
    return policy


def test_drafts_that_keep_failing_turn_drafting_off_with_probes_less_and_less_often():
    policy = _failing_policy()
    gaps = []
    for _ in range(4):
        steps = 1
        while policy.length() == 0:
            steps += 1
        assert policy.probing
        policy.judged(1, 0)
        gaps.append(steps)
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]


def test_a_probe_drafts_only_from_a_strong_match_and_waits_for_one():
    weak = NgramDrafter([1, 2, 3, 4, 5, 6, 7, 8, 3])  # only "3" occurred before
    strong = NgramDrafter([1, 2, 3, 4, 5, 6, 1, 2, 3])  # "1 2 3" did
    policy = _failing_policy()
    while policy.length() == 0:  # drafting is off: steps until a probe is due
        pass
    for _ in range(3):  # a weak match drafts nothing, and the probe stays due
        assert next_draft(weak, policy, room=10) == [] and policy.probing
    assert next_draft(strong, policy, room=10) == [4] and strong.matched >= ngram_draft.PROBE_NGRAM


def test_no_draft_past_the_room_left():
    policy = DraftPolicy()
    drafter = NgramDrafter([1, 2, 3, 1, 2])
    assert next_draft(drafter, policy, room=0) == []
    assert len(next_draft(drafter, policy, room=1)) <= 1
