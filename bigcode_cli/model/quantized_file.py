"""A quantized model's flat state on disk: a safetensors file written without a second copy in memory, and
mapped back in place (the pages are the file's, read when first touched, never copied).

Tensors are laid out widest element first (float32, then fp16 scales, then int8/uint8 blocks), so every
tensor's offset is a multiple of its element size and can be viewed directly from the mapping. The file is
plain safetensors: the `safetensors` package and `read_safetensors_header` read it too.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import torch

from bigcode_cli.errors import CheckpointError
from bigcode_cli.model.checkpoint_files import read_safetensors_header

_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int8: "I8", torch.uint8: "U8"}
_DTYPES = {code: dtype for dtype, code in _CODES.items()}


def write_state(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `state` (contiguous CPU tensors) to the safetensors file `path`, streaming each tensor's bytes."""
    order = sorted(state, key=lambda k: (-state[k].element_size(), k))
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        t = state[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 64)  # data starts 64-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            t = state[name].contiguous()
            if t.numel():
                f.write(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        f.flush()
        os.fsync(f.fileno())


def map_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a file `write_state` made, as views of a private memory map, and its metadata."""
    read_safetensors_header(path)  # sizes add up: a truncated file is refused before anything is mapped
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # copy-on-write: the file is never changed
    start = 8 + length
    metadata = header.pop("__metadata__", {}) or {}
    state = {}
    for name, entry in header.items():
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has dtype {entry['dtype']}, not one bigcode writes")
        begin, end = entry["data_offsets"]
        itemsize = torch.empty((), dtype=dtype).element_size()
        if (start + begin) % itemsize:
            raise CheckpointError(f"{path}: tensor {name} is not aligned; delete the file to have it rebuilt")
        count = (end - begin) // itemsize
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=start + begin) if count else \
            torch.empty(0, dtype=dtype)
        state[name] = flat.reshape(entry["shape"])
    return state, metadata
