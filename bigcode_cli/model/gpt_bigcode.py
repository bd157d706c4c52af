"""The GPTBigCode model in plain PyTorch: modules named after the checkpoint keys, so loading needs no key map.

Order: KVCache -> Attention -> MLP -> Block -> GPTBigCodeModel -> the three heads.
Imports only torch and the project's config, attention, choices and task table.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bigcode_cli.choices import ACTIVATIONS
from bigcode_cli.model.attention import BACKENDS, AttentionSpec, Backend, MaskInfo, attention_spec
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.tasks import task as task_row

# the function behind each kind of bigcode_cli.choices.ACTIVATIONS: (returns a new tensor, overwrites its input)
_ACTIVATION_FUNCTIONS = {
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: torch.ops.aten.gelu_(x, approximate="tanh")),
    "gelu": (F.gelu, torch.ops.aten.gelu_),
    "relu": (F.relu, torch.relu_),
    "silu": (F.silu, lambda x: F.silu(x, inplace=True)),
    "tanh": (torch.tanh, torch.tanh_),
}


class KVCache:
    """Merged key/value cache of every layer, preallocated for the whole generation and written by index.

    The native engine's implementation of the Cache protocol (bigcode_cli.model.runner).

    Per layer: multi-query (B, capacity, 2*D) with key then value along the last dim;
    multi-head (B, capacity, H, 2*D), the checkpoint's (n_head, 3, head_dim) layout minus the query.
    """

    def __init__(self, layers: list[torch.Tensor], batch: tuple[KVCache, int] | None = None) -> None:
        self.layers = layers
        self.length = 0  # positions written so far
        # a one-row cache made by `split`: (the cache whose rows hold its memory, its row there)
        self.batch = batch

    @classmethod
    def allocate(cls, config: GPTBigCodeConfig, batch: int, capacity: int, *, dtype: torch.dtype,
                 device: torch.device | str) -> KVCache:
        """An empty cache able to hold `capacity` positions for `batch` sequences."""
        D = config.head_dim
        shape = (batch, capacity, 2 * D) if config.multi_query else (batch, capacity, config.n_head, 2 * D)
        return cls([torch.empty(shape, dtype=dtype, device=device) for _ in range(config.n_layer)])

    @property
    def capacity(self) -> int:
        """How many positions fit."""
        return self.layers[0].shape[1]

    def repeat_batch(self, n: int) -> KVCache:
        """Make this one-row cache n identical rows (n samples from one prefill); returns this cache.

        Changes the cache itself, as the Cache protocol (bigcode_cli.model.runner) says.
        """
        self.layers = [layer.expand(n, *layer.shape[1:]).clone() for layer in self.layers]
        return self

    def split(self, n: int) -> list[KVCache]:
        """n one-row caches, each holding this one-row cache's positions (this cache itself when n == 1).

        Their memory is the rows of one new n-row cache (each row contiguous), so a step over all of them
        in order can also run as one batched forward (see NativeRunner.step).
        """
        if n == 1:
            return [self]
        whole = KVCache([layer.expand(n, *layer.shape[1:]).clone() for layer in self.layers])
        whole.length = self.length
        rows = [KVCache([layer[i : i + 1] for layer in whole.layers], batch=(whole, i)) for i in range(n)]
        for row in rows:
            row.length = self.length
        return rows

    def select(self, rows: torch.Tensor) -> KVCache:
        """Keep only the given batch rows, in that order (finished sequences dropped); returns this cache."""
        self.layers = [layer.index_select(0, rows) for layer in self.layers]
        return self

    @property
    def nbytes(self) -> int:
        """Bytes of memory the cache's keys and values take (its whole capacity)."""
        return sum(layer.numel() * layer.element_size() for layer in self.layers)

    def copy_prefix(self, n: int) -> KVCache:
        """A new one-row cache holding a copy of this one-row cache's first n positions (room for n only)."""
        copy = KVCache([layer[:1, :n].clone() for layer in self.layers])
        copy.length = n
        return copy

    def kept_prefix(self, n: int) -> KVCache:
        """The Cache protocol's: itself where it is no split row and at most an eighth (or 64 positions) of its
        capacity lies past n. A finished request's cache kept whole instead of copied: with eight editors'
        1,600-token windows each copy was 10 MB written to fresh pages at every request."""
        if self.batch is None and self.layers[0].shape[0] == 1 and self.capacity <= n + max(64, n // 8):
            self.truncate(n)
            return self
        return self.copy_prefix(n)

    def load_prefix(self, source: KVCache, n: int) -> None:
        """Make this one-row cache hold a copy of `source`'s first n positions; its length becomes n."""
        for into, layer in zip(self.layers, source.layers):
            into[:1, :n].copy_(layer[:1, :n])
        self.length = n

    def truncate(self, n: int) -> None:
        """Forget every position from n on; its length becomes n. Positions are written by index before
        they are read, so the forgotten ones are simply written again by the next tokens."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {n}")
        self.length = n


class Packing(NamedTuple):
    """Front-aligned rows (see front_aligned) held as their real tokens only: (N, ...) between the attentions,
    so LayerNorms, projections and the MLP skip the padding; (B, T, ...) inside them, padded with zeros."""

    keep: torch.Tensor  # (N,) flat index into B*T of each real token, row by row
    pad: torch.Tensor  # (B*T - N,) flat index of each padding position
    starts: torch.Tensor  # (B,) packed index of each row's first token
    batch: int
    width: int

    @classmethod
    def of(cls, lengths: torch.Tensor, width: int) -> Packing:
        """The packing of rows whose first lengths[b] positions are real."""
        real = (torch.arange(width, device=lengths.device) < lengths.unsqueeze(1)).view(-1)  # (B*T,)
        return cls(real.nonzero().squeeze(1), (~real).nonzero().squeeze(1), lengths.cumsum(0) - lengths,
                   lengths.shape[0], width)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        # (B, T, ...) -> (N, ...)
        return t.reshape(self.batch * self.width, *t.shape[2:]).index_select(0, self.keep)

    def unpack(self, t: torch.Tensor) -> torch.Tensor:
        # (N, F) -> (B, T, F), zeros at padding (which causal attention shows to padding queries only)
        out = t.new_empty(self.batch * self.width, t.shape[-1]).index_copy_(0, self.keep, t)
        return out.index_fill_(0, self.pad, 0).view(self.batch, self.width, -1)  # zeroing the padding alone

    def take(self, t: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        # (N, ...) -> (B, 1, ...): position at[b] of each row b
        return t.index_select(0, self.starts + at).unsqueeze(1)


class Step(NamedTuple):
    """What every layer of one forward shares: the backend, its prepared mask, the cache position, the packing."""

    attend: Any
    mask: Any
    start: int  # first position written by this forward
    packing: Packing | None = None  # hidden states between the attentions are (N, C) real tokens, not (B, T, C)


class Attention(nn.Module):
    def __init__(self, config: GPTBigCodeConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.n_embd = config.n_embd
        self.multi_query = config.multi_query
        kv_dim = config.kv_heads * config.head_dim
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.spec: AttentionSpec = attention_spec(
            config.head_dim,
            layer_idx,
            scale_attn_weights=config.scale_attn_weights,
            softmax_in_fp32=config.attention_softmax_in_fp32,
            scale_softmax_in_fp32=config.scale_attention_softmax_in_fp32,
            dropout=config.attn_pdrop,
        )

    def forward(self, x: torch.Tensor, step: Step, cache: torch.Tensor | None, at: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, T, C) or packed (N, C) -> the same; with `at` (B,) (B, 1, C): keys and values of every position,
        # the query of row b at at[b] only
        H, D = self.n_head, self.head_dim
        qkv = self.c_attn(x)
        if step.packing is not None:
            qkv = step.packing.unpack(qkv)  # (N, C + 2 kv) -> (B, T, C + 2 kv)
        B, T, _ = qkv.shape
        if self.multi_query:
            query = qkv[..., : self.n_embd].view(B, T, H, D)
            kv = qkv[..., self.n_embd :]  # (B, T, 2D)
        else:
            qkv = qkv.view(B, T, H, 3 * D)
            query = qkv[..., :D]  # (B, T, H, D)
            kv = qkv[..., D:]  # (B, T, H, 2D)
        if cache is not None:
            end = step.start + T
            cache[:, step.start : end] = kv
            kv = cache[:, :end]  # (B, S, 2D) | (B, S, H, 2D)
            if kv.dtype != qkv.dtype:  # a cache kept narrower than the activations (KVCache.allocate)
                kv = kv.to(qkv.dtype)
        key, value = kv[..., :D], kv[..., D:]
        if at is not None:
            query = _take(query, at)  # (B, 1, H, D)
        out = step.attend(query, key, value, step.mask, self.spec, self.training)  # (B, T|1, C)
        if step.packing is not None and at is None:
            out = step.packing.pack(out)  # (N, C)
        return self.resid_dropout(self.c_proj(out))


class MLP(nn.Module):
    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.inner_dim)
        self.c_proj = nn.Linear(config.inner_dim, config.n_embd)
        self.act, self.act_ = _ACTIVATION_FUNCTIONS[ACTIVATIONS[config.activation_function]]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, T, 4C) -> (B, T, C); without autograd the activation overwrites c_fc's output: one
        # (B, T, 4C) buffer fewer to allocate (on a CPU a fresh large buffer costs a page fault per page)
        hidden = self.c_fc(x)
        hidden = self.act(hidden) if torch.is_grad_enabled() else self.act_(hidden)
        return self.dropout(self.c_proj(hidden))


class Block(nn.Module):
    def __init__(self, config: GPTBigCodeConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, step: Step, cache: torch.Tensor | None, at: torch.Tensor | None = None) -> torch.Tensor:
        # (B, T, C) or packed (N, C) -> the same, or (B, 1, C) for position at[b] of each row only (still caching
        # every position); the residual sums go into the sublayers' fresh outputs, which nothing else holds
        if at is not None:
            residual = _take(x, at) if step.packing is None else step.packing.take(x, at)
        else:
            residual = x
        x = self.attn(self.ln_1(x), step, cache, at).add_(residual)
        return self.mlp(self.ln_2(x)).add_(x)


def _take(x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    # x (B, T, ...) -> (B, 1, ...): position at[b] of each row b
    return x[torch.arange(x.shape[0], device=x.device), at].unsqueeze(1)


def _mask_info(attention_mask: torch.Tensor | None, T: int, start: int, device: torch.device) -> MaskInfo:
    # attention_mask (B, S) with S = start + T covers every position seen so far, 1 = real token
    S = start + T
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    if attention_mask is None and T == 1:
        return MaskInfo(None, None, False)  # one new token sees every cached position
    query_pos = torch.arange(start, S, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    causal = key_pos <= query_pos  # (T, S)
    if attention_mask is None:
        return MaskInfo(causal.unsqueeze(0), None, True)
    key_valid = attention_mask.bool()  # (B, S)
    # a padding query attends to itself only, so no row is empty and no NaN can reach real tokens
    allowed = (causal.unsqueeze(0) & key_valid.unsqueeze(1)) | (key_pos == query_pos).unsqueeze(0)  # (B, T, S)
    return MaskInfo(allowed, key_valid, False, key_valid[:, start:])


def _query_at(info: MaskInfo, at: torch.Tensor) -> MaskInfo:
    # the mask of one real query per row, at position at[b] of the T new ones: (B, 1, S), or none when it sees every key
    if info.allowed is None:
        return info  # one new token (T == 1) sees every cached position
    B = at.shape[0]
    allowed = info.allowed.expand(B, *info.allowed.shape[1:])[torch.arange(B, device=at.device), at].unsqueeze(1)
    if bool(allowed.all()):
        return MaskInfo(None, None, False)
    return MaskInfo(allowed, allowed[:, 0], False, None)


def _positions(attention_mask: torch.Tensor | None, T: int, start: int, device: torch.device) -> torch.Tensor:
    # (B|1, T): real tokens are numbered from 0 whatever the left padding before them
    if attention_mask is None:
        return torch.arange(start, start + T, device=device).unsqueeze(0)
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)[:, -T:]


class GPTBigCodeModel(nn.Module):
    """Embeddings, the blocks and the final LayerNorm: token ids in, hidden states out."""

    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.config = config
        # given storage, nn.Embedding skips its random init, which on the meta device would import torch._dynamo
        # (seconds); loading assigns real weights and training calls init_weights()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, _weight=torch.empty(config.vocab_size, config.n_embd))
        self.wpe = nn.Embedding(config.n_positions, config.n_embd, _weight=torch.empty(config.n_positions, config.n_embd))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.backend: Backend = BACKENDS["sdpa"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False, at: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        # input_ids (B, T); attention_mask (B, start + T) or None; -> hidden states (B, T, C)
        # at (B,): (B, 1, C) of position at[b] of each row (last_only: the last position); the final block then
        # runs its query, attention output and MLP for that position alone (every position's keys and values
        # are still computed and cached)
        # lengths (B,): the rows are front-aligned, real for their first lengths[b] positions (no mask, no cache):
        # computed packed (Packing); without `at` the result is packed too, (N, C)
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        device = input_ids.device
        if last_only:
            at = torch.full((B,), T - 1, dtype=torch.long, device=device)
        info = _mask_info(attention_mask, T, start, device)
        n_head, multi_query = self.config.n_head, self.config.multi_query
        packing = Packing.of(lengths, T) if lengths is not None else None
        step = Step(self.backend.attend, self.backend.prepare(info, n_head, multi_query), start, packing)
        if at is not None and (T > 1 or packing is not None):
            final_step = Step(self.backend.attend, self.backend.prepare(_query_at(info, at), n_head, multi_query),
                              start, packing)
        else:
            final_step, at = step, None  # one new position (B, 1, C): the whole block is already that position's
        positions = _positions(attention_mask, T, start, device)  # (B|1, T)
        if packing is not None:
            input_ids, positions = packing.pack(input_ids), packing.pack(positions.expand(B, T))  # (N,)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))
        layers = cache.layers if cache is not None else [None] * len(self.h)
        last = len(self.h) - 1
        for i, (block, layer_cache) in enumerate(zip(self.h, layers)):
            if i == last:
                x = block(x, final_step, layer_cache, at)
            else:
                x = block(x, step, layer_cache)
        if cache is not None:
            cache.length = start + T
        return self.ln_f(x)


class GPTBigCodePreTrained(nn.Module):
    """What the three heads share: the config, the backbone under `transformer`, backend choice, init."""

    config: GPTBigCodeConfig
    transformer: GPTBigCodeModel

    def set_backend(self, backend: Backend) -> None:
        """Select the attention backend for every layer."""
        self.transformer.backend = backend

    @property
    def backend(self) -> Backend:
        return self.transformer.backend

    def init_weights(self) -> None:
        """GPT-2 initialisation (normal 0.02, residual projections scaled by 1/sqrt(2 * n_layer))."""
        std = self.config.initializer_range
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scale = (2 * self.config.n_layer) ** -0.5 if name.endswith("c_proj") else 1.0
                nn.init.normal_(module.weight, 0.0, std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share lm_head with wte when the config ties them (no-op for the other heads)."""


class GPTBigCodeForCausalLM(GPTBigCodePreTrained):
    """The language model: hidden states projected onto the vocabulary by `lm_head` (tied to `wte`)."""

    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPTBigCodeModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        # (B, T) -> logits (B, T, V), or (B, 1, V) with last_only
        return self.lm_head(self.transformer(input_ids, attention_mask, cache, last_only))


def last_token_index(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_token_id: int | None) -> torch.Tensor:
    """(B,) index of each row's last real token: from the attention mask, else the last non-pad id."""
    B, T = input_ids.shape
    if attention_mask is None and pad_token_id is None:
        return torch.full((B,), T - 1, dtype=torch.long, device=input_ids.device)
    real = attention_mask.bool() if attention_mask is not None else input_ids != pad_token_id
    index = torch.arange(T, device=input_ids.device)
    return (index * real).argmax(-1)


def front_aligned(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(ids with each row's real tokens moved to the front, (B,) lengths) when every row's real tokens are one
    non-empty run (left or right padding); else None.

    Front-aligned, a real token is preceded only by real tokens, so causal attention alone keeps padding out:
    no padding mask, and attention skips the blocks above the diagonal.
    """
    B, T = input_ids.shape
    real = attention_mask.bool()
    lengths = real.sum(-1)  # (B,)
    index = torch.arange(T, device=input_ids.device)
    first = (real * (T - index)).argmax(-1)  # (B,) first real position (the largest weight T - t)
    last = (real * index).argmax(-1)
    if not bool(((lengths > 0) & (last - first + 1 == lengths)).all()):
        return None
    # row b takes its positions first[b], first[b] + 1, ...; past its end it repeats its last token, which
    # only positions after every real one ever see
    take = torch.minimum(first.unsqueeze(1) + index, last.unsqueeze(1))  # (B, T)
    return input_ids.gather(1, take), lengths


class GPTBigCodeForSequenceClassification(GPTBigCodePreTrained):
    """One score per label for the whole sequence, read at its last real token (like transformers)."""

    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPTBigCodeModel(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # (B, T) -> logits (B, num_labels); the final block's query, MLP and ln_f run at the pooled position alone
        aligned = front_aligned(input_ids, attention_mask) if attention_mask is not None else None
        if aligned is not None:
            ids, lengths = aligned  # padded rows front-aligned: causal attention, no padding mask, packed
            packed = lengths if bool((lengths < ids.shape[1]).any()) else None  # without padding nothing to skip
            return self.score(self.transformer(ids, at=lengths - 1, lengths=packed)[:, 0])  # (B, C) -> (B, L)
        last = last_token_index(input_ids, attention_mask, self.config.pad_token_id)
        return self.score(self.transformer(input_ids, attention_mask, at=last)[:, 0])


class GPTBigCodeForTokenClassification(GPTBigCodePreTrained):
    """One score per label for every token."""

    def __init__(self, config: GPTBigCodeConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPTBigCodeModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else 0.1
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.n_embd, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # (B, T) -> logits (B, T, num_labels)
        return self.classifier(self.dropout(self.transformer(input_ids, attention_mask)))


# the heads by class name, which is what a row of bigcode_cli.tasks names
_HEAD_CLASSES: dict[str, type[GPTBigCodePreTrained]] = {cls.__name__: cls for cls in GPTBigCodePreTrained.__subclasses__()}


def model_class(task: str) -> type[GPTBigCodePreTrained]:
    """Our module for a task of bigcode_cli.tasks (`causal-lm` -> GPTBigCodeForCausalLM)."""
    return _HEAD_CLASSES[task_row(task).model_class]
