"""The native engine: our own model (bigcode_cli.model.gpt_bigcode) behind the Runner protocol."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from bigcode_cli.model.attention import resolve_backend
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.gpt_bigcode import KVCache
from bigcode_cli.model.runner import RowTokens, RunnerBase
from bigcode_cli.model.runtime import resolve_dtype
from bigcode_cli.model.weights import build_model, checkpoint_dtype, load_state_dict, use_input_major_weights
from bigcode_cli.tasks import task as task_row


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# The key/value cache of a quantized model whose steps the C kernel decodes with bf16 pair products
# (cpu_decode.bf16_cache_pays): bf16 halves the bytes every step reads per cached position, and a cache's memory. Measured on the bundled model, teacher-forced through the
# kernel over 900 tokens of textwrap.py (KL to the float32 model, float32 cache): int8 2.28e-4 -> 2.34e-4, int4
# 2.47e-2 -> 2.48e-2, top-1 agreement unchanged within noise; float32 weights alone would move by 2e-6. The
# matrices' own rounding is what a quantized model's user accepts; the cache adds 3% to it.
QUANTIZED_CACHE_DTYPE = torch.bfloat16


@dataclass
class NativeRunner(RunnerBase):
    """Our own model; on a CPU its decode steps run in the C kernel when one could be built (cpu_decode)."""

    decoder: Any = None
    cache_dtype: torch.dtype | None = None  # the key/value cache's dtype where it is not `dtype`

    def __call__(self, input_ids, attention_mask=None, cache=None, last_only=False):
        if task_row(self.task).generative:
            if self.decoder is not None and self.decoder.can_run(input_ids, attention_mask, cache):
                return self.decoder(input_ids, cache)
            return self.model(input_ids, attention_mask, cache, last_only)
        return self.model(input_ids, attention_mask)

    def step(self, rows: Sequence[RowTokens], last_only: bool = False) -> torch.Tensor:
        """Runner.step: in the C kernel (one pass over the weights for every row) where it serves, else PyTorch."""
        if self.decoder is not None and self.decoder.can_step(rows):
            return self.decoder.step(rows, last_only)
        whole = _whole_batch(rows)
        if whole is not None:  # every row of one split cache, alike: one batched forward computes them alike
            ids = torch.tensor([list(row.tokens) for row in rows], dtype=torch.long, device=self.device)
            logits = self.model(ids, None, whole, last_only)  # (R, k | 1, V)
            for row in rows:
                row.cache.length = whole.length
            return logits.reshape(-1, logits.shape[-1]).float()
        return super().step(rows, last_only)

    def step_best(self, rows: Sequence[RowTokens], last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Runner.step_best: the C kernel's argmax where it runs the step."""
        if self.decoder is not None and self.decoder.can_step(rows):
            return self.decoder.step_best(rows, last_only)
        return self.step(rows, last_only), None

    def decoding(self, rows: int) -> contextlib.AbstractContextManager:
        if self.decoder is None and self.device.type == "cpu" and rows == 1 and self.dtype == torch.float32:
            # PyTorch's fp32 one-row matmuls are bound by memory bandwidth, which a second thread does not add
            # to here, while every extra thread is one more to wait for when the machine is busy
            return _torch_threads(1)
        return contextlib.nullcontext()

    @property
    def decode_path(self) -> str:
        return "kernel" if self.decoder is not None else "torch"

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache.allocate(self.config, batch, capacity, dtype=self.cache_dtype or self.dtype, device=self.device)

    @property
    def decode_summary(self) -> str:
        summary = super().decode_summary
        if self.cache_dtype is not None and self.cache_dtype != self.dtype:
            summary += f", {str(self.cache_dtype).removeprefix('torch.')} key/value cache"
        return summary

    def set_backend(self, name: str) -> None:
        backend = resolve_backend(name, self.device, self.dtype)
        self.model.set_backend(backend)
        self.backend = backend.name


