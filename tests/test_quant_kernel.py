"""The C kernel's quantized matvecs and decode steps against a plain PyTorch reference of the same math.

The kernel quantizes each matvec's input to int8 per block of 32 (d = max|x| / 127, round half to even)
and multiplies it with the int8 / int4 weight blocks; the reference does the same in float64 from the
documented definitions: dequantize the weights, quantize-dequantize the input, matmul.
"""

from __future__ import annotations

import pytest
import torch
from checkpoints import save_checkpoint
from quant_reference import assert_matches_reference, quantized_input, reference_linear, use_reference_linears

from bigcode_cli.kernels import build as kernel_build
from bigcode_cli.kernels.cpu_decode import quantized_matvec
from bigcode_cli.model import engine
from bigcode_cli.model.quantize import QuantizedLinear, dequantize, quantize
from bigcode_cli.paths import kernels_dir

pytestmark = pytest.mark.skipif(kernel_build.find_compiler() is None, reason="no C compiler to build the kernel")


@pytest.mark.parametrize("bits", [8, 4])
# (48, 96): whole groups of 16 rows over an odd number of blocks (quant_groups.h); 11 rows: more tokens than
# one pass over a group takes
@pytest.mark.parametrize("out_features, in_features", [(64, 64), (13, 40), (7, 1), (33, 97), (96, 3072), (48, 96)])
@pytest.mark.parametrize("rows", [1, 3, 11])
def test_matvec_equals_dequantize_then_matmul(bits, out_features, in_features, rows):
    g = torch.Generator().manual_seed(out_features * in_features + rows)
    w = torch.randn(out_features, in_features, generator=g) * 0.05
    layer = QuantizedLinear(quantize(w, bits), out_features, torch.randn(out_features, generator=g))
    x = torch.randn(rows, in_features, generator=g)
    expected = reference_linear(layer, x)
    for threads in (1, 2):
        got = quantized_matvec(layer, x, threads).double()
        # only the order of the float additions differs: a few float32 roundings of the row's magnitude
        scale = (quantized_input(x).abs() @ dequantize(layer.quantized, torch.float64).abs().T).max()
        assert (got - expected).abs().max().item() <= 1e-5 * scale.item() + 1e-6


@pytest.mark.parametrize("bits", [8, 4])
def test_a_rows_products_do_not_depend_on_the_other_rows(bits):
    # batch invariance: one token alone, or among 2, 9 or 11 (int8: a group's one-token path, its several-token
    # path, two passes over a group; rows 32-36 past the groups), gives the same bits
    g = torch.Generator().manual_seed(5)
    layer = QuantizedLinear(quantize(torch.randn(37, 160, generator=g) * 0.05, bits), 37, torch.randn(37, generator=g))
    x = torch.randn(11, 160, generator=g)
    alone = torch.cat([quantized_matvec(layer, x[i : i + 1]) for i in range(11)])
    for count in (2, 9, 11):
        assert torch.equal(quantized_matvec(layer, x[:count]), alone[:count]), count


def _cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo", errors="replace"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.skipif(not {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= _cpu_flags(),
                    reason="the groups of rows need AVX-512 VNNI")
@pytest.mark.parametrize("bits", [8, 4])
def test_a_cpu_with_avx512_vnni_multiplies_sixteen_rows_at_a_time(bits):
    # the fast path is really taken here (else every test above would pass on the row-at-a-time path alone),
    # with the scales of each group in lane order: group g, block k, lane r is row 16 g + r's scale of block k
    from bigcode_cli.kernels.cpu_decode import _group_scales, _library

    lib = _library()
    assert lib.bigcode_quant_group_rows() == 16
    layer = QuantizedLinear(quantize(torch.randn(37, 96), bits), 37, None)
    grouped = _group_scales(lib, layer)
    assert grouped.shape == (2, 3, 16)
    for g, k, r in ((0, 0, 0), (0, 2, 15), (1, 1, 3), (1, 2, 15)):
        assert grouped[g, k, r] == layer.scales[16 * g + r, k]
    assert _group_scales(lib, QuantizedLinear(quantize(torch.randn(15, 96), bits), 15, None)) is None


def test_blocks_that_do_not_fit_the_layer_keep_the_kernel_away():
    # a damaged quantized copy (a row or a scale short) must not send the kernel past the tensors' ends
    from bigcode_cli.kernels.cpu_decode import _quantized_problem

    from bigcode_cli.kernels import cpu_decode
    from bigcode_cli.model import quantize as quantize_module

    assert cpu_decode.BLOCK == quantize_module.BLOCK  # the kernel reads the blocks the quantizer writes
    for bits in (8, 4):
        q = quantize(torch.randn(32, 96), bits)
        assert _quantized_problem(QuantizedLinear(q, 32, None)) is None
        short_rows = q._replace(qweight=q.qweight[:, :-1].contiguous())
        short_scales = q._replace(scales=q.scales[:, :-1].contiguous())
        fewer_rows = q._replace(qweight=q.qweight[:16].contiguous(), scales=q.scales[:16].contiguous())
        for damaged in (QuantizedLinear(short_rows, 32, None), QuantizedLinear(short_scales, 32, None),
                        QuantizedLinear(fewer_rows, 32, None)):
            assert "do not fit" in _quantized_problem(damaged)


