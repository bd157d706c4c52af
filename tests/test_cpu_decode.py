"""The C decode kernel (bigcode_cli/kernels/decode_step.c) against transformers itself, step by step.

Each case prefills the same prompt in both engines, then feeds the same tokens one at a time: every
step's logits must agree, whatever path our engine took for the prefill (PyTorch) and the steps (kernel).
Every model is loaded on the CPU, the only device the kernel serves, also where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli.model import engine
from bigcode_cli.kernels import build as kernel_build
from bigcode_cli.kernels.cpu_decode import MAX_ROWS
from bigcode_cli.paths import kernels_dir

pytestmark = pytest.mark.skipif(kernel_build.find_compiler() is None, reason="no C compiler to build the kernel")

FP32_TOL = 1e-4
CASES = {
    "mqa": dict(multi_query=True),
    "mha": dict(multi_query=False),
    # n_embd 40 with 4 heads: rows and heads of 40 and 10 values exercise every non-vector tail
    "mqa-odd-gelu": dict(multi_query=True, n_embd=40, activation_function="gelu"),
    "mha-odd-relu-unscaled": dict(multi_query=False, n_embd=40, activation_function="relu", scale_attn_weights=False),
    "mqa-noscale-untied-silu": dict(multi_query=True, scale_softmax=False, tie=False, activation_function="silu"),
    # multi-query attention puts the heads across vector lanes and sums values in tiles of 3 heads by 4
    # vectors: 7 heads of 72 take whole tiles, a lone head, a lone vector and (AVX-512) scalar dimensions;
    # 17 heads need three vectors of heads on AVX2 (a pair, then one alone)
    "mqa-7-heads-of-72": dict(multi_query=True, n_head=7, n_embd=504),
    "mqa-17-heads": dict(multi_query=True, n_head=17, n_embd=136),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernel")
    return {name: save_checkpoint(root / name, n_layer=3, **kwargs) for name, kwargs in CASES.items()}


def _ids(rows: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 97, (rows, length), generator=torch.Generator().manual_seed(seed))


def _step_logits(runner, prompt: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Logits (B, n_steps, V) of each one-token step after a prefill of `prompt`."""
    with torch.inference_mode():
        cache = runner.new_cache(prompt.shape[0], prompt.shape[1] + steps.shape[1])
        runner(prompt, cache=cache)
        return torch.cat([runner(steps[:, i : i + 1], cache=cache)[:, -1:].float() for i in range(steps.shape[1])], 1)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rows", [1, 3])
def test_kernel_steps_equal_transformers_fp32(checkpoints, case, rows):
    ours = engine.load(checkpoints[case], "causal-lm", dtype="float32", device="cpu")
    assert ours.decode_path == "kernel"
    ref = engine.load(checkpoints[case], "causal-lm", engine="transformers", attn="eager", dtype="float32", device="cpu")
    prompt, steps = _ids(rows, 9, seed=1), _ids(rows, 6, seed=2)
    got, expected = _step_logits(ours, prompt, steps), _step_logits(ref, prompt, steps)
    assert (got - expected).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("case", ["mqa", "mha", "mqa-odd-gelu", "mqa-7-heads-of-72"])
def test_kernel_bf16_error_is_within_transformers_own_bf16_error(checkpoints, case):
    path = checkpoints[case]
    prompt, steps = _ids(2, 9, seed=3), _ids(2, 6, seed=4)
    exact = _step_logits(engine.load(path, "causal-lm", engine="transformers", attn="eager", dtype="float32", device="cpu"),
                         prompt, steps)
    theirs = _step_logits(engine.load(path, "causal-lm", engine="transformers", attn="eager", dtype="bfloat16", device="cpu"),
                          prompt, steps)
    ours_runner = engine.load(path, "causal-lm", dtype="bfloat16", device="cpu")
    assert ours_runner.decode_path == "kernel"
    ours = _step_logits(ours_runner, prompt, steps)
    # the kernel keeps activations in fp32 and rounds only weights, cache and matmul inputs to bf16
    assert (ours - exact).abs().max().item() <= 1.5 * (theirs - exact).abs().max().item() + 1e-3


