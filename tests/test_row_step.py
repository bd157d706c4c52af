"""Runner.step: R rows, each with its own cache, position and 1..k new tokens, in one pass of the C kernel.

Each row's prompt is prefilled into its own one-row cache (PyTorch), then one step gives every row its new
tokens. The logits must equal transformers' forward over the row's whole sequence at the same positions,
and a row's logits must be bit for bit the same alone as among other rows (batch invariance).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoints import save_checkpoint
from kernel_builds import params as build_params
from kernel_builds import use_build
from quant_reference import assert_matches_reference, use_reference_linears

from bigcode_cli.kernels import build as kernel_build
from bigcode_cli.model import engine
from bigcode_cli.model.runner import RowTokens
from bigcode_cli.paths import kernels_dir

pytestmark = pytest.mark.skipif(kernel_build.find_compiler() is None, reason="no C compiler to build the kernel")

FP32_TOL = 1e-4
CASES = {
    "mqa": dict(multi_query=True),
    "mha": dict(multi_query=False),
    # rows of 40 and heads of 10 values: products of whole vectors after their runs, heads of non-vector size
    "mqa-odd": dict(multi_query=True, n_embd=40, activation_function="gelu"),
    "mha-odd": dict(multi_query=False, n_embd=40, tie=False),
    # 7 heads of 72 and wide rows: whole register tiles of rows and of heads, 2 blocks of 32 per product row
    "mqa-7-heads-of-72": dict(multi_query=True, n_head=7, n_embd=504),
    # heads of 64: a bf16 cache takes the pair products of attend_bf16.h where the CPU has AVX-512 BF16
    "mqa-heads-of-64": dict(multi_query=True, n_head=4, n_embd=256),
    # rows of 36 values: a product's vector runs, then values one at a time (and heads of 9)
    "mha-36": dict(multi_query=False, n_head=4, n_embd=36),
}
# (prompt length, new tokens) of each row: odd row counts, 1..3 tokens, every row at its own position
SHAPES = {
    1: [(5, 1)],
    3: [(9, 2), (3, 1), (6, 3)],
    5: [(4, 3), (11, 1), (2, 2), (7, 1), (2, 3)],  # prompts of 2+: one token would be prefilled by the kernel
    # a whole tile of rows and an odd tail, 1..4 new tokens (a speculative step's drafts)
    7: [(3, 4), (10, 1), (5, 2), (2, 3), (8, 1), (4, 4), (6, 2)],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("rows")
    return {name: save_checkpoint(root / name, n_layer=3, **kwargs) for name, kwargs in CASES.items()}


def _sequences(shape: list[tuple[int, int]], seed: int) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(3, 97, (p,), generator=g).tolist(), torch.randint(3, 97, (k,), generator=g).tolist())
            for p, k in shape]


def _prefilled(runner, prompt: list[int], capacity: int):
    cache = runner.new_cache(1, capacity)
    with torch.inference_mode():
        runner(torch.tensor([prompt]), cache=cache)
    return cache


def _step(runner, sequences, last_only=False, before_step=None) -> torch.Tensor:
    """Logits of one Runner.step over the rows, each prefilled alone first: (sum k, V), or (R, V)."""
    caches = [_prefilled(runner, prompt, len(prompt) + len(new) + 2) for prompt, new in sequences]
    if before_step is not None:
        before_step(runner)
    with torch.inference_mode():
        logits = runner.step([RowTokens(c, new) for c, (_, new) in zip(caches, sequences)], last_only=last_only)
    for cache, (prompt, new) in zip(caches, sequences):
        assert cache.length == len(prompt) + len(new)
    return logits


def _transformers(path: Path, sequences, dtype: str = "float32") -> torch.Tensor:
    """transformers' forward over each row's whole sequence: the logits of its new tokens, rows one after another."""
    ref = engine.load(path, "causal-lm", engine="transformers", attn="eager", dtype=dtype, device="cpu")
    with torch.inference_mode():
        return torch.cat([ref(torch.tensor([prompt + new]))[0, -len(new) :].float() for prompt, new in sequences])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rows", list(SHAPES))
def test_a_step_of_rows_equals_transformers_fp32(checkpoints, case, rows):
    runner = engine.load(checkpoints[case], "causal-lm", dtype="float32", device="cpu")
    assert runner.decode_path == "kernel"
    sequences = _sequences(SHAPES[rows], seed=rows)
    got = _step(runner, sequences)
    assert got.shape == (sum(len(new) for _, new in sequences), 97)
    assert (got - _transformers(checkpoints[case], sequences)).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("rows", [5, 7])
@pytest.mark.parametrize("case", ["mqa", "mha-odd", "mqa-7-heads-of-72", "mqa-heads-of-64", "mha-36"])
def test_a_step_of_rows_in_bf16_is_within_transformers_own_bf16_error(checkpoints, case, rows):
    sequences = _sequences(SHAPES[rows], seed=7)
    exact = _transformers(checkpoints[case], sequences)
    theirs = _transformers(checkpoints[case], sequences, dtype="bfloat16")
    runner = engine.load(checkpoints[case], "causal-lm", dtype="bfloat16", device="cpu")
    assert runner.decode_path == "kernel"
    ours = _step(runner, sequences)
    assert (ours - exact).abs().max().item() <= 1.5 * (theirs - exact).abs().max().item() + 1e-3


@pytest.mark.parametrize("rows", [5, 7])
@pytest.mark.parametrize("case", ["mqa", "mha", "mqa-odd", "mqa-heads-of-64"])
@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_a_quantized_step_of_rows_equals_the_dequantized_reference(checkpoints, case, dtype, rows):
    """The matrices' math, with float32 caches on both sides (a bf16 cache's attention is checked below)."""
    sequences = _sequences(SHAPES[rows], seed=11)
    runner = _with_float32_cache(engine.load(checkpoints[case], "causal-lm", dtype=dtype, device="cpu"))
    assert runner.decode_path == "kernel"
    got = _step(runner, sequences)
    reference = engine.load(checkpoints[case], "causal-lm", dtype=dtype, device="cpu")
    # PyTorch, with the kernel's quantized math in float64 for the step
    reference.decoder, reference.cache_dtype = None, None
    expected = _step(reference, sequences, before_step=use_reference_linears)
    assert_matches_reference(got, expected)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
@pytest.mark.parametrize("case", ["mqa", "mha-odd", "mqa-7-heads-of-72", "mqa-heads-of-64", "mha-36"])
def test_a_rows_logits_are_the_same_bits_alone_and_among_others(checkpoints, case, dtype):
    """Batch invariance: other rows (more, fewer, longer, at other positions) change nothing in a row."""
    runner = engine.load(checkpoints[case], "causal-lm", dtype=dtype, device="cpu")
    assert runner.decode_path == "kernel"
    crowd = _sequences(SHAPES[5] + [(8, 2), (3, 3), (12, 1), (5, 2)], seed=13)  # 9 rows, 18 tokens
    together = _step(runner, crowd)
    starts = [0, *torch.tensor([len(new) for _, new in crowd]).cumsum(0).tolist()]
    mine = [together[starts[i] : starts[i + 1]] for i in range(len(crowd))]  # each row's logits in the crowd
    for sequence, logits in zip(crowd, mine):
        assert torch.equal(_step(runner, [sequence]), logits)
    assert torch.equal(_step(runner, [crowd[6], crowd[2]]), torch.cat([mine[6], mine[2]]))


def test_last_only_gives_each_rows_last_token(checkpoints):
    runner = engine.load(checkpoints["mha"], "causal-lm", dtype="float32", device="cpu")
    sequences = _sequences(SHAPES[3], seed=17)
    every = _step(runner, sequences)
    last = _step(runner, sequences, last_only=True)
    ends = torch.tensor([len(new) for _, new in sequences]).cumsum(0) - 1
    assert torch.equal(last, every[ends])


def test_new_tokens_across_attention_blocks_equal_transformers(tmp_path):
    """Rows past 1,024 cached positions, whose new tokens straddle a block boundary of the kernel's attention (blocks
    of 1,024; of 256 and 128 before)."""
    path = save_checkpoint(tmp_path / "long", n_layer=2, n_positions=1100, multi_query=False)
    runner = engine.load(path, "causal-lm", dtype="float32", device="cpu")
    sequences = _sequences([(127, 3), (1060, 2), (40, 1), (1022, 5)], seed=19)
    assert (_step(runner, sequences) - _transformers(path, sequences)).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_bf16_caches_across_attention_blocks_are_within_transformers_own_bf16_error(tmp_path, dtype):
    """A bf16 cache (a bf16 model's; a quantized model's where the kernel decodes) past 1,024 positions, heads of 64:
    several blocks, new tokens straddling a boundary, blocks with an odd number of positions (the pair products
    of attend_bf16.h pad the last pair); the error against float32 transformers stays within bf16's own."""
    path = save_checkpoint(tmp_path / "long", n_layer=2, n_positions=1100, multi_query=True, n_head=4, n_embd=256)
    runner = engine.load(path, "causal-lm", dtype=dtype, device="cpu")
    assert runner.decode_path == "kernel"
    if runner.new_cache(1, 4).layers[0].dtype != torch.bfloat16:
        assert dtype == "int8"
        pytest.skip("a quantized model keeps a float32 cache where the kernel has no bf16 pair products")
    sequences = _sequences([(127, 3), (1060, 2), (40, 1), (1023, 4)], seed=31)
    exact = _transformers(path, sequences)
    theirs = _transformers(path, sequences, dtype="bfloat16")
    ours = _step(runner, sequences)
    if dtype == "int8":  # its matrices' rounding comes on top: against our own int8 model with a float32 cache
        exact = _step(_with_float32_cache(engine.load(path, "causal-lm", dtype=dtype, device="cpu")), sequences)
    assert (ours - exact).abs().max().item() <= 1.5 * (theirs - _transformers(path, sequences)).abs().max().item() + 1e-3


