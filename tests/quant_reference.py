"""The C kernel's quantized math in plain PyTorch (float64), for tests of its products and steps.

The kernel quantizes each matvec's input to int8 per block of 32 (d = max|x| / 127, round half to even)
and multiplies it with the int8 / int4 weight blocks; the reference does the same from the documented
definitions: dequantize the weights, quantize-dequantize the input, matmul.
"""

from __future__ import annotations

import torch

from bigcode_cli.model.quantize import BLOCK, QuantizedLinear, dequantize


def quantized_input(x: torch.Tensor) -> torch.Tensor:
    """x (..., n) as the kernel sees it: per block of 32 values d * round(x / d), d = max|x| / 127 (float32 math)."""
    n = x.shape[-1]
    pad = (-n) % BLOCK
    blocks = torch.nn.functional.pad(x.float(), (0, pad)).reshape(*x.shape[:-1], -1, BLOCK)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(blocks * inv)
    return (q.double() * d.double()).reshape(*x.shape[:-1], -1)[..., :n]


def reference_linear(layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """float64 dequantize-then-matmul of a QuantizedLinear applied to the kernel's view of x."""
    y = quantized_input(x) @ dequantize(layer.quantized, torch.float64).T
    return y + layer.bias.double() if layer.bias is not None else y



class ReferenceLinear(torch.nn.Module):
    """Stands in for a QuantizedLinear: the kernel's quantized math in float64."""

    def __init__(self, layer: QuantizedLinear) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return reference_linear(self.layer, x).to(x.dtype)


def assert_matches_reference(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The logits of a kernel step (..., V) against the float64 reference's: most tokens equal within float
    rounding, none further off than one int8 level of one input does.

    Upstream of each product the kernel and PyTorch round differently (layer norm, attention), so an input
    lying within float rounding of a rounding boundary of its int8 block may land one level apart, and that
    token and the ones attending to it move by up to 1.1e-2 (measured on an AVX2 AMD EPYC, where not
    quantizing the inputs at all moves them by 1.6e-3 to 1.2e-2). So this checks that a step feeds the right
    inputs to the right matrices; the products' own math is checked where no rounding upstream can differ
    (test_quant_kernel's matvec tests, 1e-5 relative, every tile position), and batch invariance bit for bit."""
    per_token = (got.double() - expected.double()).abs().reshape(-1, got.shape[-1]).amax(-1)
    assert per_token.median().item() <= 1e-5, per_token
    assert per_token.max().item() <= 5e-2, per_token


def use_reference_linears(runner) -> None:
    """Swap every QuantizedLinear of a runner's model for its ReferenceLinear (after a prefill: the kernel's
    steps quantize their inputs, PyTorch's prefill does not)."""
    model = runner.model
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantizedLinear):
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, attr, ReferenceLinear(module))
