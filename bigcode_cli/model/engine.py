"""Loading a checkpoint for a task with either engine, behind one small interface.

`native` runs our model (bigcode_cli.model.gpt_bigcode); `transformers` runs transformers' own GPTBigCode
classes, the reference for parity checks and a fallback. Services only see `Runner`:
    runner(input_ids, attention_mask=None, cache=None, last_only=False) -> logits
    runner.new_cache(batch, capacity) -> a cache with .length, .repeat_batch(n), .select(rows)
    runner.decoding(rows) -> a context manager around the one-token steps after a prefill
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bigcode_cli.model.attention import resolve_backend
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.errors import BackendError, CheckpointError
from bigcode_cli.model.gpt_bigcode import HEAD_KEYS, KVCache
from bigcode_cli.model.runtime import QUANTIZED_DTYPES, resolve_device, resolve_dtype
from bigcode_cli.model.weights import build_model, checkpoint_dtype, load_state_dict, use_input_major_weights

ENGINES = ("native", "transformers")
_HF_ATTN = {"eager": "eager", "sdpa": "sdpa", "flash": "flash_attention_2"}


@dataclass
class Runner:
    """A loaded model ready to run: the module, what it runs on, and how long loading took."""

    model: Any
    config: GPTBigCodeConfig
    task: str
    engine: str
    backend: str
    device: torch.device
    dtype: torch.dtype
    path: Path
    load_s: float = 0.0
    extra: dict = field(default_factory=dict)
    quant: str | None = None  # "int8" | "int4" when the linear layers hold quantized weights (dtype computes the rest)

    @property
    def dtype_name(self) -> str:
        """What --dtype this model runs as: "int8", "int4", or its torch dtype's name."""
        return self.quant or str(self.dtype).removeprefix("torch.")

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 cache: Any = None, last_only: bool = False) -> torch.Tensor:
        """Logits: causal-LM (B, T|1, V), sequence classification (B, L), token classification (B, T, L)."""
        raise NotImplementedError

    def new_cache(self, batch: int, capacity: int) -> Any:
        """An empty generation cache for `batch` sequences of up to `capacity` positions."""
        raise NotImplementedError

    def set_backend(self, name: str) -> None:
        """Switch the attention backend without reloading."""
        raise NotImplementedError

    def decoding(self, rows: int) -> contextlib.AbstractContextManager:
        """Settings for the decode steps that follow a prefill, `rows` sequences at a time."""
        return contextlib.nullcontext()

    @property
    def decode_path(self) -> str:
        """What runs one-token decode steps: "kernel" (our C kernel) or "torch"."""
        return "torch"

    @property
    def context_length(self) -> int:
        """The most positions the model can see."""
        return self.config.n_positions


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class NativeRunner(Runner):
    """Our own model; on a CPU its decode steps run in the C kernel when one could be built (cpu_decode)."""

    decoder: Any = None

    def __call__(self, input_ids, attention_mask=None, cache=None, last_only=False):
        if self.task == "causal-lm":
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


class _HFCache:
    """transformers' DynamicCache with the small interface the generation service uses."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def repeat_batch(self, n: int) -> _HFCache:
        self.cache.batch_repeat_interleave(n)
        return self

    def select(self, rows: torch.Tensor) -> _HFCache:
        self.cache.batch_select_indices(rows)
        return self


def _cache_argument(model: Any) -> str:
    """The name transformers' forward() takes the cache under: `cache` since 5.2x, `past_key_values` before.

    Passed under the other name, the cache is silently swallowed by **kwargs and every step runs as if
    nothing came before it (seen with transformers 5.17).
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class TransformersRunner(Runner):
    """transformers' own GPTBigCode classes, fed positions from the attention mask like our model."""

    def __call__(self, input_ids, attention_mask=None, cache=None, last_only=False):
        T = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            positions = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)
        else:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        kwargs: dict[str, Any] = {"attention_mask": attention_mask, "position_ids": positions}
        if self.task == "causal-lm":
            if cache is not None:
                kwargs.update({_cache_argument(self.model): cache.cache, "use_cache": True})
            else:
                kwargs["use_cache"] = False
            if last_only:
                kwargs["logits_to_keep"] = 1
        return self.model(input_ids, **kwargs).logits

    def new_cache(self, batch: int, capacity: int) -> _HFCache:
        from transformers import DynamicCache

        return _HFCache(DynamicCache(config=self.model.config))

    def set_backend(self, name: str) -> None:
        raise BackendError("switching the attention backend of the transformers engine needs a reload")


