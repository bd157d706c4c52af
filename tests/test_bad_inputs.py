"""The bad-input battery: every command, every way a user can get its input wrong.

Each case must end in one clear `error: ...` line on stderr (pipeline commands may put their error
records first), the right exit code (1 error, 2 usage), no traceback, nothing on stdout, no partial
output file and no change to the user's files. Cases are parametrised over the commands they apply
to; `test_every_command_is_in_the_battery` fails when a command is added without being listed here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoints import save_checkpoint, save_lm_with_tokenizer
from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

from bigcode_cli.cli.app import run

PIPELINE = ("classify", "tag")  # bad records get an error record each, then one summary `error:` line


# ---------------------------------------------------------------------------------------------
# fixtures: tiny checkpoints (one per task) and broken copies of them


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("battery_models")
    found = {"lm": save_lm_with_tokenizer(root / "lm")}
    for key, task in (("cls", "sequence-classification"), ("tag", "token-classification")):
        found[key] = save_checkpoint(root / key, task, vocab_size=360)
        save_tokenizer(found[key], STARCODER_SPECIALS)
    for key in ("lm", "cls", "tag"):
        corrupt = shutil.copytree(found[key], root / f"{key}-corrupt-config")
        (corrupt / "config.json").write_text('{"model_type": "gpt_bigcode", "n_embd": 32,')
        truncated = shutil.copytree(found[key], root / f"{key}-truncated")
        weights = truncated / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
        llama = shutil.copytree(found[key], root / f"{key}-llama")
        config = json.loads((llama / "config.json").read_text())
        (llama / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
        found[f"{key}-corrupt-config"], found[f"{key}-truncated"], found[f"{key}-llama"] = corrupt, truncated, llama
    return found


@pytest.fixture
def work(tmp_path) -> Path:
    """The user's working directory: a good source file and training data beside the bad input."""
    (tmp_path / "good.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "train.jsonl").write_text('{"text": "x = 1", "label": "python"}\n{"text": "int x;", "label": "c"}\n')
    (tmp_path / "tag_train.jsonl").write_text('{"text": "key = \\"abc\\"", "spans": [{"start": 7, "end": 10, '
                                              '"label": "KEY"}]}\n')
    return tmp_path


def _tree(root: Path) -> dict[str, tuple]:
    """Every file under root with its size, mtime and hash: what 'no change to the user's files' compares."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            state[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, st.st_mode,
                                                   hashlib.sha256(path.read_bytes()).hexdigest())
        elif path.is_dir():
            state[str(path.relative_to(root)) + "/"] = ()
    return state


def _cache_entries(home: Path) -> list[str]:
    """Entries in the model cache, including half-written ones under .tmp."""
    models = home / "models"
    if not models.is_dir():
        return []
    return sorted(str(p.relative_to(models)) for p in models.rglob("*")
                  if p.is_file() and ".locks" not in p.parts)


def _run(capsys, monkeypatch, args, stdin: bytes | None = b""):
    """Run the CLI in this process; stdin None means closed (`<&-`: Python sets sys.stdin to None)."""
    if stdin is None:
        monkeypatch.setattr(sys, "stdin", None)
    else:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(code: int, out: str, err: str, *, expected_code: int, pipeline: bool = False) -> str:
    """One `error:` line (after any error records), the exit code, no traceback, no output. Returns the line."""
    assert code == expected_code, f"exit {code}, expected {expected_code}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert out == "", f"stdout should be empty, got {out[:200]!r}"
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: "), err
    if pipeline:
        for line in lines[:-1]:  # error records: JSON with an "error" field, or `error:` lines
            assert line.startswith("error: ") or "error" in json.loads(line), line
    else:
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err}"
    return err


def _check(capsys, monkeypatch, args, *, expected_code, message, roots, home, stdin=b"", pipeline=False,
           out_path: Path | None = None):
    before = {root: _tree(root) for root in roots}
    cache_before = _cache_entries(home)
    code, out, err = _run(capsys, monkeypatch, args, stdin)
    err = assert_clean_failure(code, out, err, expected_code=expected_code, pipeline=pipeline)
    for word in message.split("|"):
        if word.lower() in err.lower():
            break
    else:
        pytest.fail(f"none of {message!r} in {err!r}")
    for root in roots:
        assert _tree(root) == before[root], f"files under {root} changed"
    assert _cache_entries(home) == cache_before, "the model cache changed"
    if out_path is not None:
        assert not out_path.exists(), f"partial output left at {out_path}"
    return err


# ---------------------------------------------------------------------------------------------
# bad input files


def _make_input(path: Path, kind: str) -> None:
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00payload")
    elif kind == "invalid-utf8":
        path.write_bytes(b"caf\xe9 = 'latin-1'\n")


BAD_FILES = {
    "nonexistent": "no such file",
    "directory": "directory",
    "empty": "empty|no records",
    "binary": "binary",
    "invalid-utf8": "UTF-8",
}

# command -> argv for an input file `f`, with models `m` and the work dir `w`
FILE_COMMANDS = {
    "complete": lambda f, m, w: ["complete", f, "-m", m["lm"]],
    "infill": lambda f, m, w: ["infill", "--prefix-file", f, "--suffix-file", f, "-m", m["lm"]],
    "classify": lambda f, m, w: ["classify", f, "-m", m["cls"]],
    "tag": lambda f, m, w: ["tag", f, "-m", m["tag"]],
    "finetune classify": lambda f, m, w: ["finetune", "classify", "--train", f, "--base", m["lm"],
                                          "--out", w / "out"],
    "finetune tag": lambda f, m, w: ["finetune", "tag", "--train", w / "tag_train.jsonl", "--eval", f,
                                     "--base", m["lm"], "--out", w / "out"],
    "eval": lambda f, m, w: ["eval", "humaneval", "--completions", f, "--allow-code-execution", "-o", w / "out"],
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("command", list(FILE_COMMANDS))
def test_bad_input_file(capsys, monkeypatch, isolated_home, models, work, command, kind):
    path = work / "input.py"
    _make_input(path, kind)
    args = FILE_COMMANDS[command](path, models, work)
    _check(capsys, monkeypatch, args, expected_code=1, message=BAD_FILES[kind], roots=[work, models["lm"].parent],
           home=isolated_home, pipeline=command in PIPELINE, out_path=work / "out")


@pytest.mark.parametrize("kind, message", [("nonexistent", "not a directory"), ("file", "not a directory"),
                                           ("empty-dir", "config.json")])
def test_models_import_bad_path(capsys, monkeypatch, isolated_home, work, models, kind, message):
    path = work / "ckpt"
    if kind == "file":
        path.write_text("not a checkpoint\n")
    elif kind == "empty-dir":
        path.mkdir()
    _check(capsys, monkeypatch, ["models", "import", path, "--name", "mine"], expected_code=1, message=message,
           roots=[work], home=isolated_home)


# ---------------------------------------------------------------------------------------------
# bad models: unknown name, corrupt config.json, truncated weights, another architecture

MODEL_COMMANDS = {  # command -> (the checkpoint it needs, argv for model `x`)
    "complete": ("lm", lambda x, w: ["complete", w / "good.py", "-m", x, "--in-place"]),
    "generate": ("lm", lambda x, w: ["generate", "def f():", "-m", x, "--max-new-tokens", "2"]),
    "infill": ("lm", lambda x, w: ["infill", "--prefix", "a = ", "--suffix", "\n", "-m", x]),
    "classify": ("cls", lambda x, w: ["classify", w / "good.py", "-m", x]),
    "tag": ("tag", lambda x, w: ["tag", w / "good.py", "-m", x]),
    "repl": ("lm", lambda x, w: ["repl", "-m", x]),
    "bench": ("lm", lambda x, w: ["bench", "-m", x, "--engine", "native", "--attn", "eager", "--rounds", "1",
                                  "--new-tokens", "2", "--prompt-tokens", "4"]),
    "finetune classify": ("lm", lambda x, w: ["finetune", "classify", "--train", w / "train.jsonl", "--base", x,
                                              "--out", w / "out"]),
    "models info": ("lm", lambda x, w: ["models", "info", x]),
    "models path": ("lm", lambda x, w: ["models", "path", x]),
    "models verify": ("lm", lambda x, w: ["models", "verify", x]),
    "models import": ("lm", lambda x, w: ["models", "import", x, "--name", "imported"]),
    "models quantize": ("lm", lambda x, w: ["models", "quantize", x, "--dtype", "int8"]),
    "eval": ("lm", lambda x, w: ["eval", "humaneval", "--limit", "1", "--max-new-tokens", "2", "-m", x,
                                 "-o", w / "out"]),
}
BAD_MODELS = {
    "unknown": "no-such-model|not a directory",
    "corrupt-config": "config.json",
    "truncated": "truncated",
    "llama": "gpt_bigcode",
}
# `models path` prints where a name resolves without reading the weights: truncated weights are its
# caller's business; `models import` of a name that is no directory says so
NOT_ERRORS = {("models path", "truncated")}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
def test_bad_model(capsys, monkeypatch, isolated_home, models, work, command, kind):
    if (command, kind) in NOT_ERRORS:
        pytest.skip("not an error for this command")
    needs, make_args = MODEL_COMMANDS[command]
    model = "no-such-model" if kind == "unknown" else models[f"{needs}-{kind}"]
    _check(capsys, monkeypatch, make_args(model, work), expected_code=1, message=BAD_MODELS[kind],
           roots=[work, models["lm"].parent], home=isolated_home, stdin=b"x = 1\n", out_path=work / "out")


def test_model_of_the_wrong_task(capsys, monkeypatch, isolated_home, models, work):
    for args, head in ((["complete", work / "good.py", "-m", models["cls"]], "lm_head"),
                       (["classify", work / "good.py", "-m", models["lm"]], "score"),
                       (["tag", work / "good.py", "-m", models["cls"]], "classifier")):
        _check(capsys, monkeypatch, args, expected_code=1, message=head, roots=[work], home=isolated_home)


# ---------------------------------------------------------------------------------------------
# a backend this machine cannot run


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _mps() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


BACKEND_COMMANDS = {  # command -> argv for backend options `b`
    "complete": lambda m, w, b: ["complete", w / "good.py", "-m", m["lm"], "--in-place", *b],
    "generate": lambda m, w, b: ["generate", "x = 1", "-m", m["lm"], *b],
    "infill": lambda m, w, b: ["infill", "--prefix", "a", "-m", m["lm"], *b],
    "classify": lambda m, w, b: ["classify", w / "good.py", "-m", m["cls"], *b],
    "tag": lambda m, w, b: ["tag", w / "good.py", "-m", m["tag"], *b],
    "repl": lambda m, w, b: ["repl", "-m", m["lm"], *b],
    "bench": lambda m, w, b: ["bench", "-m", m["lm"], "--engine", "native", "--rounds", "1", "--new-tokens", "2",
                              *b],
    "finetune tag": lambda m, w, b: ["finetune", "tag", "--train", w / "tag_train.jsonl", "--base", m["lm"],
                                     "--out", w / "out", *b],
    "eval": lambda m, w, b: ["eval", "humaneval", "--limit", "1", "-m", m["lm"], "-o", w / "out", *b],
}
BACKENDS = {
    "flash-on-cpu": (["--attn", "flash", "--device", "cpu"], "flash"),
    "cuda-missing": (["--device", "cuda"], "cuda"),
    "mps-missing": (["--device", "mps"], "mps"),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("command", list(BACKEND_COMMANDS))
def test_backend_this_machine_cannot_run(capsys, monkeypatch, isolated_home, models, work, command, backend):
    options, message = BACKENDS[backend]
    if backend == "cuda-missing" and _cuda() or backend == "mps-missing" and _mps():
        pytest.skip("this machine has it")
    if command == "finetune tag":  # finetune has --device but no --attn
        if "--attn" in options:
            pytest.skip("finetune has no --attn")
    _check(capsys, monkeypatch, BACKEND_COMMANDS[command](models, work, options), expected_code=1, message=message,
           roots=[work], home=isolated_home, stdin=b"x = 1\n", out_path=work / "out")


# ---------------------------------------------------------------------------------------------
# out-of-range numbers and conflicting options
#
# Exit 2 for every usage mistake: what the parser rejects (a value outside an option's declared
# range, a wrong type, an unknown choice) and what the command's own checks reject (the sampling
# rules, option combinations: UsageError). Exit 1 for what depends on the data (an unknown label).

OPTION_CASES = [
    # (id, argv template, expected code, words of the message); {f}: a good file, {m}: the lm, {c}/{t}: task models
    ("complete max-new-tokens 0", ["complete", "{f}", "-m", "{m}", "--max-new-tokens", "0"], 2, "--max-new-tokens"),
    ("complete temperature -1", ["complete", "{f}", "-m", "{m}", "--temperature", "-1"], 2, "--temperature"),
    ("complete top-k -1", ["complete", "{f}", "-m", "{m}", "--top-k", "-1"], 2, "--top-k"),
    ("complete lines 0", ["complete", "{f}", "-m", "{m}", "--lines", "0"], 2, "--lines"),
    ("complete num-samples 0", ["complete", "{f}", "-m", "{m}", "-n", "0"], 2, "--num-samples"),
    ("complete top-p 0", ["complete", "{f}", "-m", "{m}", "--top-p", "0"], 2, "--top-p"),
    ("complete repetition-penalty 0", ["complete", "{f}", "-m", "{m}", "--repetition-penalty", "0"], 2,
     "--repetition-penalty"),
    ("complete fim-order", ["complete", "{f}", "-m", "{m}", "--fim-order", "pms"], 2, "--fim-order"),
    ("complete seed too big", ["complete", "{f}", "-m", "{m}", "--seed", "9" * 23], 2, "--seed"),  # was an internal error
    ("generate seed negative", ["generate", "x", "-m", "{m}", "--seed", "-1"], 2, "--seed"),
    ("complete attn bogus", ["complete", "{f}", "-m", "{m}", "--attn", "fast"], 2, "--attn"),
    ("complete max-new-tokens word", ["complete", "{f}", "-m", "{m}", "--max-new-tokens", "many"], 2,
     "--max-new-tokens"),
    ("generate top-p 1.5", ["generate", "x", "-m", "{m}", "--top-p", "1.5"], 2, "--top-p"),
    ("generate temperature nan", ["generate", "x", "-m", "{m}", "--temperature", "nan"], 2, "temperature"),
    ("infill max-new-tokens 0", ["infill", "--prefix", "a", "-m", "{m}", "--max-new-tokens", "0"], 2,
     "--max-new-tokens"),
    ("repl temperature -1", ["repl", "-m", "{m}", "--temperature", "-1"], 2, "--temperature"),
    ("repl top-p 2", ["repl", "-m", "{m}", "--top-p", "2"], 2, "--top-p"),
    ("repl mode bogus", ["repl", "-m", "{m}", "--mode", "chat"], 2, "--mode"),
    ("classify batch-size 0", ["classify", "{f}", "-m", "{c}", "--batch-size", "0"], 2, "--batch-size"),
    ("classify threshold 2", ["classify", "{f}", "-m", "{c}", "--threshold", "2"], 2, "--threshold"),
    ("classify top-k 0", ["classify", "{f}", "-m", "{c}", "--top-k", "0"], 2, "--top-k"),
    ("classify format bogus", ["classify", "{f}", "-m", "{c}", "--format", "csv"], 2, "--format"),
    ("tag batch-size 0", ["tag", "{f}", "-m", "{t}", "--batch-size", "0"], 2, "--batch-size"),
    ("tag redact with format", ["tag", "{f}", "-m", "{t}", "--redact", "--format", "tsv"], 2, "--format"),
    ("classify output csv", ["classify", "{f}", "-m", "{c}", "--output", "{o}.csv"], 2, "--output"),
    ("tag aggregate bogus", ["tag", "{f}", "-m", "{t}", "--aggregate", "line"], 2, "--aggregate"),
    ("tag unknown label", ["tag", "{f}", "-m", "{t}", "--labels", "PASSWORD"], 2, "PASSWORD"),
    ("serve fim-order bogus", ["serve", "-m", "{m}", "--fim-order", "mid"], 2, "--fim-order"),
    ("serve port too big", ["serve", "-m", "{m}", "--port", "70000"], 2, "--port"),
    ("serve queue 0", ["serve", "-m", "{m}", "--queue", "0"], 2, "--queue"),
    ("serve allowed-origins path", ["serve", "-m", "{m}", "--allowed-origins", "http://localhost:3000/app"], 2,
     "--allowed-origins"),
    ("serve allowed-hosts url", ["serve", "-m", "{m}", "--allowed-hosts", "http://devbox.lan/"], 2, "--allowed-hosts"),
    ("serve alias blank", ["serve", "-m", "{m}", "--alias", " "], 2, "--alias"),
    ("serve api-key-file missing", ["serve", "-m", "{m}", "--api-key-file", "{o}"], 1, "--api-key-file"),
    ("serve api-key-file directory", ["serve", "-m", "{m}", "--api-key-file", "{m}"], 1, "directory"),
    ("bench rounds 0", ["bench", "-m", "{m}", "--rounds", "0"], 2, "--rounds"),
    ("bench new-tokens 0", ["bench", "-m", "{m}", "--new-tokens", "0"], 2, "--new-tokens"),
    ("bench prompt-tokens 0", ["bench", "-m", "{m}", "--prompt-tokens", "0"], 2, "--prompt-tokens"),
    ("bench engine bogus", ["bench", "-m", "{m}", "--engine", "onnx"], 2, "--engine"),
    ("finetune epochs 0", ["finetune", "classify", "--train", "{d}", "--base", "{m}", "--out", "{o}",
                           "--epochs", "0"], 2, "--epochs"),
    ("finetune lr -1", ["finetune", "classify", "--train", "{d}", "--base", "{m}", "--out", "{o}", "--lr", "-1"], 2,
     "--lr"),
    ("finetune batch-size 0", ["finetune", "tag", "--train", "{d}", "--base", "{m}", "--out", "{o}",
                               "--batch-size", "0"], 2, "--batch-size"),
    ("finetune max-length 0", ["finetune", "classify", "--train", "{d}", "--base", "{m}", "--out", "{o}",
                               "--max-length", "0"], 2, "--max-length"),
    # conflicting or missing options
    ("complete in-place and diff", ["complete", "{f}", "-m", "{m}", "--in-place", "--diff"], 2, "exclude"),
    ("complete json and in-place", ["complete", "{f}", "-m", "{m}", "--json", "--in-place"], 2, "--json"),
    ("complete in-place samples", ["complete", "{f}", "-m", "{m}", "--in-place", "-n", "2"], 2, "one completion"),
    ("complete in-place stdin", ["complete", "-", "-m", "{m}", "--in-place"], 2, "standard input"),
    ("infill prefix twice", ["infill", "--prefix", "a", "--prefix-file", "{f}", "-m", "{m}"], 2, "once"),
    ("infill both from stdin", ["infill", "--prefix-file", "-", "--suffix-file", "-", "-m", "{m}"], 2,
     "standard input"),
    ("infill nothing", ["infill", "-m", "{m}"], 2, "nothing to fill"),
    ("classify -0 vs lines", ["classify", "-0", "--input-format", "lines", "-m", "{c}"], 2, "contradicts"),
    ("tag -0 vs jsonl", ["tag", "-0", "--input-format", "jsonl", "-m", "{t}"], 2, "contradicts"),
    ("finetune nowhere to save", ["finetune", "classify", "--train", "{d}", "--base", "{m}"], 2, "--name"),
    ("complete missing file", ["complete", "-m", "{m}"], 2, "FILE"),
    ("complete unknown option", ["complete", "{f}", "--colour"], 2, "--colour"),
    ("models import missing name", ["models", "import", "{m}"], 2, "--name"),
    ("unknown command", ["completee", "{f}"], 2, "completee"),
]


@pytest.mark.parametrize("case", OPTION_CASES, ids=[case[0] for case in OPTION_CASES])
def test_bad_option(capsys, monkeypatch, isolated_home, models, work, case):
    _, template, expected_code, message = case
    values = {"f": work / "good.py", "m": models["lm"], "c": models["cls"], "t": models["tag"],
              "d": work / "train.jsonl", "o": work / "out"}
    args = [str(part).format(**values) for part in template]
    _check(capsys, monkeypatch, args, expected_code=expected_code, message=message, roots=[work],
           home=isolated_home, stdin=b"x = 1\n", out_path=work / "out")


# ---------------------------------------------------------------------------------------------
# standard input closed or empty

STDIN_COMMANDS = {
    "complete": (lambda m: ["complete", "-", "-m", m["lm"]], "standard input"),
    "generate": (lambda m: ["generate", "-m", m["lm"]], "standard input"),
    "infill": (lambda m: ["infill", "--prefix-file", "-", "-m", m["lm"]], "standard input"),
    "classify": (lambda m: ["classify", "-m", m["cls"]], "standard input"),
    "tag": (lambda m: ["tag", "-", "-m", m["tag"]], "standard input"),
    "repl": (lambda m: ["repl", "-m", m["lm"]], "standard input"),
}


@pytest.mark.parametrize("command", list(STDIN_COMMANDS))
def test_stdin_closed(capsys, monkeypatch, isolated_home, models, work, command):
    make_args, message = STDIN_COMMANDS[command]
    _check(capsys, monkeypatch, make_args(models), expected_code=1, message=message + "|closed", roots=[work],
           home=isolated_home, stdin=None)


@pytest.mark.parametrize("command", ["complete", "generate", "infill"])
def test_stdin_empty(capsys, monkeypatch, isolated_home, models, work, command):
    make_args, _ = STDIN_COMMANDS[command]
    _check(capsys, monkeypatch, make_args(models), expected_code=1, message="empty", roots=[work],
           home=isolated_home, stdin=b"  \n")


# ---------------------------------------------------------------------------------------------
# unreadable files (tests often run as root, whom chmod 000 does not stop: run the command without
# the capabilities that let root read anything, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH)


def _without_root_read_override() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: chmod 000 cannot stop root")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("command", ["complete", "infill", "classify", "finetune classify"])
def test_unreadable_file(models, tmp_path, command):
    secret = tmp_path / "secret.py"
    secret.write_text("password = 'hunter2'\n")
    secret.chmod(0)
    try:
        argv = {"complete": ["complete", secret, "-m", models["lm"]],
                "infill": ["infill", "--prefix-file", secret, "-m", models["lm"]],
                "classify": ["classify", secret, "-m", models["cls"]],
                "finetune classify": ["finetune", "classify", "--train", secret, "--base", models["lm"],
                                      "--out", tmp_path / "out"]}[command]
        proc = subprocess.run([*_without_root_read_override(), sys.executable, "-m", "bigcode_cli", *map(str, argv)],
                              capture_output=True, text=True, timeout=120)
        # finetune's --train is a typer Path: the parser itself finds it unreadable (a usage error)
        usage = command.startswith("finetune")
        err = assert_clean_failure(proc.returncode, proc.stdout, proc.stderr, expected_code=2 if usage else 1,
                                   pipeline=command in PIPELINE)
        assert ("not readable" if usage else "permission denied") in err.lower()
        assert not (tmp_path / "out").exists()
        assert secret.stat().st_mode & 0o777 == 0
    finally:
        secret.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# text that is not Unicode: an argument in bytes that are not UTF-8 reaches Python as lone surrogates

SURROGATE_CASES = {
    "generate": ["generate", "caf\udce9 = 1"],
    "infill prefix": ["infill", "--prefix", "x = '\udcff'", "--suffix", "\n"],
    "infill suffix": ["infill", "--prefix", "x = ", "--suffix", "\ud800"],
}


@pytest.mark.parametrize("case", list(SURROGATE_CASES))
def test_text_that_is_not_unicode(capsys, monkeypatch, isolated_home, models, work, case):
    args = [*SURROGATE_CASES[case], "-m", models["lm"], "--max-new-tokens", "8"]
    _check(capsys, monkeypatch, args, expected_code=1, message="not valid Unicode",
           roots=[work], home=isolated_home)


# ---------------------------------------------------------------------------------------------
# not errors: a huge file is completed from its truncated context


def test_five_megabyte_file_is_completed_from_its_truncated_context(capsys, monkeypatch, models, work):
    line = "def scale_{i}(x):\n    return x * {i}\n"
    parts, size, i = [], 0, 0
    while size < 5_000_000:
        parts.append(line.format(i=i))
        size += len(parts[-1])
        i += 1
    big = work / "big.py"
    big.write_text("".join(parts))
    before = _tree(work)
    code, out, err = _run(capsys, monkeypatch, ["complete", big, "-m", models["lm"], "--json", "-t", "0",
                                                "--max-new-tokens", "3"])
    assert code == 0, err
    record = json.loads(out)
    assert record["truncated"] is True and record["prompt"].endswith(parts[-1][-20:])
    assert "note:" in err and "context" in err and "Traceback" not in err
    assert _tree(work) == before


# ---------------------------------------------------------------------------------------------
# the battery covers every command


def test_every_command_is_in_the_battery():
    from typer.main import get_command

    from bigcode_cli.cli.app import app

    def leaves(command, prefix=()):
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            yield " ".join(prefix)
            return
        for name, sub in subcommands.items():
            yield from leaves(sub, (*prefix, name))

    covered = set(FILE_COMMANDS) | set(MODEL_COMMANDS) | set(BACKEND_COMMANDS) | set(STDIN_COMMANDS)
    covered |= {" ".join(case[1][:2]) if case[1][0] in ("models", "finetune") else case[1][0]
                for case in OPTION_CASES}
    covered |= {"models list", "models pull", "models rm"}  # below: no input file, model or backend of their own
    missing = sorted(set(leaves(get_command(app))) - covered)
    assert not missing, f"commands without bad-input cases: {missing}"


def test_models_pull_and_rm_refuse_bad_names(capsys, monkeypatch, isolated_home, work):
    for args, message in ((["models", "pull", "../escape"], "invalid model name"),
                          (["models", "pull", "owner/name", "--offline"], "offline"),
                          (["models", "rm", "never-pulled"], "never-pulled"),
                          (["models", "rm", "../../etc"], "invalid model name|not in")):
        _check(capsys, monkeypatch, args, expected_code=1, message=message, roots=[work], home=isolated_home)