def _with_float32_cache(runner):
    """The runner with float32 caches, its kernel reading them so."""
    from bigcode_cli.kernels.cpu_decode import attach

    runner.cache_dtype, runner.decoder = None, attach(runner.model)
    return runner


def test_quantized_models_keep_bf16_caches_only_where_the_kernel_multiplies_bf16_pairs(checkpoints, monkeypatch):
    def cache_dtype(case, dtype="int4"):
        runner = engine.load(checkpoints[case], "causal-lm", dtype=dtype, device="cpu")
        return runner.decode_path, runner.new_cache(1, 4).layers[0].dtype

    from bigcode_cli.kernels.cpu_decode import bf16_cache_pays

    pairs = bf16_cache_pays(engine.load(checkpoints["mqa-heads-of-64"], "causal-lm", dtype="float32", device="cpu").model)
    assert cache_dtype("mqa-heads-of-64") == ("kernel", torch.bfloat16 if pairs else torch.float32)
    assert cache_dtype("mqa-heads-of-64", "float32") == ("kernel", torch.float32)
    assert cache_dtype("mqa") == ("kernel", torch.float32)  # heads of 8: the kernel would widen bf16, slower
    assert cache_dtype("mha") == ("kernel", torch.float32)
    monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")  # PyTorch decodes: nothing gained by converting the cache each step
    assert cache_dtype("mqa-heads-of-64") == ("torch", torch.float32)


