"""Block-wise quantized weights (`--dtype int8`, `--dtype int4`) and the modules that hold them.

Formats (the block layouts of llama.cpp's q8_0 and q4_0; chosen by benchmarks/quant_formats.c):
- int8: each run of 32 weights along a row is one block: 32 int8 values q in [-127, 127] and one fp16
  scale d = max|w| / 127; w ~= d * q. 8.5 bits per weight.
- int4: 32 values q in [0, 15] packed two per byte and one fp16 scale d = m / -8, where m is the block's
  weight of largest magnitude (sign kept, so it maps to -8 exactly); w ~= d * (q - 8). 4.5 bits per weight.
  Byte j of a block holds element j in its low nibble and element j + 16 in its high nibble.
Rows whose length is not a multiple of 32 are padded with zero weights to the next block.

A weight (out, in) is stored as `qweight` (out, blocks * 32) int8, or (out, blocks * 16) uint8 for int4,
and `scales` (out, blocks) float16. The decode kernel reads these tensors in place; PyTorch (prefill and
every call the kernel does not take) dequantizes a layer at a time and runs one dense matmul.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 32
# a forward dequantizes at most this many weights at a time (16 MB in float32): the dense scratch of even
# a 49k-row LM head stays small, and each piece is still a large matmul (measured: 32 MB pieces put the
# peak RSS of a 1.1B int4 generation ~50 MB above what it holds after)
DEQUANT_PIECE = 4 * 1024 * 1024


class Quantized(NamedTuple):
    """One quantized matrix: packed values, per-block fp16 scales, and what it unpacks to."""

    qweight: torch.Tensor  # int8 (out, blocks*32) | uint8 (out, blocks*16)
    scales: torch.Tensor  # float16 (out, blocks)
    bits: int
    in_features: int


def padded(n: int) -> int:
    """`n` rounded up to whole blocks."""
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    # (out, in) float -> (out, blocks, 32) float32, zero-padded along in
    out, n = weight.shape
    w = weight.detach().to(torch.float32)
    if padded(n) != n:
        w = F.pad(w, (0, padded(n) - n))
    return w.reshape(out, -1, BLOCK)


def quantize(weight: torch.Tensor, bits: int) -> Quantized:
    """Quantize a (out, in) float matrix to `bits` (8 or 4) with one fp16 scale per 32 values of a row."""
    if weight.dim() != 2:
        raise ValueError(f"quantize takes a matrix, got shape {tuple(weight.shape)}")
    w = _blocks(weight)  # (out, nb, 32)
    if bits == 8:
        scale = (w.abs().amax(-1) / 127).to(torch.float16)  # (out, nb)
        d = scale.to(torch.float32).unsqueeze(-1)
        inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
        q = torch.round(w * inv).clamp_(-127, 127).to(torch.int8)
        return Quantized(q.reshape(weight.shape[0], -1).contiguous(), scale.contiguous(), 8, weight.shape[1])
    if bits == 4:
        idx = w.abs().argmax(-1, keepdim=True)
        scale = (torch.gather(w, -1, idx).squeeze(-1) / -8).to(torch.float16)
        d = scale.to(torch.float32).unsqueeze(-1)
        inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
        q = (torch.round(w * inv) + 8).clamp_(0, 15).to(torch.uint8)  # (out, nb, 32)
        packed = q[..., :16] | (q[..., 16:] << 4)  # (out, nb, 16)
        return Quantized(packed.reshape(weight.shape[0], -1).contiguous(), scale.contiguous(), 4, weight.shape[1])
    raise ValueError(f"unsupported bits {bits}; choose 8 or 4")


def unpack_values(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """The signed integer values of a packed matrix, (out, blocks*32) int8 (int4 values become q - 8)."""
    if bits == 8:
        return qweight
    out = qweight.shape[0]
    b = qweight.reshape(out, -1, BLOCK // 2)
    low, high = (b & 0x0F).to(torch.int8) - 8, (b >> 4).to(torch.int8) - 8
    return torch.cat([low, high], -1).reshape(out, -1)


def dequantize(q: Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (out, in) matrix a Quantized stands for: d * q per block, padding dropped."""
    values = unpack_values(q.qweight, q.bits)
    out = values.shape[0]
    w = values.reshape(out, -1, BLOCK).to(torch.float32)
    w.mul_(q.scales.to(torch.float32).unsqueeze(-1))  # in place: one float32 copy of the piece, not two
    return w.reshape(out, -1)[:, : q.in_features].to(dtype)


def rows_of(q: Quantized, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows `ids` (any shape) dequantized: (*ids.shape, in) — an embedding lookup into a quantized matrix."""
    flat = ids.reshape(-1)
    picked = Quantized(q.qweight.index_select(0, flat), q.scales.index_select(0, flat), q.bits, q.in_features)
    return dequantize(picked, dtype).reshape(*ids.shape, q.in_features)


class QuantizedLinear(nn.Module):
    """A Linear layer holding block-quantized weights; forward dequantizes the whole matrix for one matmul.

    The dense copy lives only during the call (one layer at a time), in `matmul_dtype`: bfloat16 where the
    CPU multiplies it natively, else float32 (see quantized_loading.prefill_dtype).
    """

    def __init__(self, q: Quantized, out_features: int, bias: torch.Tensor | None,
                 matmul_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bits = q.in_features, out_features, q.bits
        self.register_buffer("qweight", q.qweight)
        self.register_buffer("scales", q.scales)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.matmul_dtype = matmul_dtype

    @property
    def quantized(self) -> Quantized:
        """The packed weight as a Quantized."""
        return Quantized(self.qweight, self.scales, self.bits, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., in) -> (..., out), DEQUANT_PIECE weights (a block of output rows) dequantized at a time
        xm = x.to(self.matmul_dtype)
        bias = self.bias.to(self.matmul_dtype) if self.bias is not None else None
        step = max(1, DEQUANT_PIECE // max(self.in_features, 1))
        if step >= self.out_features:
            return F.linear(xm, dequantize(self.quantized, self.matmul_dtype), bias).to(x.dtype)
        y = torch.empty(*x.shape[:-1], self.out_features, dtype=self.matmul_dtype, device=x.device)
        for r0 in range(0, self.out_features, step):
            r1 = min(self.out_features, r0 + step)
            piece = Quantized(self.qweight[r0:r1], self.scales[r0:r1], self.bits, self.in_features)
            y[..., r0:r1] = F.linear(xm, dequantize(piece, self.matmul_dtype), bias[r0:r1] if bias is not None else None)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int{self.bits}, block={BLOCK}"


class QuantizedEmbedding(nn.Module):
    """Token embeddings read from a quantized matrix (the tied LM head's, or its own), one row per id."""

    def __init__(self, q: Quantized, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.bits, self.dtype = q.in_features, q.bits, dtype
        self.register_buffer("qweight", q.qweight)
        self.register_buffer("scales", q.scales)

    @property
    def quantized(self) -> Quantized:
        """The packed table as a Quantized."""
        return Quantized(self.qweight, self.scales, self.bits, self.in_features)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids (B, T) -> (B, T, C)
        return rows_of(self.quantized, ids, self.dtype)
