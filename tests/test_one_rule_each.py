"""One rule per idea, whichever command meets it: what counts as text, how the --at, --lines and
--stop values are checked (usage errors: exit 2), and --no-color leaving the environment alone."""

from __future__ import annotations

import io
import os
import sys

import pytest
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.cli.app import run
from bigcode_cli.errors import InputError, UsageError
from bigcode_cli.pipelines.inputs import read_records
from bigcode_cli.text.textfile import decode_text


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("rules") / "lm")


SAMPLES = [b"x = 1\n", "naïve = '日本'\n".encode(), b"a\x00b", b"\xff\xfe", b"x = 1\n" * 20000 + b"\x00",
           b"ok\n\xc3\x28\n"]


@pytest.mark.parametrize("data", SAMPLES, ids=["ascii", "utf8", "nul", "not-utf8", "late-nul", "bad-byte"])
def test_files_and_pipeline_records_share_one_rule_for_text(tmp_path, data):
    path = tmp_path / "snippet.py"
    path.write_bytes(data)
    try:
        text = decode_text(data, str(path))
    except InputError:
        text = None
    record = next(read_records([str(path)], io.BytesIO(b"")))
    assert record.text == text
    assert (text is None) == (b"\x00" in data or data in (b"\xff\xfe", b"ok\n\xc3\x28\n"))


