"""Attention backends behind one signature, chosen once per model from a local dict.

Shapes used throughout:
    query  (B, T, H, D)           T new positions, H query heads
    key    (B, S, D)   multi-query: the one key/value head shared by all query heads
           (B, S, H, D) multi-head
    value  same as key
    output (B, T, H * D)

A backend is a pair of functions: `prepare` turns the model's `MaskInfo` into whatever the
backend wants (once per forward, shared by all layers) and `attend` runs one layer.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from bigcode_cli.choices import ATTENTION_BACKENDS, ATTENTION_CHOICES
from bigcode_cli.errors import BackendError


class AttentionSpec(NamedTuple):
    """Per-layer constants of the attention math."""

    scale: float  # 1/sqrt(head_dim), or 1 without scale_attn_weights
    softmax_in_fp32: bool
    layer_scale: float  # > 1 with scale_attention_softmax_in_fp32: scores are unscaled inside the fp32 softmax
    dropout: float


class MaskInfo(NamedTuple):
    """What every backend needs to know about which keys each query may see."""

    allowed: torch.Tensor | None  # (B, T, S) bool, True = may attend; None = every key is visible
    key_valid: torch.Tensor | None  # (B, S) bool, False at padding; None = no padding
    causal: bool  # allowed is exactly the causal mask (no padding)
    query_valid: torch.Tensor | None = None  # (B, T) bool, False at padding queries; None = every query is real


class Backend(NamedTuple):
    """A named attention implementation."""

    name: str
    prepare: Callable[[MaskInfo, int, bool], Any]
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any, AttentionSpec, bool], torch.Tensor]


_mask_values: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def mask_value(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The most negative finite value of a dtype, as a scalar tensor cached per dtype/device."""
    key = (dtype, device)
    value = _mask_values.get(key)
    if value is None:
        value = torch.full([], torch.finfo(dtype).min, dtype=dtype, device=device)
        _mask_values[key] = value
    return value


def _softmax(scores: torch.Tensor, blocked: torch.Tensor | None, spec: AttentionSpec, out_dtype: torch.dtype) -> torch.Tensor:
    # scores (..., S) in the compute dtype, already multiplied by scale / layer_scale
    if spec.softmax_in_fp32 and scores.dtype != torch.float32:
        scores = scores.float()
        if spec.layer_scale != 1.0:
            scores = scores * spec.layer_scale
    if blocked is not None:
        scores = scores.masked_fill(blocked, mask_value(scores.dtype, scores.device))
    return torch.softmax(scores, dim=-1).to(out_dtype)


# ---------------------------------------------------------------- eager


def _eager_prepare(info: MaskInfo, n_head: int, multi_query: bool) -> torch.Tensor | None:
    if info.allowed is None:
        return None
    blocked = ~info.allowed  # (B, T, S)
    return blocked.unsqueeze(2) if multi_query else blocked.unsqueeze(1)  # (B, T, 1, S) | (B, 1, T, S)


def eager_attention(query, key, value, blocked, spec: AttentionSpec, training: bool) -> torch.Tensor:
    """The reference math: explicit scores, fp32 softmax, MQA as one batched matmul without repeating K/V."""
    B, T, H, D = query.shape
    pre = spec.scale / spec.layer_scale if (spec.softmax_in_fp32 and query.dtype != torch.float32) else spec.scale
    if key.dim() == 3:
        S = key.shape[1]
        # (B, T*H, D) @ (B, D, S) -> (B, T*H, S): every query row of every head against the single key
        scores = torch.bmm(query.reshape(B, T * H, D), key.transpose(1, 2)).mul_(pre).view(B, T, H, S)
        probs = _softmax(scores, blocked, spec, query.dtype)
        if training and spec.dropout:
            probs = F.dropout(probs, spec.dropout)
        return torch.bmm(probs.view(B, T * H, S), value).view(B, T, H * D)  # (B, T*H, D) -> (B, T, H*D)
    q = query.transpose(1, 2)  # (B, H, T, D)
    scores = torch.matmul(q, key.permute(0, 2, 3, 1)).mul_(pre)  # (B, H, T, S)
    probs = _softmax(scores, blocked, spec, query.dtype)
    if training and spec.dropout:
        probs = F.dropout(probs, spec.dropout)
    out = torch.matmul(probs, value.transpose(1, 2))  # (B, H, T, D)
    return out.transpose(1, 2).reshape(B, T, H * D)


# ---------------------------------------------------------------- sdpa


class _SdpaMask(NamedTuple):
    mask: torch.Tensor | None  # bool, True = may attend, broadcastable to the backend's score shape
    causal: bool  # use is_causal instead of a mask (no padding, T == S)
    rows: bool  # multi-query only: run all T*H query rows as one head (decoding) instead of enable_gqa


def _sdpa_prepare(info: MaskInfo, n_head: int, multi_query: bool) -> _SdpaMask:
    if info.allowed is None:
        return _SdpaMask(None, False, True)
    B, T, S = info.allowed.shape
    if info.causal and T == S:
        return _SdpaMask(None, True, False)
    if multi_query and T == 1:
        # one new position: its H query rows share the single key; row h sees what the position sees
        return _SdpaMask(info.allowed.unsqueeze(2).expand(B, 1, n_head, S).reshape(B, 1, n_head, S), False, True)
    # (B, 1, T, S) broadcast over heads; for T > 1 this beats expanding the mask to T*H rows (measured ~1.5x)
    return _SdpaMask(info.allowed.unsqueeze(1), False, False)


