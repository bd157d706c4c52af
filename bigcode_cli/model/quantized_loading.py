"""The causal LM with block-quantized linear layers and LM head: built from a float checkpoint while reading
it tensor by tensor, or from the flat quantized state kept in the cache (store/quantized.py).

What is quantized: the four linear layers of every block and the LM head. The token embedding is the LM
head's matrix when they are tied (as in every GPTBigCode checkpoint), so it is read from the quantized
matrix too; an untied embedding table is quantized on its own. Position embeddings, LayerNorms and biases
stay float32, the compute dtype of everything around the matmuls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bigcode_cli.choices import QUANTIZED_DTYPES
from bigcode_cli.errors import BackendError
from bigcode_cli.model import runtime
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.gpt_bigcode import GPTBigCodeForCausalLM
from bigcode_cli.model.quantize import BLOCK, Quantized, QuantizedEmbedding, QuantizedLinear, padded, quantize
from bigcode_cli.model.tensor_reader import TensorReader
from bigcode_cli.model.weights import build_model, kept_key

BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def prefill_dtype() -> torch.dtype:
    """The dtype a quantized layer is dequantized to for batched matmuls: bfloat16 where the CPU multiplies it
    natively (AVX-512 BF16, AMX), float32 where bf16 would be emulated (measured: benchmarks/quant_speed.py)."""
    return torch.bfloat16 if runtime.cpu_multiplies_bf16() else torch.float32


def check_quantizable(name: str, task: str, device: torch.device, engine: str = "native") -> int:
    """The bits of quantized dtype `name`, or a BackendError naming what does work for this model and machine."""
    if engine != "native":
        raise BackendError(f"--dtype {name} runs on the native engine only; drop --engine transformers "
                           "or choose float32 or bfloat16")
    if task != "causal-lm":
        raise BackendError(f"--dtype {name} quantizes causal language models only; {task} heads run in "
                           "float32 or bfloat16")
    if device.type != "cpu":
        raise BackendError(f"--dtype {name} runs on the CPU only; use --device cpu, or float16/bfloat16 on {device.type}")
    return QUANTIZED_DTYPES[name]


def _give_back_freed_memory() -> None:
    # the float pieces and quantizer temporaries between long-lived blocks leave free holes in the C heap that
    # would count as resident until exit; glibc's malloc_trim returns them to the system (elsewhere: a no-op)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _set_param(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(model.get_submodule(owner), attr, nn.Parameter(tensor, requires_grad=False))


def _assemble(config: GPTBigCodeConfig, model: GPTBigCodeForCausalLM, bits: int,
              matrix: Callable[[str], Quantized], floats: Callable[[str], torch.Tensor]) -> GPTBigCodeForCausalLM:
    """Replace the meta model's linear layers and embedding by quantized ones, then give it its float tensors."""
    matmul = prefill_dtype()
    for i, block in enumerate(model.transformer.h):
        for path in BLOCK_LINEARS:
            owner, _, attr = path.rpartition(".")
            prefix = f"transformer.h.{i}.{path}"
            layer = getattr(block.get_submodule(owner), attr)
            bias = floats(f"{prefix}.bias") if layer.bias is not None else None
            setattr(block.get_submodule(owner), attr,
                    QuantizedLinear(matrix(prefix), layer.out_features, bias, matmul))
    table = matrix("transformer.wte")
    model.transformer.wte = QuantizedEmbedding(table)
    head = table if config.tie_word_embeddings else matrix("lm_head")
    model.lm_head = QuantizedLinear(head, config.vocab_size, None, matmul)
    for name, param in list(model.named_parameters()):
        if param.is_meta:
            _set_param(model, name, floats(name))
    for name, buffer in model.named_buffers():
        if buffer.is_meta:
            raise RuntimeError(f"quantized model assembly left {name} on the meta device")
    model.eval()
    return model


def _meta_model(config: GPTBigCodeConfig, state: dict[str, torch.Tensor], source: str) -> GPTBigCodeForCausalLM:
    # build_model's checks (missing, unexpected, mis-shaped weights, no LM head) on meta tensors: nothing is read
    return build_model(config, "causal-lm", state, dtype=torch.float32, device=torch.device("meta"), source=source)


def quantize_checkpoint(directory: Path, config: GPTBigCodeConfig, bits: int, *,
                        source: str = "checkpoint") -> GPTBigCodeForCausalLM:
    """The causal LM of a float checkpoint with its matrices quantized as they are read, a piece at a time."""
    reader = TensorReader(directory)
    keys = [k for k in reader.keys() if kept_key(k)]
    model = _meta_model(config, {k: reader.meta(k) for k in keys}, source)

    def matrix(prefix: str) -> Quantized:
        # filled a piece of rows at a time: memory holds the quantized matrix and one float piece
        out, n = reader.meta(f"{prefix}.weight").shape
        blocks = padded(n) // BLOCK
        qweight = torch.empty((out, blocks * BLOCK * bits // 8), dtype=torch.int8 if bits == 8 else torch.uint8)
        scales = torch.empty((out, blocks), dtype=torch.float16)
        for start, rows in reader.pieces(f"{prefix}.weight"):
            part = quantize(rows, bits)
            qweight[start : start + rows.shape[0]] = part.qweight
            scales[start : start + rows.shape[0]] = part.scales
            del rows, part
        _give_back_freed_memory()
        return Quantized(qweight, scales, bits, n)

    return _assemble(config, model, bits, matrix, lambda name: reader.read(name).to(torch.float32))


def quantized_state(model: GPTBigCodeForCausalLM) -> dict[str, torch.Tensor]:
    """Every tensor of a quantized model, flat and unshared (a tied LM head is stored once, as the embedding)."""
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().contiguous()
    return state


def from_quantized_state(config: GPTBigCodeConfig, state: dict[str, torch.Tensor], bits: int, *,
                         source: str = "quantized cache") -> GPTBigCodeForCausalLM:
    """The model `quantized_state` saved, reusing the given tensors (a memory-mapped file stays mapped)."""
    shapes: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(".qweight"):
            base = name.removesuffix(".qweight")
            in_features = _in_features(config, base)
            shapes[f"{base}.weight"] = torch.empty((tensor.shape[0], in_features), device="meta")
        elif not name.endswith(".scales"):
            shapes[name] = tensor.to("meta")
    model = _meta_model(config, shapes, source)

    def matrix(prefix: str) -> Quantized:
        return Quantized(state[f"{prefix}.qweight"], state[f"{prefix}.scales"], bits, _in_features(config, prefix))

    return _assemble(config, model, bits, matrix, lambda name: state[name])


def _in_features(config: GPTBigCodeConfig, prefix: str) -> int:
    return config.inner_dim if prefix.endswith("mlp.c_proj") else config.n_embd
