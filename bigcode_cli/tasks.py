"""The task table: one row per model head, and everything about a task that more than one module needs.

Loading, the weights check, `models info`, the default models, the REPL's modes, `bigcode finetune`
and the transformers reference engine all read these rows. Adding a head is one row here plus its
nn module in `bigcode_cli.model.gpt_bigcode` (named `model_class`, as in transformers).
Torch-free, so the CLI can read it at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One model head and how the rest of the program refers to it."""

    name: str  # what load(), open_model() and `bigcode models info` call it
    modes: tuple[str, ...]  # the commands (and REPL /mode names) that run it
    model_class: str  # the class in bigcode_cli.model.gpt_bigcode and in transformers
    head: str  # the head's module name, the first part of its checkpoint keys
    described: str  # how messages name the head ("... has no <described> (<head>) head")
    default_model: str  # the bundled checkpoint used without --model
    env_var: str  # the environment variable that replaces default_model
    hint: str  # what to do when a checkpoint lacks this head
    generative: bool = False  # takes a cache and generates; the others score a whole input at once
    tied_head: bool = False  # the head may share `wte` when the config ties word embeddings
    finetune: bool = False  # `bigcode finetune <mode>` trains this head

    @property
    def head_key(self) -> str:
        """The checkpoint key of the head's weight: `lm_head.weight`."""
        return f"{self.head}.weight"

    @property
    def architecture_suffix(self) -> str:
        """How config.json's `architectures` entries for this head end: `ForCausalLM`."""
        return self.model_class.removeprefix("GPTBigCode")


_ROWS = (
    Task("causal-lm", ("complete", "infill"), "GPTBigCodeForCausalLM", "lm_head", "language-model",
         "bigcode-tiny", "BIGCODE_MODEL", "use a causal-LM checkpoint such as the bundled bigcode-tiny",
         generative=True, tied_head=True),
    Task("sequence-classification", ("classify",), "GPTBigCodeForSequenceClassification", "score",
         "sequence-classification", "bigcode-tiny-langid", "BIGCODE_CLASSIFY_MODEL",
         "make one with `bigcode finetune classify`", finetune=True),
    Task("token-classification", ("tag",), "GPTBigCodeForTokenClassification", "classifier",
         "token-classification", "bigcode-tiny-secrets", "BIGCODE_TAG_MODEL",
         "make one with `bigcode finetune tag`", finetune=True),
)

TASKS: dict[str, Task] = {row.name: row for row in _ROWS}

# mode (command / REPL /mode name) -> task name, in table order
MODES: dict[str, str] = {mode: row.name for row in _ROWS for mode in row.modes}
# `bigcode finetune <mode>` -> task name
FINETUNE_MODES: dict[str, str] = {row.modes[0]: row.name for row in _ROWS if row.finetune}
# first part of a checkpoint key -> task name: which head a tensor belongs to
HEADS: dict[str, str] = {row.head: row.name for row in _ROWS}


def task(name: str) -> Task:
    """The row of a task name (an unknown name is a bug in the caller: ValueError)."""
    row = TASKS.get(name)
    if row is None:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return row
