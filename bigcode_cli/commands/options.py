"""Options shared by every model command, as `Annotated` types, and their choices as str Enums."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer


class Engine(str, Enum):
    native = "native"
    transformers = "transformers"


class Attn(str, Enum):
    auto = "auto"
    eager = "eager"
    sdpa = "sdpa"
    flash = "flash"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


MODEL_HELP = "Model name, alias or checkpoint directory (default: $BIGCODE_MODEL or the bundled model)."

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help=MODEL_HELP, show_default=False)]
EngineOpt = Annotated[Engine, typer.Option("--engine", help="native (fast, default) or transformers (the reference).")]
AttnOpt = Annotated[Attn, typer.Option("--attn", help="Attention backend; auto = flash if usable, else sdpa.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run; auto = cuda, then mps, then cpu.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Weight and compute dtype; auto keeps the checkpoint's.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never touch the network (same as HF_HUB_OFFLINE=1).")]