def test_a_bad_row_is_refused_before_anything_is_written(checkpoints):
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    good, full = _prefilled(runner, [5, 6, 7], 5), _prefilled(runner, [5, 6, 7], 4)
    before = [layer.clone() for layer in good.layers]
    with torch.inference_mode():
        with pytest.raises(IndexError, match="past its cache"):  # two tokens into one free position
            runner.step([RowTokens(good, [8]), RowTokens(full, [8, 9])])
        with pytest.raises(IndexError, match="vocabulary"):
            runner.step([RowTokens(good, [8]), RowTokens(full, [97])])
        with pytest.raises(ValueError, match="at least one new token"):
            runner.step([RowTokens(good, [8]), RowTokens(full, [])])
        with pytest.raises(ValueError, match="refused"):  # one cache given to two rows
            runner.step([RowTokens(good, [8]), RowTokens(good, [9])])
    assert good.length == 3 and full.length == 3
    # compared as bits: the unwritten positions of a fresh cache may hold NaN patterns
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(before, good.layers))


def test_pytorch_reads_a_cache_narrower_than_its_activations(checkpoints, monkeypatch):
    """A float32 model over a bf16 cache in PyTorch (a quantized model's prefill, and its steps wherever the
    kernel refuses one): the cache is written rounded and read back widened, on any CPU."""
    monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    runner = engine.load(checkpoints["mqa-heads-of-64"], "causal-lm", dtype="float32", device="cpu")
    runner.cache_dtype = torch.bfloat16
    sequences = _sequences(SHAPES[3], seed=37)
    got = _step(runner, sequences)
    exact = _transformers(checkpoints["mqa-heads-of-64"], sequences)
    theirs = _transformers(checkpoints["mqa-heads-of-64"], sequences, dtype="bfloat16")
    assert 0 < (got - exact).abs().max().item() <= (theirs - exact).abs().max().item()  # rounded, less than bf16