@pytest.mark.parametrize("bits", [8, 4])
def test_a_nan_input_counts_as_zero_on_every_path(bits):
    # a NaN is left out of its block's scale and quantized to 0, whether the block is whole (the AVX-512 path
    # quantizes it sixteen values at a time) or the row's short last one (the scalar loop)
    g = torch.Generator().manual_seed(7)
    layer = QuantizedLinear(quantize(torch.randn(16, 72, generator=g) * 0.05, bits), 16, None)
    x = torch.randn(3, 72, generator=g)
    poisoned = x.clone()
    poisoned[0, 5] = poisoned[1, 70] = float("nan")  # a whole block; the last block, 8 values long
    cleared = x.clone()
    cleared[0, 5] = cleared[1, 70] = 0.0
    assert torch.equal(quantized_matvec(layer, poisoned), quantized_matvec(layer, cleared))


def test_matvec_without_bias_and_with_zero_input():
    layer = QuantizedLinear(quantize(torch.randn(5, 64), 8), 5, None)
    assert torch.equal(quantized_matvec(layer, torch.zeros(2, 64)), torch.zeros(2, 5))


CASES = {
    "mqa": dict(multi_query=True),
    "mha": dict(multi_query=False),
    "mqa-odd-untied": dict(multi_query=True, n_embd=40, tie=False, activation_function="gelu"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("qkernel")
    return {name: save_checkpoint(root / name, n_layer=3, **kwargs) for name, kwargs in CASES.items()}


def _ids(rows: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 97, (rows, length), generator=torch.Generator().manual_seed(seed))


def _step_logits(runner, prompt: torch.Tensor, steps: torch.Tensor, before_steps=None) -> torch.Tensor:
    with torch.inference_mode():
        cache = runner.new_cache(prompt.shape[0], prompt.shape[1] + steps.shape[1])
        runner(prompt, cache=cache)
        if before_steps is not None:
            before_steps(runner)
        return torch.cat([runner(steps[:, i : i + 1], cache=cache)[:, -1:].double() for i in range(steps.shape[1])], 1)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("rows", [1, 3])
def test_kernel_steps_equal_the_pytorch_reference(checkpoints, case, dtype, rows):
    path = checkpoints[case]
    ours = engine.load(path, "causal-lm", dtype=dtype, device="cpu")
    assert ours.decode_path == "kernel" and ours.dtype_name == dtype
    prompt, steps = _ids(rows, 9, seed=1), _ids(rows, 6, seed=2)
    got = _step_logits(ours, prompt, steps)
    reference = engine.load(path, "causal-lm", dtype=dtype, device="cpu")
    reference.decoder = None
    expected = _step_logits(reference, prompt, steps, before_steps=use_reference_linears)
    assert_matches_reference(got, expected)
    float_torch = engine.load(path, "causal-lm", dtype=dtype, device="cpu")
    float_torch.decoder = None  # PyTorch's path: dequantized weights, unquantized inputs
    assert (got - expected).abs().max().item() < (_step_logits(float_torch, prompt, steps) - expected).abs().max().item()


def test_the_portable_build_gives_the_same_products_and_steps(checkpoints, tmp_path, monkeypatch):
    """Without -march=native the kernel is the plain C loop (ARM and other CPUs): same numbers as the reference."""
    path = checkpoints["mqa-odd-untied"]
    prompt, steps = _ids(2, 9, seed=3), _ids(2, 5, seed=4)
    native = {dtype: _step_logits(engine.load(path, "causal-lm", dtype=dtype, device="cpu"), prompt, steps)
              for dtype in ("int8", "int4")}
    monkeypatch.setenv("BIGCODE_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    monkeypatch.setattr(kernel_build, "_cpu_features", lambda: None)
    for bits in (8, 4):
        layer = QuantizedLinear(quantize(torch.randn(33, 97) * 0.05, bits), 33, torch.randn(33))
        x = torch.randn(3, 97)
        assert (quantized_matvec(layer, x, 2).double() - reference_linear(layer, x)).abs().max().item() <= 1e-4
    for dtype in ("int8", "int4"):
        runner = engine.load(path, "causal-lm", dtype=dtype, device="cpu")
        assert runner.decode_path == "kernel"
        assert (_step_logits(runner, prompt, steps) - native[dtype]).abs().max().item() <= 1e-4
    assert len(list(kernels_dir().glob("decode_step-*"))) == 1
