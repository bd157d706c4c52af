"""MultiPL-E problems (Cassano et al. 2022) from a JSON Lines file the user has."""

from __future__ import annotations

from bigcode_cli.errors import InputError
from bigcode_cli.eval.executors import executor
from bigcode_cli.eval.problem import Problem
from bigcode_cli.text.json_lines import json_objects

FIELDS = ("name", "language", "prompt", "tests", "stop_tokens")


def read_multiple(path: str) -> list[Problem]:
    """The problems of a MultiPL-E file: one JSON object per line with FIELDS."""
    problems, seen = [], set()
    for number, record in json_objects(path):  # the one rule for what is text, one object per line
        missing = [name for name in FIELDS if name not in record]
        if missing:
            raise InputError(f"{path} line {number}: a MultiPL-E record needs {', '.join(missing)}")
        stops = record["stop_tokens"]
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise InputError(f"{path} line {number}: stop_tokens must be a list of non-empty strings")
        if not all(isinstance(record[name], str) for name in ("name", "prompt", "tests", "language")):
            raise InputError(f"{path} line {number}: name, language, prompt and tests must be strings")
        if record["name"] in seen:
            raise InputError(f"{path} line {number}: the name {record['name']!r} is used twice")
        seen.add(record["name"])
        language = executor(record["language"]).language
        problems.append(Problem(record["name"], language, record["prompt"], "\n" + record["tests"], tuple(stops)))
    if not problems:
        raise InputError(f"--dataset {path} is empty: no problems in it")
    return problems