def _quantized(path: Path, config: GPTBigCodeConfig, task: str, attn: str, device: torch.device,
               dtype_name: str, quantized_file: Path | None) -> Runner:
    from bigcode_cli.model import quantized_loading

    bits = quantized_loading.check_quantizable(dtype_name, task, device)
    if quantized_file is not None:
        from bigcode_cli.model.quantized_file import map_state

        state, _ = map_state(quantized_file)  # memory-mapped: the pages are the cache file's
        model = quantized_loading.from_quantized_state(config, state, bits, source=str(quantized_file))
    else:
        model = quantized_loading.quantize_checkpoint(path, config, bits, source=str(path))
    backend = resolve_backend(attn, device, torch.float32)
    model.set_backend(backend)
    from bigcode_cli.kernels.cpu_decode import attach

    return NativeRunner(model, config, task, "native", backend.name, device, torch.float32, path,
                        quant=dtype_name, decoder=attach(model))


def load_state_dict_as(path: Path, dtype_name: str, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.dtype]:
    """The checkpoint's tensors and the dtype to run them in. When that dtype is not the stored one, each
    tensor is converted as it is read (model/tensor_reader.py), so memory holds the converted weights and one
    tensor, not the stored weights and the converted ones (bf16 from an fp32 checkpoint: half, not 1.5x)."""
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
        state[k] = torch.empty(t.shape, dtype=dtype)  # filled a piece of rows at a time
        for start, rows in reader.pieces(k):
            state[k][start : start + rows.shape[0]] = rows
    return state, dtype


def _native(path: Path, config: GPTBigCodeConfig, task: str, attn: str, device: torch.device,
            dtype_name: str, quantized_file: Path | None = None) -> Runner:
    if dtype_name in QUANTIZED_DTYPES:
        return _quantized(path, config, task, attn, device, dtype_name, quantized_file)
    state, dtype = load_state_dict_as(path, dtype_name, device)
    backend = resolve_backend(attn, device, dtype)
    model = build_model(config, task, state, dtype=dtype, device=device, source=str(path))
    model.set_backend(backend)
    decoder = None
    if task == "causal-lm" and device.type == "cpu":
        from bigcode_cli.kernels.cpu_decode import attach

        decoder = attach(model)
    if decoder is None and device.type == "cpu" and dtype == torch.float32:
        use_input_major_weights(model)
    return NativeRunner(model, config, task, "native", backend.name, device, dtype, path, decoder=decoder)


def _transformers(path: Path, config: GPTBigCodeConfig, task: str, attn: str, device: torch.device,
                  dtype_name: str, quantized_file: Path | None = None) -> Runner:
    if dtype_name in QUANTIZED_DTYPES:
        raise BackendError(f"--dtype {dtype_name} runs on the native engine only; drop --engine transformers "
                           "or choose float32 or bfloat16")
    from transformers import (
        GPTBigCodeForCausalLM,
        GPTBigCodeForSequenceClassification,
        GPTBigCodeForTokenClassification,
    )

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    classes = {"causal-lm": GPTBigCodeForCausalLM, "sequence-classification": GPTBigCodeForSequenceClassification,
               "token-classification": GPTBigCodeForTokenClassification}
    state = load_state_dict(path)  # validates the files and tells us the stored dtype and heads
    if HEAD_KEYS[task] not in state and not (task == "causal-lm" and config.tie_word_embeddings):
        build_model(config, task, state, dtype=torch.float32, device=torch.device("meta"), source=str(path))
    dtype = resolve_dtype(dtype_name, checkpoint_dtype(state), device)
    backend = resolve_backend(attn, device, dtype)
    del state
    try:
        model = classes[task].from_pretrained(
            str(path), attn_implementation=_HF_ATTN[backend.name], dtype=dtype, trust_remote_code=False
        )
    except Exception as exc:
        raise CheckpointError(f"transformers could not load {path}: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return TransformersRunner(model, config, task, "transformers", backend.name, device, dtype, path)


def load(path: str | Path, task: str, *, engine: str = "native", attn: str = "auto", device: str = "auto",
         dtype: str = "auto", quantized_file: Path | None = None) -> Runner:
    """Load the checkpoint directory `path` for `task` ("causal-lm", "sequence-classification", "token-classification").

    `dtype` "int8" / "int4" quantizes the causal LM's matrices while reading them, or maps them from
    `quantized_file` (a cached quantized state of this checkpoint, see store/quantized.py)."""
    started = time.perf_counter()
    path = Path(path)
    if engine not in ENGINES:
        raise BackendError(f"unknown engine {engine!r}; choose native or transformers")
    config = GPTBigCodeConfig.from_file(path / "config.json")
    torch_device = resolve_device(device)
    loader = _native if engine == "native" else _transformers
    with torch.inference_mode(False):
        runner = loader(path, config, task, attn, torch_device, dtype, quantized_file)
    runner.load_s = time.perf_counter() - started
    return runner