def test_kernel_writes_the_same_cache_as_pytorch(checkpoints):
    kernel = engine.load(checkpoints["mha"], "causal-lm", dtype="float32", device="cpu")
    torch_path = engine.load(checkpoints["mha"], "causal-lm", dtype="float32", device="cpu")
    torch_path.decoder = None
    prompt, steps = _ids(2, 5, seed=5), _ids(2, 4, seed=6)
    caches = []
    with torch.inference_mode():
        for runner in (kernel, torch_path):
            cache = runner.new_cache(2, 12)
            runner(prompt, cache=cache)
            for i in range(steps.shape[1]):
                runner(steps[:, i : i + 1], cache=cache)
            assert cache.length == 9
            caches.append(cache)
    for a, b in zip(*(c.layers for c in caches)):
        assert (a[:, :9] - b[:, :9]).abs().max().item() <= FP32_TOL


def test_kernel_serves_sampled_rows_and_dropped_rows(checkpoints):
    """repeat_batch then select (samples finishing) keeps each remaining row's own history."""
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    ref = engine.load(checkpoints["mqa"], "causal-lm", engine="transformers", attn="eager", dtype="float32", device="cpu")
    prompt = _ids(1, 7, seed=7)
    with torch.inference_mode():
        results = []
        for r in (runner, ref):
            cache = r.new_cache(1, 12)
            r(prompt, cache=cache)
            cache = cache.repeat_batch(3)
            r(torch.tensor([[5], [6], [7]]), cache=cache)
            cache = cache.select(torch.tensor([0, 2]))
            results.append(r(torch.tensor([[8], [9]]), cache=cache)[:, -1].float())
    assert (results[0] - results[1]).abs().max().item() <= FP32_TOL


def test_more_rows_than_the_kernel_takes_fall_back_to_pytorch(checkpoints):
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    rows = MAX_ROWS + 1
    ids = _ids(rows, 4, seed=8)
    with torch.inference_mode():
        cache = runner.new_cache(rows, 5)
        runner(ids, cache=cache)
        assert not runner.decoder.can_run(ids[:, :1], None, cache)
        step = runner(ids[:, :1], cache=cache)[:, -1]
        full = runner(torch.cat([ids, ids[:, :1]], 1))[:, -1]
    assert (step - full).abs().max().item() <= FP32_TOL


def test_turned_off_by_environment(checkpoints, monkeypatch):
    monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    assert runner.decode_path == "torch"
    assert "BIGCODE_CPU_KERNEL" in kernel_build.kernel_problem("decode_step")


def test_a_failing_compiler_leaves_pytorch_in_charge(checkpoints, tmp_path, monkeypatch):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'cc: fatal error: no input files' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    monkeypatch.setenv("BIGCODE_KERNEL_DIR", str(tmp_path / "kernels"))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    monkeypatch.setattr(kernel_build, "_problems", {})
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    assert runner.decode_path == "torch"
    assert "broken-cc failed" in kernel_build.kernel_problem("decode_step")
    assert not any((tmp_path / "kernels").rglob("*.so"))  # no half-written library left behind
    ids = _ids(1, 5, seed=9)
    with torch.inference_mode():
        cache = runner.new_cache(1, 6)
        runner(ids[:, :4], cache=cache)
        assert (runner(ids[:, 4:], cache=cache)[:, -1] - runner(ids)[:, -1]).abs().max().item() <= FP32_TOL