def _whole_batch(rows: Sequence[RowTokens]) -> KVCache | None:
    """The cache whose rows, in order, are exactly these rows' caches (KVCache.split), when they all stand at
    one position with as many new tokens; else None."""
    first = getattr(rows[0].cache, "batch", None) if rows else None
    if first is None:
        return None
    whole = first[0]
    if len(rows) != whole.layers[0].shape[0]:
        return None
    for i, row in enumerate(rows):
        if getattr(row.cache, "batch", None) != (whole, i) or row.cache.length != rows[0].cache.length:
            return None
        if len(row.tokens) != len(rows[0].tokens):
            return None
    whole.length = rows[0].cache.length
    return whole


def load_state_dict_as(path: Path, dtype_name: str, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.dtype]:
    """The checkpoint's tensors and the dtype to run them in. When that dtype is not the stored one, each
    tensor is converted as it is read (model/tensor_reader.py), a piece of rows at a time, so memory holds
    the converted weights and one piece, not the stored weights and the converted ones."""
    from bigcode_cli.model.tensor_reader import TensorReader
    from bigcode_cli.model.weights import kept_key

    reader = TensorReader(path)
    meta = {k: reader.meta(k) for k in reader.keys() if kept_key(k)}
    dtype = resolve_dtype(dtype_name, checkpoint_dtype(meta), device)
    if not any(t.is_floating_point() and t.dtype != dtype for t in meta.values()):
        return load_state_dict(path), dtype
    state = {}
    for k, t in meta.items():
        if not t.is_floating_point() or t.dim() == 0:
            state[k] = reader.read(k).to(dtype) if t.is_floating_point() else reader.read(k)
            continue
        state[k] = torch.empty(t.shape, dtype=dtype)
        for start, rows in reader.pieces(k):
            state[k][start : start + rows.shape[0]] = rows
    return state, dtype


def load_quantized(path: Path, config: GPTBigCodeConfig, task: str, attn: str, device: torch.device,
                   dtype_name: str, bits: int, quantized_file: Path | None) -> NativeRunner:
    """The causal LM with `bits`-bit matrices (engine.quantized_bits said so): mapped from a kept copy, or
    quantized while reading `path`."""
    from bigcode_cli.kernels.cpu_decode import attach, refusal
    from bigcode_cli.model import quantized_loading

    if quantized_file is not None:
        from bigcode_cli.model.quantized_file import map_state

        state, _ = map_state(quantized_file)  # memory-mapped: the pages are the kept copy's
        model = quantized_loading.from_quantized_state(config, state, bits, source=str(quantized_file))
    else:
        model = quantized_loading.quantize_checkpoint(path, config, bits, source=str(path))
    backend = resolve_backend(attn, device, torch.float32)
    model.set_backend(backend)
    from bigcode_cli.kernels.cpu_decode import bf16_cache_pays

    reason = refusal(model)
    cache_dtype = QUANTIZED_CACHE_DTYPE if reason is None and bf16_cache_pays(model) else None
    decoder = attach(model, cache_dtype) if reason is None else None
    return NativeRunner(model, config, task, "native", backend.name, device, torch.float32, decode_reason=reason,
                        quant=dtype_name, decoder=decoder, cache_dtype=cache_dtype if decoder else None)


def load_native(path: Path, config: GPTBigCodeConfig, task: str, attn: str, device: torch.device,
                dtype_name: str) -> NativeRunner:
    """Our model for `task` from the checkpoint at `path`, with the C decode kernel attached where it serves."""
    state, dtype = load_state_dict_as(path, dtype_name, device)
    backend = resolve_backend(attn, device, dtype)
    model = build_model(config, task, state, dtype=dtype, device=device, source=str(path))
    model.set_backend(backend)
    decoder, reason = None, None
    if task_row(task).generative and device.type == "cpu":
        from bigcode_cli.kernels.cpu_decode import attach, refusal

        reason = refusal(model)
        decoder = attach(model) if reason is None else None
    elif task_row(task).generative:
        reason = f"the model runs on {device.type}; the kernel serves CPU decoding"
    if decoder is None and device.type == "cpu" and dtype == torch.float32:
        use_input_major_weights(model)
    return NativeRunner(model, config, task, "native", backend.name, device, dtype, decode_reason=reason,
                        decoder=decoder)
