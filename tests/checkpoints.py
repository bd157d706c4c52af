"""Tiny random GPTBigCode checkpoints written by transformers itself, for tests that compare against it."""

from __future__ import annotations

from pathlib import Path

import torch


def save_checkpoint(directory: Path, task: str = "causal-lm", *, multi_query: bool = True, n_embd: int = 32,
                    n_layer: int = 2, n_head: int = 4, vocab_size: int = 97, n_positions: int = 64,
                    tie: bool = True, scale_softmax: bool = True, num_labels: int = 3, pad_token_id: int | None = 0,
                    seed: int = 0, safe: bool = True, dtype: torch.dtype = torch.float32, **extra) -> Path:
    """Write a random checkpoint for `task` with transformers' save_pretrained and return its directory."""
    from transformers import (
        GPTBigCodeConfig,
        GPTBigCodeForCausalLM,
        GPTBigCodeForSequenceClassification,
        GPTBigCodeForTokenClassification,
    )

    from transformers.utils import logging

    logging.disable_progress_bar()
    classes = {"causal-lm": GPTBigCodeForCausalLM, "sequence-classification": GPTBigCodeForSequenceClassification,
               "token-classification": GPTBigCodeForTokenClassification}
    config = GPTBigCodeConfig(
        n_embd=n_embd, n_layer=n_layer, n_head=n_head, vocab_size=vocab_size, n_positions=n_positions,
        multi_query=multi_query, tie_word_embeddings=tie, scale_attention_softmax_in_fp32=scale_softmax,
        num_labels=num_labels, pad_token_id=pad_token_id, bos_token_id=1, eos_token_id=2, **extra,
    )
    torch.manual_seed(seed)
    model = classes[task](config)
    # random LayerNorm and bias values, so a wrongly wired parameter cannot hide behind ones and zeros
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or "ln_f" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model = model.to(dtype)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=safe)
    return directory


def save_lm_with_tokenizer(directory: Path, *, fim: bool = True, n_positions: int = 128, **kwargs) -> Path:
    """A random causal-LM checkpoint plus a tiny byte-level BPE tokenizer (StarCoder FIM tokens unless fim=False)."""
    from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

    save_checkpoint(directory, "causal-lm", vocab_size=360, n_positions=n_positions, pad_token_id=None, **kwargs)
    specials = STARCODER_SPECIALS if fim else ["<|endoftext|>"]
    save_tokenizer(directory, specials)
    return directory
