import random

import pytest

from bigcode_cli.errors import UsageError
from bigcode_cli.generation.stopping import StopMatcher


def run(stops, pieces):
    matcher = StopMatcher(stops)
    out, hit = [], False
    for piece in pieces:
        text, hit = matcher.push(piece)
        out.append(text)
        if hit:
            break
    out.append(matcher.flush())
    return "".join(out), hit, matcher


def test_no_stop_passes_everything_through():
    text, hit, matcher = run(["\nclass"], ["def f():\n", "    return 1\n"])
    assert (text, hit, matcher.stop) == ("def f():\n    return 1\n", False, None)


def test_stop_in_one_piece_is_excluded_with_the_rest():
    text, hit, matcher = run(["\ndef "], ["a = 1\ndef g(): pass", "more"])
    assert (text, hit, matcher.stop) == ("a = 1", True, "\ndef ")


def test_stop_split_across_pieces():
    text, hit, _ = run(["<|end|>"], ["x = 1<", "|en", "d|> tail"])
    assert (text, hit) == ("x = 1", True)


def test_partial_stop_is_held_then_released():
    matcher = StopMatcher(["\n\n\n"])
    assert matcher.push("a\n") == ("a", False)
    assert matcher.push("\n") == ("", False)
    assert matcher.push("b") == ("\n\nb", False)
    assert matcher.push("\n") == ("", False)
    assert matcher.flush() == "\n"


def test_earliest_stop_wins_and_after_stop_nothing_more():
    matcher = StopMatcher(["END", "ND"])
    assert matcher.push("xxEND") == ("xx", True)
    assert matcher.stop == "END"
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


def test_no_stops_holds_nothing():
    matcher = StopMatcher([])
    assert matcher.push("abc") == ("abc", False)
    assert not matcher.stopped and matcher.flush() == ""


def test_empty_stop_is_a_usage_error():
    with pytest.raises(UsageError, match="stop string must not be empty"):
        StopMatcher(["ok", ""])


def test_random_splits_match_reference():
    rng = random.Random(1)
    stops = ["\ndef ", "###", "ab"]
    for _ in range(300):
        text = "".join(rng.choice(["a", "b", "#", "\n", "def ", "x", "d"]) for _ in range(rng.randrange(0, 30)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randrange(0, 6))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        found = [text.find(s) for s in stops if s in text]
        expected = text[: min(found)] if found else text
        assert run(stops, pieces)[:2] == (expected, bool(found))
