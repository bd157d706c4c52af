"""Reading checkpoint weights into our model: safetensors (single or sharded) or .bin, with one copy in memory.

The model is built on the meta device and the loaded tensors are assigned in place of its parameters
(`load_state_dict(assign=True)`), so peak memory is about one copy of the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bigcode_cli.model.checkpoint_files import complete_weight_files, load_bin
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.errors import CheckpointError
from bigcode_cli.model.gpt_bigcode import GPTBigCodePreTrained, model_class
from bigcode_cli.tasks import HEADS, task as task_row

# keys older transformers versions saved that carry no weights we need
_IGNORED_SUFFIXES = (".attn.masked_bias", ".attn.bias")
_IGNORED_KEYS = {"transformer.bias"}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file, memory-mapped where the format allows."""
    if path.suffix != ".safetensors":
        return load_bin(path)  # a pickle: weights_only refuses anything but tensors, so no code can run
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several types for truncated or corrupt files
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({message}); re-download or re-import the checkpoint") from None


def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, keyed like our modules (a bare-backbone checkpoint gets `transformer.`)."""
    tensors: dict[str, torch.Tensor] = {}
    for path in complete_weight_files(directory):
        tensors.update(read_tensors(path))
    if tensors and not any(k.startswith("transformer.") for k in tensors):
        tensors = {f"transformer.{k}": v for k, v in tensors.items()}
    return {k: v for k, v in tensors.items() if kept_key(k)}


def kept_key(name: str) -> bool:
    """Whether a checkpoint key (already prefixed like our modules) carries weights we load."""
    return name not in _IGNORED_KEYS and not name.endswith(_IGNORED_SUFFIXES)


def checkpoint_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype most of the floating-point weights are stored in."""
    counts: dict[torch.dtype, int] = {}
    for tensor in state.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def use_input_major_weights(model: torch.nn.Module) -> None:
    """Store every Linear weight as (in, out) in memory, still seen as the usual (out, in) view.

    F.linear then hands BLAS a plain (M, K) @ (K, N) product, which for the one-row matmuls of decoding
    runs about twice as fast on CPUs as the (out, in) layout (measured: benchmarks/model_speed.py).
    The values and the state_dict keys are unchanged; a tied lm_head keeps sharing wte.
    """
    done: dict[int, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) or isinstance(module, torch.nn.Embedding):
            weight = module.weight
            if weight.dim() != 2 or not weight.is_contiguous():
                continue
            key = weight.data_ptr()
            if key not in done:
                done[key] = weight.detach().t().contiguous().t()
            module.weight = torch.nn.Parameter(done[key], requires_grad=weight.requires_grad)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def build_model(config: GPTBigCodeConfig, task: str, state: dict[str, torch.Tensor], *,
                dtype: torch.dtype, device: torch.device, source: str = "checkpoint",
                new_head: bool = False) -> GPTBigCodePreTrained:
    """Our model for `task` with the given weights; every parameter must come from `state` (or be a new head)."""
    row = task_row(task)
    with torch.device("meta"):
        model = model_class(task)(config)
    expected = set(model.state_dict())
    head = row.head_key
    present = set(state)
    other_heads = {k for k in present if k.split(".")[0] in HEADS}
    # a tied lm_head needs no weights of its own, but a classifier checkpoint is not a language model
    tied = row.tied_head and config.tie_word_embeddings and not other_heads
    missing = expected - present
    if tied:
        missing.discard(head)
    if head in missing and not new_head:
        raise CheckpointError(f"{source} has no {row.described} ({row.head}) head; {row.hint}")
    head_params = {k for k in expected if k.split(".")[0] == row.head}
    if new_head:
        missing -= head_params
    if missing:
        shown = ", ".join(sorted(missing)[:4]) + (" ..." if len(missing) > 4 else "")
        raise CheckpointError(f"{source} does not match its config: missing weights {shown}")
    unexpected = present - expected - other_heads
    if unexpected:
        shown = ", ".join(sorted(unexpected)[:4]) + (" ..." if len(unexpected) > 4 else "")
        raise CheckpointError(f"{source} does not match its config: unexpected weights {shown}")
    usable = {k: v for k, v in state.items() if k in expected and not (new_head and k in head_params)}
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for key, tensor in usable.items():
        want = shapes[key]
        if tensor.shape != want:
            raise CheckpointError(
                f"{source} does not match its config: {key} has shape {tuple(tensor.shape)}, config says {tuple(want)}"
            )
    model.load_state_dict(usable, strict=False, assign=True)
    if new_head:
        for name in head_params:
            module = model.get_submodule(name.rsplit(".", 1)[0])
            module.to_empty(device="cpu")
            torch.nn.init.normal_(module.weight, 0.0, config.initializer_range)
            if getattr(module, "bias", None) is not None:
                torch.nn.init.zeros_(module.bias)
    model.tie_weights()
    model.to(device=device, dtype=dtype)
    model.eval()
    return model
