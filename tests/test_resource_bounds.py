"""What the CLI will not let a request or a checkpoint make it do: unbounded samples, a config that describes
a model far bigger than its weights. Each ends in one line, before anything big is allocated.

The checkpoint cases run in a child process with a memory limit and a timeout, so that a regression fails
the test instead of filling the shared machine's memory.
"""

from __future__ import annotations

import json
import resource
import subprocess

import pytest
from checkpoints import save_checkpoint, save_lm_with_tokenizer
from cli_process import command

from bigcode_cli.cli.app import run
from bigcode_cli.generation.completion import MAX_SAMPLES

MEMORY_LIMIT = 6 * 1024**3


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "ckpt")


def _bounded(*args: object, limit_s: float = 90) -> subprocess.CompletedProcess[str]:
    """`bigcode ARGS...` in a child process that may use at most MEMORY_LIMIT of memory and limit_s seconds."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(command(*args), capture_output=True, text=True, timeout=limit_s, preexec_fn=limit_memory)


@pytest.mark.parametrize("argv", [
    ["generate", "import os", "--max-new-tokens", "3"],
    ["complete", "{file}", "--max-new-tokens", "3"],
    ["infill", "--prefix", "def f(", "--suffix", "):", "--max-new-tokens", "3"],
])
def test_num_samples_is_bounded_with_the_reason(capsys, lm, tmp_path, argv):
    source = tmp_path / "a.py"
    source.write_text("import os\n")
    argv = [a.replace("{file}", str(source)) for a in argv]
    assert run([*argv, "-m", str(lm), "-n", str(MAX_SAMPLES + 1)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"error: --num-samples is at most {MAX_SAMPLES}, got {MAX_SAMPLES + 1}: every sample is one more "
                   "row of the batch, with its own cache and logits in memory; run again for more samples\n")
    assert run([*argv, "-m", str(lm), "-n", str(MAX_SAMPLES), "--seed", "0"]) == 0


def test_the_issues_hundred_thousand_samples_end_in_one_line(lm):
    done = _bounded("generate", "import os", "-m", lm, "-n", "100000", "--max-new-tokens", "3")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: --num-samples is at most {MAX_SAMPLES}, got 100000: ")
    assert len(done.stderr.splitlines()) == 1


def _edit_config(directory, **fields) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("engine", ["native", "transformers"])
def test_a_config_with_a_billion_layers_over_two_is_refused_before_anything_is_built(lm, tmp_path, engine):
    directory = save_lm_with_tokenizer(tmp_path / "lm")
    _edit_config(directory, n_layer=10**9)
    done = _bounded("generate", "import os", "-m", directory, "--engine", engine, "--max-new-tokens", "3")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"error: {directory} does not match its config: config.json says n_layer 1000000000, "
                           "the weights hold 2 layers\n")


@pytest.mark.parametrize("field, value, tensor", [
    ("n_positions", 10**9, "transformer.wpe.weight"),
    ("vocab_size", 10**8, "transformer.wte.weight"),
    ("n_inner", 10**9, "transformer.h.0.mlp.c_fc."),
])
def test_a_config_whose_shapes_are_not_the_weights_is_refused_naming_the_tensor(tmp_path, field, value, tensor):
    directory = save_checkpoint(tmp_path / "lm")
    _edit_config(directory, **{field: value})
    done = _bounded("models", "info", directory)  # loads nothing: it must still work
    assert done.returncode == 0, done.stderr
    from bigcode_cli.errors import CheckpointError
    from bigcode_cli.model import engine

    with pytest.raises(CheckpointError) as refused:
        engine.load(directory, "causal-lm", dtype="float32", device="cpu")
    assert str(refused.value).startswith(f"{directory} does not match its config: {tensor}")
    assert "config.json says (" in str(refused.value)


def test_layers_numbered_with_a_gap_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from bigcode_cli.errors import CheckpointError
    from bigcode_cli.model import engine

    directory = save_checkpoint(tmp_path / "lm", n_layer=2)
    weights = directory / "model.safetensors"
    tensors = {k.replace(".h.1.", ".h.7."): v for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"its layers are numbered 0, 7, not 0 to 1$"):
        engine.load(directory, "causal-lm", dtype="float32", device="cpu")


def test_models_import_says_what_it_waits_for_and_gives_up_in_one_line(capsys, tmp_path, monkeypatch):
    import sys

    from bigcode_cli.store import locking
    from bigcode_cli.store.layout import entry_key
    from bigcode_cli.store.resolution import name_parts
    from bigcode_cli.store.writing import entry_lock_file

    directory = save_checkpoint(tmp_path / "lm")
    lock = entry_lock_file(entry_key(name_parts("team/model")), None)
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from filelock import FileLock; held = FileLock({str(lock)!r}); held.acquire(); "
                               "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(locking, "WAIT_S", 1.5)
        assert run(["models", "import", str(directory), "--name", "team/model"]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err.splitlines() == [
            f"note: waiting for another bigcode process that is writing or removing team/model (it holds {lock}); "
            "giving up after 2 s",
            f"error: gave up after 2 s waiting for another bigcode process to finish with team/model (it holds "
            f"{lock}); try again once it is done",
        ]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert run(["models", "import", str(directory), "--name", "team/model"]) == 0  # the lock is free again
    assert capsys.readouterr().err.startswith(f"note: imported {directory} as team/model")
