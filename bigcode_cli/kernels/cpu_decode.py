"""Decode steps of a causal LM on the CPU in one C call (bigcode_cli/kernels/decode_step.c).

A decode step feeds a few new tokens per row (one, or k to verify a draft) through every layer, each row
with its own cache and position. On a CPU it is a chain of few-row matrix products bound by memory
bandwidth, and short enough that dispatching ~15 PyTorch operations per layer from Python costs as much
as the arithmetic. `CpuDecoder` hands the whole step to the
kernel, which reads the model's own weight and cache tensors in place (no copies beyond float32
versions of the biases and LayerNorm parameters). Prefill, padded batches and everything else stay in
PyTorch; `attach` returns None when the kernel cannot serve a model (`refusal` says why), and the caller
keeps its PyTorch path.
"""

from __future__ import annotations

import ctypes
import os
import weakref

import torch

from bigcode_cli.errors import BackendError
from bigcode_cli.kernels.decode_support import ACTIVATIONS, activation_problem, decode_library, library_problem

BLOCK = 32  # values per quantized block, as the kernel reads them (QK in quant_matvec.h; model/quantize.py writes them)
MAX_ROWS = 8  # beyond this a batched matrix product in PyTorch does better than row-by-row streaming
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


class _Linear(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("b", ctypes.c_void_p), ("out", ctypes.c_int32), ("in_", ctypes.c_int32),
                ("scales", ctypes.c_void_p), ("quant", ctypes.c_int32), ("group_scales", ctypes.c_void_p)]


def _group_scales(lib: ctypes.CDLL, module: torch.nn.Module) -> torch.Tensor | None:
    """The block scales of a quantized matrix's whole groups of rows in the order the kernel's lanes take them,
    (groups, blocks, rows per group), where this build multiplies quantized weights a group of rows at a time
    (quant_groups.h; 1/16 of an int8 matrix's bytes more, 1/8 of an int4 one's), else None."""
    group = lib.bigcode_quant_group_rows()
    if group == 0 or module.out_features < group:
        return None
    groups, blocks = module.out_features // group, module.scales.shape[1]
    return module.scales[: groups * group].reshape(groups, group, blocks).transpose(1, 2).contiguous()


def _quantized_linear(lib: ctypes.CDLL, module: torch.nn.Module, bias: int | None, raw) -> _Linear:
    """The kernel's view of a QuantizedLinear: its packed blocks and fp16 scales read in place (model/quantize.py)."""
    grouped = _group_scales(lib, module)
    return _Linear(raw(module.qweight), bias, module.out_features, module.in_features, raw(module.scales),
                   module.bits, raw(grouped) if grouped is not None else None)


class _Layer(ctypes.Structure):
    _fields_ = [("ln1_w", ctypes.c_void_p), ("ln1_b", ctypes.c_void_p), ("ln2_w", ctypes.c_void_p),
                ("ln2_b", ctypes.c_void_p), ("attn", _Linear), ("proj", _Linear), ("fc", _Linear),
                ("mlp_proj", _Linear)]


class _Model(ctypes.Structure):
    _fields_ = [("n_layer", ctypes.c_int32), ("n_embd", ctypes.c_int32), ("n_head", ctypes.c_int32),
                ("head_dim", ctypes.c_int32), ("multi_query", ctypes.c_int32), ("inner", ctypes.c_int32),
                ("vocab", ctypes.c_int32), ("n_positions", ctypes.c_int32), ("activation", ctypes.c_int32),
                ("bf16", ctypes.c_int32), ("kv_bf16", ctypes.c_int32), ("eps", ctypes.c_float), ("scale", ctypes.c_float),
                ("wte", ctypes.c_void_p), ("wpe", ctypes.c_void_p), ("lnf_w", ctypes.c_void_p),
                ("lnf_b", ctypes.c_void_p), ("lm_head", _Linear), ("layers", ctypes.POINTER(_Layer)),
                ("wte_scales", ctypes.c_void_p), ("wte_quant", ctypes.c_int32)]