def test_the_library_is_built_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("BIGCODE_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    assert kernel_build.load_kernel("decode_step") is not None
    built = list(kernels_dir().glob("decode_step-*"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(kernel_build, "_loaded", {})
    assert kernel_build.load_kernel("decode_step") is not None
    assert built[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("shape", [dict(multi_query=True), dict(multi_query=False),
                                   dict(multi_query=True, n_head=7, n_embd=504)], ids=["mqa", "mha", "mqa-wide"])
def test_long_contexts_split_over_position_blocks_equal_transformers(tmp_path, shape):
    """Past 1,024 cached positions attention runs in several blocks whose partial softmaxes are merged."""
    path = save_checkpoint(tmp_path / "long", n_layer=2, n_positions=1100, **shape)
    ours = engine.load(path, "causal-lm", dtype="float32", device="cpu")
    ref = engine.load(path, "causal-lm", engine="transformers", attn="eager", dtype="float32", device="cpu")
    prompt, steps = _ids(2, 1030, seed=10), _ids(2, 4, seed=11)
    got, expected = _step_logits(ours, prompt, steps), _step_logits(ref, prompt, steps)
    assert (got - expected).abs().max().item() <= FP32_TOL


def test_a_token_outside_the_vocabulary_is_refused(checkpoints):
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    with torch.inference_mode():
        cache = runner.new_cache(1, 4)
        runner(_ids(1, 2, seed=12), cache=cache)
        with pytest.raises(IndexError, match="vocabulary"):
            runner(torch.tensor([[97]]), cache=cache)
        assert cache.length == 2  # nothing was written


def test_steps_from_two_threads_at_once_give_each_its_own_result(checkpoints):
    import threading

    runner = engine.load(checkpoints["mha"], "causal-lm", dtype="float32", device="cpu")
    prompts = [_ids(1, 6, seed=13), _ids(1, 6, seed=14)]
    steps = _ids(1, 30, seed=15)
    alone = [_step_logits(runner, p, steps) for p in prompts]
    together: list[torch.Tensor | None] = [None, None]

    def work(i: int) -> None:
        together[i] = _step_logits(runner, prompts[i], steps)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        assert torch.equal(a, b)


def test_a_damaged_cached_library_is_rebuilt(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("BIGCODE_KERNEL_DIR", str(tmp_path))
    load = "from bigcode_cli.kernels import build; print(build.load_kernel('decode_step') is not None)"
    # a fresh process each time: this one may already hold the library open under the same name
    assert subprocess.run([sys.executable, "-c", load], capture_output=True, text=True).stdout.strip() == "True"
    built = next(kernels_dir().glob("decode_step-*"))
    built.write_bytes(b"not a shared library")
    assert subprocess.run([sys.executable, "-c", load], capture_output=True, text=True).stdout.strip() == "True"
    assert built.read_bytes() != b"not a shared library"


def test_the_portable_build_gives_the_same_steps(checkpoints, tmp_path, monkeypatch):
    """Without -march=native (a CPU whose features cannot be read) the kernel is built from the plain vector
    code: same numbers as transformers in fp32, and in bf16 the same numbers as the native build."""
    prompt, steps = _ids(2, 9, seed=16), _ids(2, 5, seed=17)
    native = {dtype: _step_logits(engine.load(checkpoints["mqa-odd-gelu"], "causal-lm", dtype=dtype, device="cpu"),
                                  prompt, steps) for dtype in ("float32", "bfloat16")}
    monkeypatch.setenv("BIGCODE_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    monkeypatch.setattr(kernel_build, "_cpu_features", lambda: None)
    ref = engine.load(checkpoints["mqa-odd-gelu"], "causal-lm", engine="transformers", attn="eager", dtype="float32",
                      device="cpu")
    for dtype in ("float32", "bfloat16"):
        runner = engine.load(checkpoints["mqa-odd-gelu"], "causal-lm", dtype=dtype, device="cpu")
        assert runner.decode_path == "kernel"
        portable = _step_logits(runner, prompt, steps)
        if dtype == "float32":
            assert (portable - _step_logits(ref, prompt, steps)).abs().max().item() <= FP32_TOL
        assert (portable - native[dtype]).abs().max().item() <= 1e-4
    assert len(list(kernels_dir().glob("decode_step-*"))) == 1
