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