def test_without_the_kernel_a_step_is_pytorch_doing_the_same(checkpoints, monkeypatch):
    sequences = _sequences(SHAPES[3], seed=23)
    monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    runner = engine.load(checkpoints["mha-odd"], "causal-lm", dtype="float32", device="cpu")
    assert runner.decode_path == "torch"
    expected = _transformers(checkpoints["mha-odd"], sequences)
    assert (_step(runner, sequences) - expected).abs().max().item() <= FP32_TOL
    # the rows of one split cache at one position run as one batched forward
    prompt = sequences[0][0]
    rows = _prefilled(runner, prompt, len(prompt) + 1).split(3)
    with torch.inference_mode():
        batched = runner.step([RowTokens(c, [t]) for c, t in zip(rows, [4, 5, 6])])
    assert all(c.length == len(prompt) + 1 for c in rows)
    alone = _transformers(checkpoints["mha-odd"], [(prompt, [t]) for t in [4, 5, 6]])
    assert (batched - alone).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("build", build_params())
def test_every_build_steps_rows_like_transformers_and_alike_in_any_company(checkpoints, tmp_path, monkeypatch, build):
    """Other builds of the same step: fp32 as transformers, the other formats as this CPU's own build (checked
    against their references above), and every row alike alone and among others."""
    sequences = _sequences(SHAPES[7], seed=29)
    dtypes = ("float32", "bfloat16", "int8", "int4")
    native = {dtype: _step(engine.load(checkpoints["mqa-odd"], "causal-lm", dtype=dtype, device="cpu"), sequences)
              for dtype in dtypes}
    use_build(build, tmp_path, monkeypatch)
    expected = _transformers(checkpoints["mqa-odd"], sequences)
    for dtype in dtypes:
        runner = engine.load(checkpoints["mqa-odd"], "causal-lm", dtype=dtype, device="cpu")
        assert runner.decode_path == "kernel"
        together = _step(runner, sequences)
        if dtype == "float32":
            assert (together - expected).abs().max().item() <= FP32_TOL
        assert (together - native[dtype]).abs().max().item() <= 1e-4
        assert torch.equal(_step(runner, sequences[2:3]), together[5:7])  # the third row: 4 + 1 tokens before it
        assert torch.equal(_step(runner, sequences[5:7]), together[11:17])  # the last two rows
    assert len(list(kernels_dir().glob("decode_step-*"))) == 1
