"""The block formats of --dtype int8 / int4 (bigcode_cli/model/quantize.py): layout, round-trip error, tails."""

from __future__ import annotations

import pytest
import torch

from bigcode_cli.model.quantize import BLOCK, QuantizedLinear, dequantize, quantize, rows_of, unpack_values


def _matrix(out: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # blocks of very different magnitudes, so one scale per block matters
    return torch.randn(out, n, generator=g) * torch.rand(out, n, generator=g).pow(3) * 0.1


def _reference_block(values: list[float], bits: int) -> tuple[float, list[int]]:
    """One block quantized by the definitions in the module docstring, element by element in float64."""
    if bits == 8:
        d = float(torch.tensor(max(abs(v) for v in values) / 127).half())
        return d, [max(-127, min(127, round(v / d))) if d else 0 for v in values]
    m = max(values, key=abs)
    d = float(torch.tensor(m / -8).half())
    return d, [max(0, min(15, round(v / d) + 8)) - 8 if d else 0 for v in values]


@pytest.mark.parametrize("bits", [8, 4])
def test_blocks_follow_the_documented_definition(bits):
    w = _matrix(3, 2 * BLOCK, seed=1).double().float()
    q = quantize(w, bits)
    values = unpack_values(q.qweight, bits)
    for row in range(3):
        for block in range(2):
            d, expected = _reference_block(w[row, block * BLOCK : (block + 1) * BLOCK].tolist(), bits)
            assert float(q.scales[row, block]) == pytest.approx(d, rel=0, abs=0)
            got = values[row, block * BLOCK : (block + 1) * BLOCK].tolist()
            # float32 w * (1/d) may round a value lying exactly between two levels the other way
            assert sum(a != b for a, b in zip(got, expected)) <= 1
            assert max(abs(a - b) for a, b in zip(got, expected)) <= 1


def test_int4_nibble_layout_is_element_j_low_and_j_plus_16_high():
    w = torch.zeros(1, BLOCK)
    w[0, 0], w[0, 16], w[0, 5] = -8.0, 7.0, 3.0  # d = -8 / -8 = 1
    q = quantize(w, 4)
    assert q.scales.item() == 1.0
    assert q.qweight[0, 0].item() == (-8 + 8) | ((7 + 8) << 4)
    assert q.qweight[0, 5].item() == (3 + 8) | ((0 + 8) << 4)


# int8: half a step (max|w| / 127); int4: one step (max|w| / 8), since only the largest value's sign gets level -8
# and a value as large on the other side clamps to +7
@pytest.mark.parametrize("bits, bound", [(8, 0.5 / 127), (4, 1 / 8)])
@pytest.mark.parametrize("shape", [(5, 32), (7, 40), (3, 1), (2, 97)])
def test_round_trip_error_is_within_half_a_step_of_each_block(bits, bound, shape):
    w = _matrix(*shape, seed=2)
    q = quantize(w, bits)
    back = dequantize(q)
    assert back.shape == w.shape
    n = shape[1]
    padded = (n + BLOCK - 1) // BLOCK * BLOCK
    wp = torch.nn.functional.pad(w, (0, padded - n)).reshape(shape[0], -1, BLOCK)
    step_bound = wp.abs().amax(-1, keepdim=True).expand_as(wp).reshape(shape[0], -1)[:, :n]
    # the step bound, plus the fp16 rounding of the scale: relative 2^-11 of the largest value, or for a block so
    # small that its scale is an fp16 subnormal (below 2^-14), half the subnormal spacing 2^-24 times the levels
    subnormal = 2.0**-25 * (127 if bits == 8 else 8)
    assert ((back - w).abs() <= step_bound * (bound + 2.0**-11 * 1.01) + subnormal).all()


@pytest.mark.parametrize("bits", [8, 4])
def test_tails_are_padded_with_zero_weights(bits):
    w = _matrix(4, 40, seed=3)
    q = quantize(w, bits)
    assert q.qweight.shape == (4, 64 if bits == 8 else 32) and q.scales.shape == (4, 2)
    assert (unpack_values(q.qweight, bits)[:, 40:] == 0).all()


def test_zero_blocks_and_exact_levels_survive():
    w = torch.zeros(2, 64)
    levels = torch.randint(-127, 128, (32,), generator=torch.Generator().manual_seed(6))
    levels[0] = 127
    w[1, 32:] = levels.float() * 2.0**-10  # whole int8 levels of a scale fp16 holds exactly
    for bits in (8, 4):
        back = dequantize(quantize(w, bits))
        assert (back[0] == 0).all() and (back[1, :32] == 0).all()
    assert torch.equal(dequantize(quantize(w, 8)), w)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_linear_is_dequantize_then_matmul(bits):
    w, b = _matrix(6, 40, seed=4), torch.randn(6)
    x = torch.randn(2, 3, 40)
    q = quantize(w, bits)
    layer = QuantizedLinear(q, 6, b)
    expected = x.double() @ dequantize(q).double().T + b.double()
    assert torch.allclose(layer(x).double(), expected, atol=1e-5)
    bf16 = QuantizedLinear(q, 6, b, matmul_dtype=torch.bfloat16)
    assert bf16(x).dtype == torch.float32
    assert torch.allclose(bf16(x).double(), expected, atol=0.05)


def test_embedding_rows_equal_the_dequantized_matrix():
    w = _matrix(10, 40, seed=5)
    q = quantize(w, 8)
    ids = torch.tensor([[3, 0, 9], [9, 9, 1]])
    assert torch.equal(rows_of(q, ids), dequantize(q)[ids])


@pytest.mark.parametrize("bits", [8, 4])
def test_a_layer_dequantized_in_pieces_equals_one_piece(bits, monkeypatch):
    from bigcode_cli.model import quantize as quantize_module

    w, b = _matrix(37, 40, seed=7), torch.randn(37)
    layer = QuantizedLinear(quantize(w, bits), 37, b)
    x = torch.randn(2, 5, 40)
    whole = layer(x)
    monkeypatch.setattr(quantize_module, "DEQUANT_PIECE", 40 * 6)  # 6 rows at a time, a ragged last piece
    assert torch.allclose(layer(x), whole, rtol=0, atol=1e-6)
