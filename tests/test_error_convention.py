"""One convention for every command: fast --help, no colour in pipes or with NO_COLOR/--no-color,
Ctrl-C -> 130, a closed stdout ends quietly, BIGCODE_DEBUG=1 shows the traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from checkpoints import save_checkpoint, save_lm_with_tokenizer
from cli_process import on_a_terminal, running
from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7]|38;[25];[0-9;]+)m")  # a foreground colour, not bold/dim


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("convention_models")
    tagger = save_checkpoint(root / "tag", "token-classification", vocab_size=360)
    save_tokenizer(tagger, STARCODER_SPECIALS)
    classifier = save_checkpoint(root / "cls", "sequence-classification", vocab_size=360)
    save_tokenizer(classifier, STARCODER_SPECIALS)
    return {"lm": save_lm_with_tokenizer(root / "lm"), "tag": tagger, "cls": classifier}


def _bigcode(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bigcode_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kwargs)


# ---------------------------------------------------------------------------------------------
# --help is instant: no torch, transformers or safetensors for any command

HELP_SCRIPT = r"""
import contextlib, io, json, sys
from typer.main import get_command
from bigcode_cli.cli.app import app, run

HEAVY = ("torch", "transformers", "safetensors", "starlette", "uvicorn")  # the web stack: only `serve` runs it (typer itself imports pydantic when installed)

def leaves(command, prefix=()):
    yield prefix
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from leaves(sub, (*prefix, name))

report = {}
for path in leaves(get_command(app)):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run([*path, "--help"])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    report[" ".join(path) or "(root)"] = {"code": code, "heavy": heavy, "chars": len(buffer.getvalue())}
print(json.dumps(report))
"""


def test_help_of_every_command_imports_nothing_heavy():
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"(root)", "complete", "generate", "infill", "classify", "tag", "repl", "models", "models list",
            "finetune", "serve"} <= set(report)
    for command, result in report.items():
        assert result["code"] == 0 and result["chars"] > 100, (command, result)
        assert result["heavy"] == [], f"`bigcode {command} --help` imported {result['heavy']}"


# ---------------------------------------------------------------------------------------------
# colour: never in a pipe; NO_COLOR and --no-color turn it off on a terminal


def test_output_to_a_pipe_is_never_coloured(models, tmp_path):
    source = tmp_path / "a.py"
    source.write_text("api_key = 'abc123'\nprint(api_key)\n")
    runs = [
        _bigcode("tag", source, "-m", models["tag"], "--format", "table"),  # highlighted spans on a terminal
        _bigcode("classify", source, "-m", models["cls"], "--format", "table"),
        _bigcode("complete", source, "-m", models["lm"], "--max-new-tokens", "4"),
        _bigcode("models", "info", models["lm"]),
        _bigcode("complete", "--help"),
        _bigcode("complete", tmp_path / "missing.py"),  # an error on stderr
        _bigcode("complete", source, "--max-new-tokens", "0"),  # a usage error on stderr
    ]
    for proc in runs:
        assert not ANSI.search(proc.stdout), proc.args
        assert not ANSI.search(proc.stderr), proc.args
    assert runs[0].returncode == 0 and "api_key" in runs[0].stdout
    assert runs[-2].stderr.startswith("error: ") and runs[-1].stderr.startswith("error: ")


@pytest.mark.parametrize("args", [["complete", "missing.py"], ["complete", "--help"]])
def test_no_color_and_NO_COLORon_a_terminal(tmp_path, args):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "BIGCODE_NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="100")
    args = [str(tmp_path / a) if a.endswith(".py") else a for a in args]
    coloured = on_a_terminal(args, env)
    assert COLOUR.search(coloured), "expected colour on a terminal: the check below would prove nothing"
    assert not COLOUR.search(on_a_terminal(args, {**env, "NO_COLOR": "1"}))
    for plain in (on_a_terminal(["--no-color", *args], env), on_a_terminal([*args, "--no-color"], env)):
        assert not COLOUR.search(plain)
        assert ANSI.sub("", plain).strip()  # still says something
        assert "No such option" not in plain


# ---------------------------------------------------------------------------------------------
# Ctrl-C -> 130 without a traceback; a closed stdout -> quiet exit 0


@pytest.mark.parametrize("command", ["generate", "classify", "tag", "repl"])
def test_ctrl_c_while_waiting_for_input_exits_130(models, command):
    model = {"classify": models["cls"], "tag": models["tag"]}.get(command, models["lm"])
    with running(command, "-m", model, stdin=subprocess.PIPE) as proc:
        time.sleep(3)  # loading or blocked reading stdin: either way Ctrl-C must end it cleanly
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode(errors="replace")
    assert b"Traceback" not in err
    assert out == b""


@pytest.mark.parametrize("args", [
    ["--help"],
    ["complete", "--help"],
    ["--version"],
    ["models", "info", "{lm}", "--json"],
    ["generate", "def f():", "-m", "{lm}", "--max-new-tokens", "30", "-t", "1", "--seed", "0"],
    ["tag", "-m", "{tag}", "--format", "table"],
    ["classify", "-m", "{cls}"],
])
def test_closed_stdout_ends_quietly(models, args):
    args = [a.format(**models) for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: every write fails with EPIPE
    records = "".join(f"snippet_{i} = {i}\n" for i in range(200))
    proc = subprocess.run([sys.executable, "-m", "bigcode_cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                          input=records.encode(), timeout=120)
    os.close(write_end)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err and "Exception ignored" not in err and "error" not in err


def test_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.py"
    quiet = _bigcode("complete", missing)
    assert quiet.returncode == 1 and quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    loud = _bigcode("complete", missing, env={**os.environ, "BIGCODE_DEBUG": "1"})
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "InputError" in loud.stderr
