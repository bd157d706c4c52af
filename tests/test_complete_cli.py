"""`bigcode complete`, `generate` and `infill` as a user runs them: outputs, files, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from checkpoints import save_checkpoint, save_lm_with_tokenizer
from cli_process import on_a_terminal, running

from bigcode_cli.cli.app import run
from bigcode_cli.generation.fim import splice

SOURCE = 'def fib(n):\n    """Return the n-th Fibonacci number."""\n    <FILL>\n\nprint(fib(10))\n'


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "ckpt")


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "fib.py"
    path.write_text(SOURCE)
    return path


def _run(capsys, *args):
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_object_has_the_documented_fields(capsys, lm, source):
    code, out, err = _run(capsys, "complete", source, "-m", lm, "--json", "-t", "0", "--max-new-tokens", "12")
    assert code == 0, err
    record = json.loads(out)
    assert set(record) >= {"text", "mode", "prompt", "stop_reason", "prompt_tokens", "new_tokens", "timings"}
    assert record["mode"] == "fim"
    assert record["prompt"].startswith("<fim_prefix>def fib(n):") and record["prompt"].endswith("<fim_middle>")
    assert "<fim_suffix>\n\nprint(fib(10))\n" in record["prompt"]
    assert record["stop_reason"] in ("eos", "length", "stop")
    # "length" exactly when every one of the 12 tokens asked for was made
    assert (record["stop_reason"] == "length") == (record["new_tokens"] == 12), record
    assert set(record["timings"]) == {"load_s", "prefill_s", "decode_s", "tokens_per_s", "draft_n", "draft_n_accepted"}


def test_streamed_text_equals_json_text(capsys, lm, source):
    args = ("complete", source, "-m", lm, "-t", "0", "--max-new-tokens", "12", "--no-block")
    code, streamed, _ = _run(capsys, *args)
    code2, out, _ = _run(capsys, *args, "--json")
    assert code == code2 == 0
    assert streamed == json.loads(out)["text"]


def test_continue_mode_without_cursor(capsys, lm, tmp_path):
    path = tmp_path / "a.py"
    path.write_text("import os\n")
    code, out, _ = _run(capsys, "complete", path, "-m", lm, "--json", "-t", "0", "--max-new-tokens", "5")
    record = json.loads(out)
    assert code == 0 and record["mode"] == "continue" and record["prompt"] == "import os\n"


def test_at_cursor_and_stdin(capsys, lm, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x = 1\ny = 2\n")))
    code, out, err = _run(capsys, "complete", "-", "--at", "2:1", "-m", lm, "--json", "-t", "0",
                          "--max-new-tokens", "4")
    assert code == 0, err
    assert json.loads(out)["prompt"] == "<fim_prefix>x = 1\n<fim_suffix>y = 2\n<fim_middle>"


def test_num_samples_json_lines(capsys, lm, source):
    code, out, _ = _run(capsys, "complete", source, "-m", lm, "--json", "-n", "3", "--seed", "1",
                        "--max-new-tokens", "6")
    assert code == 0 and len(out.splitlines()) == 3


def test_in_place_splices_the_completion(capsys, lm, source):
    code, out, err = _run(capsys, "complete", source, "-m", lm, "-t", "0", "--max-new-tokens", "8", "--in-place")
    assert code == 0, err
    assert out == ""
    text = source.read_text()
    source.write_text(SOURCE)
    _, out, _ = _run(capsys, "complete", source, "-m", lm, "-t", "0", "--max-new-tokens", "8", "--json")
    # the file now holds prefix + completion + suffix as an editor joins them (fim.splice), and no marker
    assert "<FILL>" not in text
    assert text == "".join(splice(*SOURCE.split("<FILL>")[:1], json.loads(out)["text"], SOURCE.split("<FILL>")[1]))


def test_in_place_in_a_crlf_file_writes_crlf_lines(capsys, lm, tmp_path, monkeypatch):
    # the random model seldom writes a newline: its completion gets two lines more, the way a model's would
    import dataclasses

    from bigcode_cli.cli.commands import generation_run

    real = generation_run.run_completion

    def with_lines(completer, request, **options):
        class Lines:
            def complete(self, request, on_text):
                result = completer.complete(request, on_text)
                first = result.samples[0]
                return dataclasses.replace(result, samples=[first._replace(text=first.text + "\n    y = 2\n")])

        return real(Lines(), request, **options)

    monkeypatch.setattr(generation_run, "run_completion", with_lines)
    path = tmp_path / "win.py"
    path.write_bytes(SOURCE.replace("\n", "\r\n").encode())
    code, _, err = _run(capsys, "complete", path, "-m", lm, "-t", "0", "--max-new-tokens", "4", "--in-place")
    assert code == 0, err
    data = path.read_bytes()
    assert b"<FILL>" not in data and b"    y = 2\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n") > SOURCE.count("\n")  # no bare LF


def test_diff_prints_a_unified_diff_and_leaves_the_file(capsys, lm, source):
    code, out, _ = _run(capsys, "complete", source, "-m", lm, "-t", "0", "--max-new-tokens", "8", "--diff")
    assert code == 0
    assert out.startswith(f"--- a/{source}\n+++ b/{source}\n@@ ")
    assert source.read_text() == SOURCE


@pytest.fixture(scope="module")
def silent_lm(tmp_path_factory):
    """A causal LM whose first token is always <|endoftext|>: every completion is empty."""
    import torch
    from safetensors.torch import load_file, save_file

    path = save_lm_with_tokenizer(tmp_path_factory.mktemp("silent") / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    eos = torch.randn_like(state["transformer.wte.weight"][0]) * 5
    state["transformer.wte.weight"][0] = eos  # the tied head's row of id 0, the tokenizer's end of text
    state["transformer.ln_f.weight"].zero_()  # every final hidden state is ln_f's bias ...
    state["transformer.ln_f.bias"].copy_(eos)  # ... which scores id 0 far above any other row
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def test_an_empty_completion_says_so_on_a_terminal_only(capsys, silent_lm, tmp_path):
    (tmp_path / "add.js").write_text("function add(a, b) {\n  <FILL>\n}\n")
    args = ("complete", tmp_path / "add.js", "-m", silent_lm, "--max-new-tokens", "8")
    code, out, err = _run(capsys, *args, "--json")
    assert code == 0 and json.loads(out)["text"] == "" and json.loads(out)["new_tokens"] == 0 and err == ""
    code, out, err = _run(capsys, *args)
    assert (code, err) == (0, "") and out.strip() == ""  # a pipe gets the (empty) text and nothing else
    env = {**os.environ, "TERM": "xterm", "NO_COLOR": "1", "COLUMNS": "200"}
    shown = on_a_terminal(list(args), env)
    assert "note: the model produced nothing here (it ended the completion at once)" in shown


def test_generate_and_infill(capsys, lm):
    code, out, _ = _run(capsys, "generate", "def main():\n", "-m", lm, "-t", "0", "--max-new-tokens", "5", "--json")
    assert code == 0 and json.loads(out)["mode"] == "continue"
    code, out, _ = _run(capsys, "infill", "--prefix", "a = ", "--suffix", "\nprint(a)\n", "-m", lm, "-t", "0",
                        "--max-new-tokens", "5", "--json")
    assert code == 0 and json.loads(out)["prompt"] == "<fim_prefix>a = <fim_suffix>\nprint(a)\n<fim_middle>"


def _one_line_error(code, out, err, expected_code=1):
    assert code == expected_code, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "make, args, message, exit_code",
    [
        (lambda p: None, [], "no such file", 1),
        (lambda p: p.mkdir(), [], "is a directory", 1),
        (lambda p: p.write_bytes(b"\x7fELF\x00\x01\x02"), [], "binary", 1),
        (lambda p: p.write_bytes(b"caf\xe9 = 1\n"), [], "not valid UTF-8", 1),
        (lambda p: p.write_text(""), [], "is empty", 1),
        (lambda p: p.write_text("a = 1\n"), ["--at", "9:1"], "outside the file", 1),
        (lambda p: p.write_text("a = <FILL>\nb = <FILL>\n"), [], "2 <FILL> markers", 1),
        (lambda p: p.write_text("a = 1\n"), ["--top-p", "1.5"], "--top-p", 2),
        (lambda p: p.write_text("a = 1\n"), ["--in-place", "--diff"], "exclude each other", 2),
        (lambda p: p.write_text("a = 1\n"), ["--at", "x"], "LINE:COL", 2),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(capsys, lm, tmp_path, make, args, message, exit_code):
    path = tmp_path / "input.py"
    make(path)
    before = sorted(os.listdir(tmp_path))
    code, out, err = _run(capsys, "complete", path, "-m", lm, *args)
    assert message in _one_line_error(code, out, err, expected_code=exit_code)
    assert out == ""
    assert sorted(os.listdir(tmp_path)) == before


def test_zero_max_new_tokens_is_a_usage_error(capsys, lm, source):
    code, out, err = _run(capsys, "complete", source, "-m", lm, "--max-new-tokens", "0")
    _one_line_error(code, out, err, expected_code=2)


def test_unknown_model_and_model_without_lm_head(capsys, tmp_path, source):
    code, out, err = _run(capsys, "complete", source, "-m", "no-such-model")
    assert "no-such-model" in _one_line_error(code, out, err)
    classifier = save_checkpoint(tmp_path / "cls", "sequence-classification", vocab_size=360)
    from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

    save_tokenizer(classifier, STARCODER_SPECIALS)
    code, out, err = _run(capsys, "complete", source, "-m", classifier)
    assert "no language-model (lm_head) head" in _one_line_error(code, out, err)


def test_infill_without_fim_tokens_is_a_clear_error(capsys, tmp_path):
    plain = save_lm_with_tokenizer(tmp_path / "plain", fim=False)
    code, out, err = _run(capsys, "infill", "--prefix", "a", "--suffix", "b", "-m", plain)
    assert "fill-in-the-middle" in _one_line_error(code, out, err)


def test_closed_pipe_ends_quietly(lm, source):
    proc = subprocess.run(
        f"{sys.executable} -m bigcode_cli complete {source} -m {lm} --no-block -t 1 --seed 3 --max-new-tokens 60 "
        f"| head -c 5",
        shell=True, capture_output=True, timeout=120,
    )
    assert len(proc.stdout) == 5
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err and "Broken" not in err and "Exception" not in err and "error" not in err, err


@pytest.fixture(scope="module")
def long_lm(tmp_path_factory):
    # big enough that 8,000 greedy tokens take well over the few seconds the tests wait
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("long") / "ckpt", n_positions=8192, n_embd=256, n_layer=8)


def test_ctrl_c_during_streaming_exits_130(long_lm, tmp_path):
    path = tmp_path / "big.py"
    path.write_text("def f():\n")  # continue mode with --no-block streams every token at once
    with running("complete", path, "-m", long_lm, "--no-block", "-t", "0", "--max-new-tokens", "8000") as proc:
        assert proc.stdout.read(1)  # streaming has started
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err


def test_ctrl_c_during_in_place_exits_130_and_leaves_the_file(long_lm, tmp_path):
    path = tmp_path / "big.py"
    path.write_text("def f():\n    <FILL>\n")
    # greedy: the random model loops instead of sampling an end-of-text token
    with running("complete", path, "-m", long_lm, "--no-block", "-t", "0", "--max-new-tokens", "8000",
                 "--in-place") as proc:
        time.sleep(4)
        assert proc.poll() is None  # still generating
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert path.read_text() == "def f():\n    <FILL>\n"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".bigcode")]