def _library() -> ctypes.CDLL | None:
    lib = decode_library()
    if lib is None:
        return None
    lib.bigcode_workspace_new.restype = ctypes.c_void_p
    lib.bigcode_workspace_new.argtypes = []
    lib.bigcode_workspace_free.restype = None
    lib.bigcode_workspace_free.argtypes = [ctypes.c_void_p]
    lib.bigcode_decode_rows.restype = ctypes.c_int
    lib.bigcode_decode_rows.argtypes = [ctypes.POINTER(_Model), ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.bigcode_argmax.restype = ctypes.c_int
    lib.bigcode_argmax.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    return lib


def _weight_problem(module: torch.nn.Module, dtype: torch.dtype) -> str | None:
    weight = module.weight
    if weight.dtype != dtype or weight.device.type != "cpu" or not weight.is_contiguous():
        return f"{type(module).__name__} weight is not a contiguous {dtype} CPU tensor"
    return None


class CpuDecoder:
    """One-token decode steps of a GPTBigCodeForCausalLM in the C kernel, reading the model's tensors; the caches
    it reads and writes hold `cache_dtype` keys and values (float32 or bfloat16; default: the compute dtype)."""

    def __init__(self, lib: ctypes.CDLL, model: torch.nn.Module, cache_dtype: torch.dtype | None = None) -> None:
        config = model.config
        self.lib = lib
        self.dtype = _compute_dtype(model)
        self.cache_dtype = cache_dtype or self.dtype
        if self.cache_dtype not in _DTYPES:
            raise ValueError(f"the kernel keeps float32 or bfloat16 caches, not {self.cache_dtype}")
        self.n_layer = config.n_layer
        self.vocab = config.vocab_size
        self._keep: list[torch.Tensor] = []  # every tensor whose address the structs hold
        layers = (_Layer * config.n_layer)()
        for layer, block in zip(layers, model.transformer.h):
            layer.ln1_w, layer.ln1_b = self._f32(block.ln_1.weight), self._f32(block.ln_1.bias)
            layer.ln2_w, layer.ln2_b = self._f32(block.ln_2.weight), self._f32(block.ln_2.bias)
            layer.attn = self._linear(block.attn.c_attn)
            layer.proj = self._linear(block.attn.c_proj)
            layer.fc = self._linear(block.mlp.c_fc)
            layer.mlp_proj = self._linear(block.mlp.c_proj)
        spec = model.transformer.h[0].attn.spec
        t = model.transformer
        wte = getattr(t.wte, "qweight", None)
        wte_scales, wte_quant = (self._raw(t.wte.scales), t.wte.bits) if wte is not None else (None, 0)
        self.model = _Model(
            n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head, head_dim=config.head_dim,
            multi_query=int(config.multi_query), inner=config.inner_dim, vocab=config.vocab_size,
            n_positions=config.n_positions, activation=ACTIVATIONS[config.activation_function],
            bf16=_DTYPES[self.dtype], kv_bf16=_DTYPES[self.cache_dtype], eps=config.layer_norm_epsilon, scale=spec.scale,
            wte=self._raw(wte if wte is not None else t.wte.weight), wpe=self._raw(t.wpe.weight),
            wte_scales=wte_scales, wte_quant=wte_quant, lnf_w=self._f32(t.ln_f.weight),
            lnf_b=self._f32(t.ln_f.bias), lm_head=self._linear(model.lm_head),
            layers=ctypes.cast(layers, ctypes.POINTER(_Layer)),
        )
        self._layers = layers
        # more threads than usable cores only adds waits for descheduled ones (measured: 8 threads on 2 cores
        # made a step 7x slower)
        affinity = getattr(os, "sched_getaffinity", None)
        self._cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
        # the step's buffers, kept from step to step and freed with the decoder
        self._workspace = lib.bigcode_workspace_new()
        if not self._workspace:
            raise MemoryError("the decode kernel could not allocate its workspace")
        weakref.finalize(self, lib.bigcode_workspace_free, self._workspace)

    def _raw(self, tensor: torch.Tensor) -> int:
        self._keep.append(tensor)
        return tensor.data_ptr()

    def _f32(self, tensor: torch.Tensor | None) -> int | None:
        if tensor is None:
            return None
        return self._raw(tensor.detach().float().contiguous())

    def _linear(self, module: torch.nn.Module) -> _Linear:
        if hasattr(module, "qweight"):
            return _quantized_linear(self.lib, module, self._f32(module.bias), self._raw)
        out_features, in_features = module.weight.shape
        return _Linear(self._raw(module.weight.detach()), self._f32(module.bias), out_features, in_features)

    def can_run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache) -> bool:
        """Whether this call is a plain decode step the kernel serves: one token per row, no padding."""
        if cache is None or attention_mask is not None or input_ids.dim() != 2 or input_ids.shape[1] != 1:
            return False
        rows = input_ids.shape[0]
        if not 1 <= rows <= MAX_ROWS or input_ids.device.type != "cpu" or cache.length >= cache.capacity:
            return False
        first = cache.layers[0]
        return first.dtype == self.cache_dtype and first.device.type == "cpu" and first.shape[0] == rows and all(
            layer.is_contiguous() for layer in cache.layers)

    def __call__(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        """Logits (B, 1, V) in float32 for one new token per row of a batched cache; it grows by one position."""
        rows, layer_count = input_ids.shape[0], self.n_layer
        # row b's memory in layer l: the layer tensor's start plus b rows (can_run checked it is contiguous)
        row_bytes = [layer.stride(0) * layer.element_size() for layer in cache.layers]
        pointers = [cache.layers[l].data_ptr() + b * row_bytes[l] for b in range(rows) for l in range(layer_count)]
        logits, _ = self._run([1] * rows, [cache.length] * rows, [cache.capacity] * rows, pointers,
                              input_ids.reshape(-1).tolist(), last_only=False, best=False)
        cache.length += 1
        return logits.unsqueeze(1)

    def can_step(self, rows) -> bool:
        """Whether every row of a Runner.step is a one-row KVCache this kernel reads (dtype, CPU, contiguous)."""
        for row in rows:
            layers = getattr(row.cache, "layers", None)
            if not layers or len(layers) != self.n_layer or not isinstance(row.cache.length, int):
                return False
            first = layers[0]
            if first.shape[0] != 1 or first.dtype != self.cache_dtype or first.device.type != "cpu":
                return False
            if not all(layer.is_contiguous() for layer in layers):
                return False
        return len(rows) > 0

    def step(self, rows, last_only: bool = False) -> torch.Tensor:
        """Runner.step in the kernel: logits (sum k, V), or (R, V) with last_only; each row's cache grows by its k."""
        return self._step(rows, last_only, best=False)[0]

    def step_best(self, rows, last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Runner.step_best in the kernel: the logits and each logits row's argmax (int64), which the LM head found
        while its results were still in cache (logits_best.h)."""
        logits, best = self._step(rows, last_only, best=True)
        assert best is not None
        return logits, best

    def _step(self, rows, last_only: bool, best: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        counts = [len(row.tokens) for row in rows]
        if min(counts) < 1:
            raise ValueError("every row of a step needs at least one new token")
        pointers = [layer.data_ptr() for row in rows for layer in row.cache.layers]
        ids = [int(token) for row in rows for token in row.tokens]
        result = self._run(counts, [row.cache.length for row in rows], [row.cache.capacity for row in rows], pointers,
                            ids, last_only, best)
        for row, count in zip(rows, counts):
            row.cache.length += count
        return result

    def _run(self, counts: list[int], starts: list[int], capacities: list[int], pointers: list[int], ids: list[int],
             last_only: bool, best: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """bigcode_decode_rows; the logits and (best) their rows' argmax, or the error its status means (then it
        wrote nothing)."""
        rows = len(counts)
        int32s = ctypes.c_int32 * rows
        logits = torch.empty((rows if last_only else len(ids), self.vocab), dtype=torch.float32)
        argmax = torch.empty(logits.shape[0], dtype=torch.int32) if best else None
        status = self.lib.bigcode_decode_rows(
            ctypes.byref(self.model), self._workspace, rows, int32s(*counts), int32s(*starts), int32s(*capacities),
            (ctypes.c_void_p * len(pointers))(*pointers), (ctypes.c_int64 * len(ids))(*ids), logits.data_ptr(),
            argmax.data_ptr() if argmax is not None else None, int(last_only),
            max(1, min(torch.get_num_threads(), self._cores)))
        if status == -1:
            raise BackendError("the C decode kernel ran out of memory for a step's buffers; free some memory, "
                               "or set BIGCODE_CPU_KERNEL=0 to decode in PyTorch")
        if status == -3:
            raise IndexError(f"token id out of range for a vocabulary of {self.vocab}")
        if status == -2:
            raise IndexError("a row's new positions go past its cache or the model's context")
        if status != 0:
            raise ValueError(f"the C decode kernel refused a step of {rows} rows (status {status})")
        return logits, argmax.long() if argmax is not None else None


def _compute_dtype(model: torch.nn.Module) -> torch.dtype:
    # the dtype of the float tensors (and the cache): the position embedding's, also beside quantized matrices
    return model.transformer.wpe.weight.dtype


def _quantized_problem(module: torch.nn.Module) -> str | None:
    tensors = (module.qweight, module.scales)
    if any(t.device.type != "cpu" or not t.is_contiguous() for t in tensors) or module.scales.dtype != torch.float16:
        return f"{type(module).__name__} is not held as contiguous CPU blocks with fp16 scales"
    # the kernel reads every row's blocks and scales (and their groups of 16) by these sizes: a damaged copy must
    # not send it past the tensors' ends
    blocks = (module.in_features + BLOCK - 1) // BLOCK
    rows = module.qweight.shape[0] if module.qweight.dim() == 2 else -1
    if (module.qweight.dim() != 2 or module.qweight.shape[1] != blocks * BLOCK * module.bits // 8
            or tuple(module.scales.shape) != (rows, blocks) or rows != getattr(module, "out_features", rows)):
        return f"{type(module).__name__} blocks do not fit its {module.in_features} inputs (a damaged quantized copy?)"
    return None


def refusal(model: torch.nn.Module) -> str | None:
    """Why the kernel cannot run this model's decode steps (in words a user can act on), or None when it can."""
    lm_head = getattr(model, "lm_head", None)
    config = getattr(model, "config", None)
    if lm_head is None or config is None:
        return "the model has no language-model head"
    problem = activation_problem(config.activation_function)
    if problem is not None:
        return problem
    dtype = _compute_dtype(model)
    device = model.transformer.wpe.weight.device.type
    if device != "cpu":
        return f"the model is on {device}; the kernel serves CPU decoding"
    if dtype not in _DTYPES:
        return f"the kernel runs float32 and bfloat16 weights, not {str(dtype).removeprefix('torch.')}"
    modules = [lm_head, model.transformer.wte, model.transformer.wpe]
    for block in model.transformer.h:
        modules += [block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj]
    for module in modules:
        problem = _quantized_problem(module) if hasattr(module, "qweight") else _weight_problem(module, dtype)
        if problem is not None:
            return problem
    return library_problem()


def bf16_cache_pays(model: torch.nn.Module) -> bool:
    """Whether a bf16 key/value cache makes this model's kernel steps cheaper than a float32 one: where its
    attention takes bf16 pair products (multi-query, heads a multiple of 32 wide, a build with AVX-512 BF16).
    Elsewhere the kernel widens every bf16 key and value to fp32 before multiplying, and a bf16 cache was slower
    than a float32 one (a bf16 model's row at 1,600 positions: 1.53 ms of attention against 1.38)."""
    config = getattr(model, "config", None)
    lib = _library()
    return (config is not None and lib is not None and bool(config.multi_query) and config.head_dim % 32 == 0
            and bool(lib.bigcode_attention_bf16_pairs()))


def attach(model: torch.nn.Module, cache_dtype: torch.dtype | None = None) -> CpuDecoder | None:
    """A decoder for a causal LM held on the CPU in float32 or bfloat16 (its caches in `cache_dtype`, by default
    the same), or None when the kernel cannot serve it."""
    if refusal(model) is not None:
        return None
    lib = _library()
    return CpuDecoder(lib, model, cache_dtype) if lib is not None else None


def quantized_matvec(module: torch.nn.Module, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
    """y (B, out) = x (B, in) @ W.T + b of one QuantizedLinear in the kernel, the way a decode step computes it
    (input quantized to int8 per block of 32); for checks against a PyTorch reference. Needs the kernel."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the C decode kernel is not available here")
    keep: list[torch.Tensor] = []

    def raw(t: torch.Tensor) -> int:
        keep.append(t)
        return t.data_ptr()

    bias = raw(module.bias.detach().float().contiguous()) if module.bias is not None else None
    linear = _quantized_linear(lib, module, bias, raw)
    x = x.detach().to(torch.float32).contiguous()
    y = torch.empty((x.shape[0], module.out_features), dtype=torch.float32)
    lib.bigcode_quant_matvec.restype = ctypes.c_int
    status = lib.bigcode_quant_matvec(ctypes.byref(linear), ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()),
                                      x.shape[0], threads)
    if status != 0:
        raise MemoryError("the decode kernel could not allocate its buffers")
    return y


def kernel_argmax(values: torch.Tensor, pieces: int = 1) -> int:
    """The index the kernel's LM head gives as the largest of `values` (1-D) when its chunks split them into
    `pieces` stretches (logits_best.h); for checks against NumPy's argmax. Needs the kernel."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the C decode kernel is not available here")
    values = values.detach().to(torch.float32).contiguous()
    if not 1 <= pieces <= values.numel():
        raise ValueError("pieces must be between 1 and the number of values")
    return int(lib.bigcode_argmax(values.data_ptr(), values.numel(), pieces))
