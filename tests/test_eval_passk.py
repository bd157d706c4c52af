"""pass@k: the unbiased estimator against its closed form 1 - C(n-c, k) / C(n, k), and which k are reported."""

from __future__ import annotations

from math import comb

import pytest

from bigcode_cli.eval.passk import mean_pass_at_k, pass_at_k, reported_ks


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 3, 10),
                                     (20, 1, 10), (100, 7, 10), (200, 13, 100), (200, 199, 100), (5, 5, 3)])
def test_pass_at_k_is_the_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_impossible_counts_are_refused():
    for n, c, k in [(5, 6, 1), (5, 1, 6), (5, 1, 0), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_reported_ks_are_those_every_problem_can_give():
    assert reported_ks([1, 1]) == [1]
    assert reported_ks([10, 12]) == [1, 10]
    assert reported_ks([200, 100]) == [1, 10, 100]
    assert reported_ks([200, 9]) == [1]
    assert mean_pass_at_k([(10, 3), (10, 0)], 1) == pytest.approx(0.15)
