"""Ctrl-C while torch is being imported is held back and delivered after the import; one a library
swallowed or turned into another error still ends the loading step as a KeyboardInterrupt.

Each case runs in a fresh interpreter, so the SIGINT handler under test never touches pytest's. The last
ones send a real SIGINT or SIGTERM to `bigcode` in the middle of loading a model (bounded in time).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent("""
        import os, signal, sys, time, types
        from bigcode_cli import interrupts
        interrupts.install()
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_a_ctrl_c_during_the_torch_import_waits_for_the_import_to_finish():
    done = _run("""
        fake = types.ModuleType("torch")
        fake.__spec__ = types.SimpleNamespace(_initializing=True)
        sys.modules["torch"] = fake          # torch, half imported
        os.kill(os.getpid(), signal.SIGINT)  # not raised while the import runs
        time.sleep(0.3)
        print("import went on", flush=True)
        fake.__spec__._initializing = False  # the import is done: now the interrupt arrives
        try:
            time.sleep(5)
        except KeyboardInterrupt:
            print("interrupted after the import", flush=True)
            sys.exit(130)
        print("the interrupt was lost")
    """)
    assert done.stdout.splitlines() == ["import went on", "interrupted after the import"], done.stderr
    assert done.returncode == 130


def test_a_ctrl_c_elsewhere_raises_at_once():
    done = _run("""
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    assert done.returncode == 130, done.stderr


def test_a_swallowed_or_mangled_ctrl_c_still_ends_the_step():
    done = _run("""
        outcomes = []
        for mangle in (False, True):
            try:
                with interrupts.surfacing():
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(5)
                    except KeyboardInterrupt:
                        if mangle:
                            raise ImportError("cannot load module more than once per process")
                        # swallowed, as a library's "Exception ignored in ..." does
                outcomes.append("the step went on")
            except KeyboardInterrupt:
                outcomes.append("interrupt")
        print(outcomes)
        with interrupts.surfacing():
            pass  # no Ctrl-C: nothing raised
        try:
            with interrupts.surfacing():
                raise ImportError("a real error")
        except ImportError as exc:
            print(exc)
    """)
    assert done.stdout.splitlines() == ["['interrupt', 'interrupt']", "a real error"], done.stderr


# -- a real signal while a real model loads -------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_lm(tmp_path_factory):
    """A 340 MB checkpoint (zeros: written in a second or two) whose int8 load takes seconds: a signal can land
    in the middle of it."""
    import shutil

    import torch
    from safetensors.torch import save_file
    from tokenizer_files import STARCODER_SPECIALS, save_tokenizer
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    directory = tmp_path_factory.mktemp("slow_lm")
    config = GPTBigCodeConfig(n_embd=1024, n_layer=8, n_head=16, vocab_size=360, n_positions=128,
                              pad_token_id=None, bos_token_id=1, eos_token_id=2)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in GPTBigCodeForCausalLM(config).state_dict().items() if k != "lm_head.weight"}
    save_file({k: torch.zeros(shape) for k, shape in shapes.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    config.save_pretrained(str(directory))
    save_tokenizer(directory, STARCODER_SPECIALS)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _bytes_read(pid: int) -> int:
    for line in open(f"/proc/{pid}/io").read().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _signal_during_load(slow_lm, sig: signal.Signals, *args: str) -> tuple[int | None, str]:
    """Start `bigcode ARGS... -m slow_lm --dtype int8`, send `sig` once a fifth of the weights were read."""
    from cli_process import command

    proc = subprocess.Popen(command(*args, "-m", slow_lm, "--dtype", "int8"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _bytes_read(proc.pid) < (slow_lm / "model.safetensors").stat().st_size // 5:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_server_stopped_while_loading_exits_0_cleanly(slow_lm, sig):
    code, err = _signal_during_load(slow_lm, sig, "serve", "--port", "0")
    assert "terminate called" not in err and "Traceback" not in err
    assert code == 0, err
    assert err.endswith("loading the model\nstopped\n"), err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_command_stopped_while_loading_exits_130_cleanly(slow_lm, sig):
    code, err = _signal_during_load(slow_lm, sig, "generate", "import os", "--max-new-tokens", "1")
    assert "terminate called" not in err and "Traceback" not in err
    assert code == 130, err
