"""Every fixed list of choices a user can pick from, written once.

The CLI's str Enums, the REPL's slash-command choices and checks, shell completion, the dtype map of
`bigcode_cli.model.runtime`, the attention backend dict and the config check all derive from these.
Torch-free, so the CLI can read it at import time. `AUTO` is the first choice wherever it is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

AUTO = "auto"

MAX_SEED = 2**63 - 1  # the largest sampling seed: a signed 64-bit integer, as every JSON client can send it

ENGINES = ("native", "transformers")  # native first: the default

# attention implementations; --attn also takes auto (flash when usable, else sdpa)
ATTENTION_BACKENDS = ("eager", "sdpa", "flash")
ATTENTION_CHOICES = (AUTO, *ATTENTION_BACKENDS)

DEVICES = ("cpu", "cuda", "mps")
DEVICE_CHOICES = (AUTO, *DEVICES)

# --dtype name -> the name of the torch dtype the model computes in (torch.float32 ...): one line per dtype
DTYPES: dict[str, str] = {
    "float32": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
}
# weight-only block quantization of a causal LM's matrices (model/quantize.py): --dtype name -> bits per stored
# value; they compute in float32. Whether a load is quantized is `dtype in QUANTIZED_DTYPES`, asked in one place
# (bigcode_cli.model.engine.quantized_bits)
QUANTIZED_DTYPES: dict[str, int] = {
    "int8": 8,
    "int4": 4,
}
DTYPE_CHOICES = (AUTO, *DTYPES, *QUANTIZED_DTYPES)

# how `classify` / `tag` write --output (a FILE, or --ray part files)
OUTPUT_FORMATS = ("jsonl", "parquet")
# how `classify` / `tag` show results on stdout (--format); none given: table on a terminal, else jsonl
RESULT_FORMATS = ("jsonl", "tsv", "table")
# how stdin (or a file with an explicit --input-format) splits into records; auto guesses from the data
INPUT_FORMATS = (AUTO, "lines", "jsonl", "nul")
# which end of a record longer than the context is cut (--truncate)
TRUNCATE_SIDES = ("left", "right")
# `tag --aggregate`: one span per tagged token, or B-/I- pieces merged into whole-word entities
AGGREGATES = ("none", "word")

# fill-in-the-middle prompt orders: prefix-suffix-middle, suffix-prefix-middle (the type, and its values)
FimOrder = Literal["psm", "spm"]
FIM_ORDERS: tuple[str, ...] = get_args(FimOrder)
# `bigcode serve --fim-order`: auto = spm where the model has FIM tokens
SERVE_FIM_ORDERS = (AUTO, *FIM_ORDERS)

# `--speculate`: n-gram drafts from the request's own tokens verified in each decode step, or none; the first
# is the default (chosen by benchmarks/speculation.py, README "Speculation")
Speculate = Literal["ngram", "off"]
SPECULATE_CHOICES: tuple[str, ...] = get_args(Speculate)
SPECULATE_DEFAULT = SPECULATE_CHOICES[0]

# `bigcode eval TASK`: HumanEval, its single- and multi-line infilling variants, a MultiPL-E file (--dataset)
EVAL_TASKS = ("humaneval", "humaneval-infill-single", "humaneval-infill-multi", "multipl-e")

# config.json's activation_function names -> the function they are (several names, one function)
ACTIVATIONS: dict[str, str] = {
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}


def listed(choices: Iterable[str]) -> str:
    """'a, b or c': choices as a message lists them."""
    items = list(choices)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
