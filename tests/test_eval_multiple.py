"""MultiPL-E files: hand-written problems in the format's own layout, run by the Python, JavaScript (node)
and Java (javac + java) executors, right and wrong; a missing toolchain is a one-line error naming it."""

from __future__ import annotations

import json
import shutil

import pytest

from bigcode_cli.cli.app import run
from bigcode_cli.eval import evaluation, executors

PROBLEMS = {
    "python": {
        "name": "py_add", "language": "py",
        "prompt": 'def add(x: int, y: int) -> int:\n    """Add two numbers."""\n',
        "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n\n"
                 "def test_check():\n    check(add)\n\ntest_check()\n",
        "stop_tokens": ["\ndef", "\n#", "\nif", "\nclass"],
        "right": "    return x + y\n", "wrong": "    return x - y\n",
    },
    "javascript": {
        "name": "js_add", "language": "js",
        "prompt": "//Add two numbers\nfunction add(x, y){\n",
        "tests": "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n"
                 "  assert.deepEqual(candidate(2, 3),5);\n  assert.deepEqual(candidate(-1, 1),0);\n}\n\ntest();",
        "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
        "right": "  return x + y;\n}\n", "wrong": "  return x - y;\n}\n",
    },
    "java": {
        "name": "java_add", "language": "java",
        "prompt": "import java.util.*;\nimport java.lang.*;\n\nclass Problem {\n    // Add two numbers\n"
                  "    public static long add(long x, long y) {\n",
        "tests": "    }\n    public static void main(String[] args) {\n    assert(add((2l), (3l)) == (5l));\n"
                 "    assert(add((-1l), (1l)) == (0l));\n    }\n\n}\n",
        "stop_tokens": ["\n    }\n"],
        "right": "        return x + y;", "wrong": "        return x - y;",
    },
}
TOOLS = {"python": ["python3"], "javascript": ["node"], "java": ["javac", "java"]}


def _needs(language):
    missing = [tool for tool in TOOLS[language] if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{language} toolchain missing here: {', '.join(missing)} not on PATH")


def _files(tmp_path, language, completions):
    problem = PROBLEMS[language]
    dataset = tmp_path / "problems.jsonl"
    dataset.write_text(json.dumps({k: problem[k] for k in ("name", "language", "prompt", "tests", "stop_tokens")})
                       + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": problem["name"], "completion": c}) + "\n" for c in completions))
    return dataset, samples


@pytest.mark.parametrize("language", list(PROBLEMS))
def test_right_and_wrong_completions(tmp_path, capsys, language):
    _needs(language)
    problem = PROBLEMS[language]
    broken = "        return x +;" if language == "java" else "  return (x +;\n"  # does not even compile/parse
    dataset, samples = _files(tmp_path, language, [problem["right"], problem["wrong"], broken])
    output = tmp_path / "out.jsonl"
    code = run(["eval", "multipl-e", "--dataset", str(dataset), "--completions", str(samples), "--output", str(output),
                "--allow-code-execution", "--json", "--timeout", "30"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["result"] for r in records] == ["passed", "failed", "failed"]
    summary = json.loads(out)
    assert summary["passed"] == 1 and summary["pass@k"]["pass@1"] == pytest.approx(1 / 3)


def test_a_missing_toolchain_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setattr(executors, "SYSTEM_PATH", str(empty))
    monkeypatch.setenv("PATH", str(empty))
    evaluation._resolved.cache_clear()
    try:
        dataset, samples = _files(tmp_path, "javascript", ["  return x + y;\n}\n"])
        code = run(["eval", "multipl-e", "--dataset", str(dataset), "--completions", str(samples),
                    "--allow-code-execution"])
    finally:
        evaluation._resolved.cache_clear()
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.strip().splitlines() == ["error: javascript programs need node, which is not installed here: "
                                        "install Node.js (node)"]


def test_a_bad_dataset_line_is_one_line_with_its_number(tmp_path, capsys):
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text(json.dumps({"name": "x", "language": "py", "prompt": "", "tests": ""}) + "\n")
    assert run(["eval", "multipl-e", "--dataset", str(dataset)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {dataset} line 1: a MultiPL-E record needs stop_tokens"


def test_an_unknown_language_names_the_ones_that_run(tmp_path, capsys):
    dataset = tmp_path / "rust.jsonl"
    dataset.write_text(json.dumps({"name": "x", "language": "rs", "prompt": "", "tests": "", "stop_tokens": []}) + "\n")
    assert run(["eval", "multipl-e", "--dataset", str(dataset)]) == 1
    assert capsys.readouterr().err.strip() == "error: no executor for language 'rs'; bigcode eval runs python, javascript, java"
