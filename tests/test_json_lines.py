"""The one JSON Lines reader (fine-tuning data, eval samples, MultiPL-E problems)."""

import pytest

from bigcode_cli.errors import InputError
from bigcode_cli.text.json_lines import json_objects


def test_objects_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}')
    assert json_objects(str(path)) == [(1, {"a": 1}), (3, {"b": 2})]


def test_an_unfinished_last_line_is_skipped_only_when_asked(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text('{"a": 1}\n{"b": ')
    assert json_objects(str(path), complete_lines_only=True) == [(1, {"a": 1})]
    with pytest.raises(InputError, match=r"cut.jsonl line 2: bad JSON"):
        json_objects(str(path))


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "3"])
def test_a_line_that_is_not_an_object_is_named(tmp_path, line):
    path = tmp_path / "b.jsonl"
    path.write_text('{"a": 1}\n' + line + "\n")
    with pytest.raises(InputError, match=r"b.jsonl line 2: not a JSON object"):
        json_objects(str(path))
