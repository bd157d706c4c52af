"""Whether a checkpoint's config describes its weights (layer count and every tensor's shape), checked
before either engine builds a model from the config.

A config is as untrusted as the rest of a checkpoint: one that says n_layer 10^9 beside two saved layers
would have our model (even on the meta device) and transformers' from_pretrained build modules for ever,
memory growing, before any weight was compared. So the weight files' headers are compared first with a
one-layer model of the same config on the meta device (which allocates nothing), layer by layer.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from bigcode_cli.errors import CheckpointError
from bigcode_cli.model.checkpoint_files import complete_weight_files, tensor_infos
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.gpt_bigcode import model_class
from bigcode_cli.model.weights import kept_key

_LAYER = re.compile(r"^transformer\.h\.(\d+)\.")


def check_weights_match_config(directory: Path, config: GPTBigCodeConfig, task: str) -> None:
    """CheckpointError naming the first mismatch between config.json and the weight files' headers."""
    infos = tensor_infos(complete_weight_files(directory))
    bare = infos and not any(t.name.startswith("transformer.") for t in infos)  # a backbone saved on its own
    shapes = {f"transformer.{t.name}" if bare else t.name: t.shape for t in infos}
    shapes = {name: shape for name, shape in shapes.items() if kept_key(name)}
    layers = sorted({int(m.group(1)) for name in shapes if (m := _LAYER.match(name))})
    mismatch = f"{directory} does not match its config"
    if len(layers) != config.n_layer:
        raise CheckpointError(f"{mismatch}: config.json says n_layer {config.n_layer}, the weights hold "
                              f"{len(layers)} layer{'s' if len(layers) != 1 else ''}")
    if layers != list(range(config.n_layer)):
        raise CheckpointError(f"{mismatch}: its layers are numbered {', '.join(map(str, layers[:4]))}"
                              f"{' ...' if len(layers) > 4 else ''}, not 0 to {config.n_layer - 1}")
    with torch.device("meta"):
        one_layer = model_class(task)(dataclasses.replace(config, n_layer=1))
    wanted = {name: tuple(tensor.shape) for name, tensor in one_layer.state_dict().items()}
    for name, shape in shapes.items():
        want = wanted.get(_LAYER.sub("transformer.h.0.", name))
        if want is not None and tuple(shape) != want:
            raise CheckpointError(f"{mismatch}: {name} has shape {tuple(shape)}, config.json says {want}")