def test_a_nul_byte_anywhere_makes_a_file_binary_for_complete(capsys, tmp_path, lm):
    path = tmp_path / "late.py"
    path.write_bytes(b"x = 1\n" * 20000 + b"\x00")  # the NUL is past the first 64 KiB
    assert run(["complete", str(path), "-m", str(lm), "--max-new-tokens", "2"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "binary" in err


@pytest.mark.parametrize("args, message", [
    (["complete", "{f}", "--at", "0:1"], "--at LINE and COL start at 1"),
    (["complete", "{f}", "--lines", "0"], "--lines"),
    (["complete", "{f}", "--stop", ""], "--stop string must not be empty"),
    (["generate", "x = 1", "--stop", "ok", "--stop", ""], "--stop string must not be empty"),
    (["infill", "--prefix", "a", "--stop", ""], "--stop string must not be empty"),
])
def test_option_values_are_usage_errors(capsys, tmp_path, lm, args, message):
    source = tmp_path / "a.py"
    source.write_text("def f():\n    return 1\n")
    code = run([a.format(f=source) for a in args] + ["-m", str(lm), "--max-new-tokens", "2"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_the_checks_raise_usage_errors_wherever_they_are_met():
    from bigcode_cli.generation.fim import clean_completion, split_source
    from bigcode_cli.generation.stopping import StopMatcher

    with pytest.raises(UsageError, match="--at LINE and COL start at 1"):
        split_source("a = 1\n", (0, 1))
    with pytest.raises(UsageError, match="--lines must be at least 1"):
        clean_completion("a", "", lines=0)
    with pytest.raises(UsageError, match="--stop string must not be empty"):
        StopMatcher(["ok", ""])


def test_no_color_leaves_the_environment_alone(capsys, monkeypatch, lm):
    monkeypatch.delenv("NO_COLOR", raising=False)
    before = dict(os.environ)
    assert run(["--no-color", "models", "info", str(lm)]) == 0
    assert dict(os.environ) == before
    assert "layers" in capsys.readouterr().out


def test_stdout_is_given_back_after_a_run(capsys, lm):
    stdout = sys.stdout
    assert run(["--version"]) == 0
    assert sys.stdout is stdout and capsys.readouterr().out.startswith("bigcode-cli ")


def test_a_closed_pipe_becomes_one_quiet_exit_at_stdout():
    from bigcode_cli.terminal.closed_stdout import GuardedStdout, StdoutClosed

    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the flush fails with EPIPE
    stream = io.TextIOWrapper(io.FileIO(write_end, "w"), encoding="utf-8")
    guard = GuardedStdout(stream)
    guard.write("x = 1\n" * 100)
    with pytest.raises(StdoutClosed) as caught:
        guard.flush()
    assert isinstance(caught.value, SystemExit) and caught.value.code == 0  # not stopped by `except Exception`
    stream.write("the rest\n")
    stream.flush()  # the descriptor now points at /dev/null: nothing fails again
    stream.close()


def test_the_repl_ends_quietly_on_a_closed_stdout(lm):
    import subprocess

    read_end, write_end = os.pipe()
    os.close(read_end)
    turns = "".join(f"x{i} = {i}\n\n" for i in range(5)).encode()
    proc = subprocess.run([sys.executable, "-m", "bigcode_cli", "repl", "-m", str(lm), "--max-new-tokens", "4"],
                          stdout=write_end, stderr=subprocess.PIPE, input=turns, timeout=120)
    os.close(write_end)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "error" not in err and "Exception ignored" not in err


# -- one definition per fact: the choice lists live in bigcode_cli.choices and everything else derives from them

def _choice_lists() -> dict[frozenset, str]:
    from bigcode_cli import choices

    return {frozenset(value): name for name, value in vars(choices).items()
            if name.isupper() and isinstance(value, (tuple, dict)) and len(value) >= 2}


def _spelled_out_lists(source: str) -> list[tuple[int, frozenset]]:
    """Every tuple, list or set literal of two or more strings (a Literal[...] type included), with its line."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            found.append((node.lineno, frozenset(e.value for e in node.elts)))
    return found


def test_no_choice_list_is_written_out_again_outside_choices():
    from pathlib import Path

    import bigcode_cli

    lists = _choice_lists()
    package = Path(bigcode_cli.__file__).parent
    copies = [f"{path.relative_to(package)}:{line} repeats choices.{lists[values]}"
              for path in sorted(package.rglob("*.py")) if path.name != "choices.py"
              for line, values in _spelled_out_lists(path.read_text(encoding="utf-8")) if values in lists]
    assert copies == []


def test_the_duplicate_finder_finds_a_copy():
    found = _spelled_out_lists('QUANT = ("int8", "int4")\nOrder = Literal["psm", "spm"]\n')
    lists = _choice_lists()
    assert [lists.get(values) for _, values in found] == ["QUANTIZED_DTYPES", "FIM_ORDERS"]


def test_cli_option_enums_are_made_from_the_choices():
    """No command writes a str Enum by hand: every choice Enum comes from choice_enum(choices.X)."""
    import ast
    from pathlib import Path

    import bigcode_cli.cli

    hand_written = []
    for path in sorted(Path(bigcode_cli.cli.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "Enum" for b in node.bases):
                hand_written.append(f"{path.name}:{node.lineno} {node.name}")
    assert hand_written == []


def test_option_enums_offer_exactly_their_choice_lists():
    from bigcode_cli import choices
    from bigcode_cli.cli.commands import models, pipeline, scale_out, serve, tag

    def values(enum):
        return tuple(member.value for member in enum)

    assert values(pipeline.OutputFormat) == choices.RESULT_FORMATS
    assert values(pipeline.InputFormat) == choices.INPUT_FORMATS
    assert values(pipeline.Truncate) == choices.TRUNCATE_SIDES
    assert values(tag.Aggregate) == choices.AGGREGATES
    assert values(scale_out.OutputFormat) == choices.OUTPUT_FORMATS
    assert values(serve.ServeFimOrder) == choices.SERVE_FIM_ORDERS
    assert values(models.QuantDtype) == tuple(choices.QUANTIZED_DTYPES)


def test_the_kernel_knows_every_activation_through_its_function(monkeypatch):
    """The kernel's activation codes are keyed by function: a new name for a known function needs no kernel edit."""
    import importlib

    from bigcode_cli import choices
    from bigcode_cli.kernels import decode_support

    assert set(decode_support.ACTIVATIONS) == set(choices.ACTIVATIONS)
    monkeypatch.setitem(choices.ACTIVATIONS, "gelu_python_tanh", "gelu_tanh")
    try:
        reloaded = importlib.reload(decode_support)
        assert reloaded.ACTIVATIONS["gelu_python_tanh"] == reloaded.ACTIVATIONS["gelu_pytorch_tanh"]
        assert reloaded.activation_problem("gelu_python_tanh") is None
    finally:
        monkeypatch.undo()
        importlib.reload(decode_support)


def test_commands_name_the_types_their_option_groups_build():
    """`choice: ModelChoice = MODEL`: each group parameter is annotated with what its group builds, never Any."""
    import inspect

    import typer

    from bigcode_cli.cli.commands.option_groups import OptionGroup
    from bigcode_cli.cli.commands.registry import COMMANDS

    def functions(target):
        if isinstance(target, typer.Typer):
            for info in target.registered_commands:
                yield from functions(info.callback)
        else:
            yield target

    seen = {}
    for _, target in COMMANDS:
        for command in functions(target):
            written = inspect.signature(inspect.unwrap(command))
            for name, parameter in written.parameters.items():
                if isinstance(parameter.default, OptionGroup):
                    built = inspect.signature(parameter.default.build).return_annotation
                    seen[f"{command.__name__}.{name}"] = parameter.annotation
                    assert parameter.annotation == built != "Any", (command.__name__, name)
    assert seen["classify.choice"] == "ModelChoice" and seen["complete.settings"] == "CompletionSettings"
    assert seen["tag.io"] == "PipelineIO" and seen["tag.scale"] == "ScaleOut"
    assert seen["finetune_tag.training"] == "dict[str, Any]"
