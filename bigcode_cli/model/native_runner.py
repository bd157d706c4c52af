"""The native engine: our own model (bigcode_cli.model.gpt_bigcode) behind the Runner protocol."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bigcode_cli.model.attention import resolve_backend
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.gpt_bigcode import KVCache
from bigcode_cli.model.runner import RunnerBase
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


@dataclass
class NativeRunner(RunnerBase):
    """Our own model; on a CPU its decode steps run in the C kernel when one could be built (cpu_decode)."""

    decoder: Any = None

    def __call__(self, input_ids, attention_mask=None, cache=None, last_only=False):
        if task_row(self.task).generative:
            if self.decoder is not None and self.decoder.can_run(input_ids, attention_mask, cache):
                return self.decoder(input_ids, cache)
            return self.model(input_ids, attention_mask, cache, last_only)
        return self.model(input_ids, attention_mask)

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
        return KVCache.allocate(self.config, batch, capacity, dtype=self.dtype, device=self.device)

    def set_backend(self, name: str) -> None:
        backend = resolve_backend(name, self.device, self.dtype)
        self.model.set_backend(backend)
        self.backend = backend.name


def load_native(path: Path, config: GPTBigCodeConfig, task: str, attn: str, device: torch.device,
                dtype_name: str) -> NativeRunner:
    """Our model for `task` from the checkpoint at `path`, with the C decode kernel attached where it serves."""
    state = load_state_dict(path)
    dtype = resolve_dtype(dtype_name, checkpoint_dtype(state), device)
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
