"""Shell completion: the committed scripts, what a TAB press offers, and that it never imports torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "safetensors")
CHOICES = {
    ("complete", "--attn"): ["auto", "eager", "sdpa", "flash"],
    ("generate", "--device"): ["auto", "cpu", "cuda", "mps"],
    ("infill", "--dtype"): ["auto", "float32", "bfloat16", "float16", "int8", "int4"],
    ("classify", "--format"): ["jsonl", "tsv", "table"],
    ("tag", "--engine"): ["native", "transformers"],
}


def _heavy_imports(importtime_log: str) -> list[str]:
    """Top-level heavy packages named in `python -X importtime` output."""
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in importtime_log.splitlines()
             if line.startswith("import time:")}
    return sorted(names & set(HEAVY))


def _complete_bash(words: str, **env: str) -> tuple[list[str], str]:
    """Ask `bigcode` for bash completions of `words` (the last word is the one being completed)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    environ = {**os.environ, "_BIGCODE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword),
               **env}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bigcode_cli"], env=environ,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return proc.stdout.split(), proc.stderr


@pytest.mark.parametrize("command, option", list(CHOICES))
def test_choices_are_offered_without_heavy_imports(command, option):
    offered, log = _complete_bash(f"bigcode {command} {option} ")
    assert offered == CHOICES[(command, option)]
    assert _heavy_imports(log) == []  # the contract; its speed is measured by benchmarks/cli_latency.py


def test_attn_completion_offers_every_backend_without_heavy_imports():
    offered, log = _complete_bash("bigcode complete --attn ")
    assert set(offered) == {"eager", "sdpa", "flash", "auto"}
    assert _heavy_imports(log) == []


def test_commands_and_options_are_offered():
    offered, _ = _complete_bash("bigcode ")
    assert {"complete", "generate", "infill", "classify", "tag", "repl", "models", "finetune"} <= set(offered)
    offered, _ = _complete_bash("bigcode models ")
    assert {"list", "pull", "rm", "info", "import", "verify", "path"} <= set(offered)
    offered, _ = _complete_bash("bigcode complete --at")
    assert offered == ["--attn"] or "--attn" in offered


def test_model_names_come_from_the_cache_and_aliases(tmp_path):
    from checkpoints import save_lm_with_tokenizer

    from bigcode_cli import store

    store.import_checkpoint(save_lm_with_tokenizer(tmp_path / "ckpt"), "my-tiny-lm")
    for words in ("bigcode complete --model ", "bigcode classify -m ", "bigcode models info ",
                  "bigcode finetune tag --base "):
        offered, log = _complete_bash(words)
        assert "my-tiny-lm" in offered and "santacoder" in offered and "starcoderbase-1b" in offered, words
        assert _heavy_imports(log) == []
    offered, _ = _complete_bash("bigcode complete -m star")
    assert offered and all(name.startswith("star") for name in offered)
    offered, _ = _complete_bash("bigcode complete -m ./")  # a path: left to the shell's file completion
    assert offered == []


def test_committed_scripts_are_fresh(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_completions.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ("bigcode.bash", "_bigcode", "bigcode.fish"):
        committed = ROOT / "completions" / name
        assert committed.is_file(), f"{committed} is missing: run python scripts/make_completions.py"
        assert committed.read_text() == (tmp_path / name).read_text(), (
            f"{committed} is stale: run python scripts/make_completions.py")
    assert (ROOT / "completions" / "_bigcode").read_text().startswith("#compdef bigcode\n")


@pytest.mark.parametrize("shell, name", [("bash", "bigcode.bash"), ("zsh", "_bigcode"), ("fish", "bigcode.fish")])
def test_scripts_match_show_completion(shell, name):
    # with detection off, Typer takes the shell as the option's value instead of asking shellingham
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = subprocess.run([sys.executable, "-m", "bigcode_cli", "--show-completion", shell], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    committed = (ROOT / "completions" / name).read_text()
    # the committed file is Typer's script plus our header (and, for zsh, the autoload-or-source ending)
    shown = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    ours = [line for line in committed.splitlines() if line.strip() and not line.startswith("# Generated")]
    common = shown[:-1] if shell == "zsh" else shown
    assert ours[:len(common)] == common


@pytest.mark.skipif(not Path("/bin/bash").exists() and not Path("/usr/bin/bash").exists(), reason="needs bash")
def test_bash_script_completes_in_a_real_bash():
    script = ROOT / "completions" / "bigcode.bash"
    program = (f"source {script}; COMP_WORDS=(bigcode complete --attn ''); COMP_CWORD=3; "
               "_bigcode_completion bigcode; printf '%s\\n' \"${COMPREPLY[@]}\"")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    if not (Path(bindir) / "bigcode").exists():
        pytest.skip("the bigcode console script is not installed next to this python")
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["auto", "eager", "sdpa", "flash"]


def test_install_completion_writes_the_script(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = subprocess.run([sys.executable, "-m", "bigcode_cli", "--install-completion", "bash"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    installed = tmp_path / ".bash_completions" / "bigcode.sh"
    assert installed.is_file() and "_BIGCODE_COMPLETE=complete_bash" in installed.read_text()
    assert re.search(r"source .*bigcode\.sh", (tmp_path / ".bashrc").read_text())