def sdpa_attention(query, key, value, mask: _SdpaMask, spec: AttentionSpec, training: bool) -> torch.Tensor:
    """torch's scaled_dot_product_attention; MQA runs as a single head of T*H query rows, K/V never repeated."""
    B, T, H, D = query.shape
    dropout = spec.dropout if training else 0.0
    if key.dim() == 3:
        k = key.unsqueeze(1)  # (B, 1, S, D)
        v = value.unsqueeze(1)
        if mask.rows:
            q = query.reshape(B, 1, T * H, D)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.mask, dropout_p=dropout, scale=spec.scale)
            return out.view(B, T, H * D)  # (B, 1, T*H, D) -> (B, T, H*D)
        # heads as heads, the single K/V head broadcast by enable_gqa
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), k, v, attn_mask=mask.mask, is_causal=mask.causal, dropout_p=dropout,
            scale=spec.scale, enable_gqa=True,
        )  # (B, H, T, D)
        return out.transpose(1, 2).reshape(B, T, H * D)
    out = F.scaled_dot_product_attention(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=mask.mask,
        is_causal=mask.causal,
        dropout_p=dropout,
        scale=spec.scale,
    )  # (B, H, T, D)
    return out.transpose(1, 2).reshape(B, T, H * D)


# ---------------------------------------------------------------- flash


class _FlashMask(NamedTuple):
    key_valid: torch.Tensor | None  # (B, S) bool; None = no padding
    causal: bool
    query_valid: torch.Tensor | None  # (B, T) bool; None = every query is real


def _flash_prepare(info: MaskInfo, n_head: int, multi_query: bool) -> _FlashMask:
    if info.key_valid is not None and bool(info.key_valid.all()):
        return _FlashMask(None, info.allowed is not None, None)
    return _FlashMask(info.key_valid, info.allowed is not None, info.query_valid)


def flash_attention(query, key, value, mask: _FlashMask, spec: AttentionSpec, training: bool) -> torch.Tensor:
    """flash-attn 2 kernels (CUDA, fp16/bf16); MQA natively; padding through the varlen kernel."""
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    B, T, H, D = query.shape
    if key.dim() == 3:
        key, value = key.unsqueeze(2), value.unsqueeze(2)  # (B, S, 1, D)
    dropout = spec.dropout if training else 0.0
    if mask.key_valid is None:
        # flash aligns the causal mask bottom-right, which is what decoding with a cache needs
        out = flash_attn_func(query, key, value, dropout_p=dropout, softmax_scale=spec.scale, causal=mask.causal)
        return out.reshape(B, T, H * D)
    S = key.shape[1]
    key_valid = mask.key_valid  # (B, S); each real query sees every valid key up to its own (causal, bottom-right)
    query_valid = mask.query_valid if mask.query_valid is not None else key_valid.new_ones((B, T))  # (B, T)
    q_index = query_valid.reshape(-1).nonzero().squeeze(1)
    k_index = key_valid.reshape(-1).nonzero().squeeze(1)
    q_lens = query_valid.sum(1, dtype=torch.int32)
    k_lens = key_valid.sum(1, dtype=torch.int32)
    cu_q = F.pad(q_lens.cumsum(0, dtype=torch.int32), (1, 0))
    cu_k = F.pad(k_lens.cumsum(0, dtype=torch.int32), (1, 0))
    out = flash_attn_varlen_func(
        query.reshape(B * T, H, D)[q_index],
        key.reshape(B * S, key.shape[2], D)[k_index],
        value.reshape(B * S, value.shape[2], D)[k_index],
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=int(q_lens.max()),
        max_seqlen_k=int(k_lens.max()),
        dropout_p=dropout,
        softmax_scale=spec.scale,
        causal=mask.causal,
    )  # (valid queries, H, D)
    full = query.new_zeros(B * T, H, D)
    full[q_index] = out
    return full.view(B, T, H * D)


_FUNCTIONS = {
    "eager": (_eager_prepare, eager_attention),
    "sdpa": (_sdpa_prepare, sdpa_attention),
    "flash": (_flash_prepare, flash_attention),
}
# one backend per name of bigcode_cli.choices.ATTENTION_BACKENDS, in that order (a name without functions fails here)
BACKENDS: dict[str, Backend] = {name: Backend(name, *_FUNCTIONS[name]) for name in ATTENTION_BACKENDS}


def flash_problem(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why flash-attn cannot run here, or None when it can."""
    if device.type != "cuda":
        return f"flash-attn needs a CUDA GPU and the model is on {device.type}"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"flash-attn runs in float16 or bfloat16, not {str(dtype).removeprefix('torch.')} (use --dtype bfloat16)"
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "the flash-attn package is not installed (pip install 'bigcode-cli[flash]')"
    return None


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """Turn --attn into a backend this machine can run; `auto` is flash when usable, else sdpa."""
    if name == "auto":
        return BACKENDS["flash" if flash_problem(device, dtype) is None else "sdpa"]
    if name not in BACKENDS:
        raise BackendError(f"unknown attention backend {name!r}; choose one of {', '.join(ATTENTION_CHOICES)}")
    if name == "flash":
        problem = flash_problem(device, dtype)
        if problem:
            raise BackendError(f"--attn flash is unavailable: {problem}; eager and sdpa work here")
    return BACKENDS[name]


def attention_spec(head_dim: int, layer_idx: int, *, scale_attn_weights: bool, softmax_in_fp32: bool,
                   scale_softmax_in_fp32: bool, dropout: float) -> AttentionSpec:
    """The constants of one layer's attention, following the GPTBigCode config flags."""
    scale = 1.0 / math.sqrt(head_dim) if scale_attn_weights else 1.0
    layer_scale = float(layer_idx + 1) if (scale_softmax_in_fp32 and softmax_in_fp32) else 1.0
    return AttentionSpec(scale, softmax_in_fp32, layer_scale, dropout)
