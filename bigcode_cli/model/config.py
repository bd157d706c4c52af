"""GPTBigCodeConfig: the model's hyper-parameters, read from and written to Hugging Face config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigcode_cli.choices import ACTIVATIONS
from bigcode_cli.errors import ConfigError
PROBLEM_TYPES = (None, "single_label_classification", "multi_label_classification", "regression")


@dataclass
class GPTBigCodeConfig:
    """Every field of a transformers `gpt_bigcode` config, with the Hugging Face names and defaults."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_pytorch_tanh"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    use_cache: bool = True
    attention_softmax_in_fp32: bool = True
    scale_attention_softmax_in_fp32: bool = True
    multi_query: bool = True
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None
    id2label: dict[int, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)
    problem_type: str | None = None
    classifier_dropout: float | None = None
    torch_dtype: str | None = None
    architectures: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    model_type: str = "gpt_bigcode"

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in (self.id2label or {}).items()}
        self.label2id = {str(k): int(v) for k, v in (self.label2id or {}).items()}
        if self.id2label and not self.label2id:
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.validate()

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads: 1 for multi-query, n_head otherwise."""
        return 1 if self.multi_query else self.n_head

    @property
    def inner_dim(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def num_labels(self) -> int:
        """Number of classes of a classification head (2 when the config names none, like transformers)."""
        return len(self.id2label) if self.id2label else 2

    def labels(self) -> list[str]:
        """Label names ordered by class index."""
        if not self.id2label:
            return [f"LABEL_{i}" for i in range(self.num_labels)]
        return [self.id2label[i] for i in range(len(self.id2label))]

    def validate(self) -> None:
        """Refuse a config that cannot describe a working GPTBigCode model."""
        if self.model_type != "gpt_bigcode":
            raise ConfigError(
                f"model_type is {self.model_type!r}, not 'gpt_bigcode': this tool runs GPTBigCode checkpoints "
                "(SantaCoder, StarCoder and their relatives) only"
            )
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) is not divisible by n_head ({self.n_head})")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ConfigError(f"config field n_inner must be a positive integer or null, got {self.n_inner!r}")
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation_function {self.activation_function!r}; supported: {', '.join(ACTIVATIONS)}"
            )
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"unknown problem_type {self.problem_type!r}")
        if self.id2label and sorted(self.id2label) != list(range(len(self.id2label))):
            raise ConfigError("id2label must number its labels 0..N-1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTBigCodeConfig:
        """Build a config from a config.json dictionary; unknown keys are kept in `extra`."""
        if not isinstance(data, dict):
            raise ConfigError("config.json does not hold a JSON object")
        data = dict(data)
        if "model_type" not in data:
            raise ConfigError("config.json has no model_type; it is not a transformers checkpoint config")
        if "dtype" in data and "torch_dtype" not in data:
            data["torch_dtype"] = data.pop("dtype")
        if "num_labels" in data and "id2label" not in data:
            data["id2label"] = {i: f"LABEL_{i}" for i in range(int(data["num_labels"]))}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config.json has a field of the wrong type: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> GPTBigCodeConfig:
        """Read a config.json file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist: a checkpoint needs a config.json") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dictionary transformers reads back."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data.update(self.extra)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        data["num_labels"] = self.num_labels
        if not self.id2label:
            del data["id2label"], data["label2id"]
        return {k: v for k, v in data.items() if v is not None or k in ("n_inner", "pad_token_id")}

    def save(self, directory: str | Path) -> Path:
        """Write config.json into a checkpoint directory."""
        path = Path(directory) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path
