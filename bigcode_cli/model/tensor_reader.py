"""Reading a checkpoint one tensor (or a few rows of one) at a time, so that converting it never holds it all.

Loading for quantization must fit in about the quantized size: the float checkpoint can be bigger than
memory. A memory map does not help with that on its own: every page read stays mapped, and counted
in the process's resident memory, until the whole map is closed. So safetensors files are read with
plain positioned reads into a buffer the size of the piece asked for; the kernel's page cache is not
ours to count. `.bin` checkpoints (pickles) can only be loaded whole (memory-mapped where torch can).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from bigcode_cli.errors import CheckpointError
from bigcode_cli.model.checkpoint_files import complete_weight_files, load_bin, read_safetensors_header

_TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                 "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                 "BOOL": torch.bool}
# rows read per piece of a big matrix: a piece is at most this many bytes
PIECE_BYTES = 16 * 1024 * 1024


class _Entry:
    """Where one tensor lives: a safetensors file and byte offset, or a tensor of a loaded .bin."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, path: Path | None = None, offset: int = 0,
                 tensor: torch.Tensor | None = None) -> None:
        self.shape, self.dtype, self.path, self.offset, self.tensor = shape, dtype, path, offset, tensor


def _safetensors_entries(path: Path) -> dict[str, _Entry]:
    read_safetensors_header(path)  # validates the header against the file size
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    entries = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in _TORCH_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {entry['dtype']}, which bigcode cannot read")
        entries[name] = _Entry(tuple(entry["shape"]), _TORCH_DTYPES[entry["dtype"]], path,
                               8 + length + entry["data_offsets"][0])
    return entries


class TensorReader:
    """The tensors of a checkpoint directory by name, read on demand, keyed like our modules."""

    def __init__(self, directory: Path) -> None:
        entries: dict[str, _Entry] = {}
        for path in complete_weight_files(directory):
            if path.suffix == ".safetensors":
                entries.update(_safetensors_entries(path))
            else:
                entries.update({k: _Entry(tuple(t.shape), t.dtype, tensor=t) for k, t in load_bin(path).items()})
        if entries and not any(k.startswith("transformer.") for k in entries):
            entries = {f"transformer.{k}": v for k, v in entries.items()}
        self._entries = entries

    def keys(self) -> list[str]:
        """Every tensor name."""
        return list(self._entries)

    def meta(self, name: str) -> torch.Tensor:
        """A meta tensor with the shape and dtype of `name`, for validation without reading."""
        entry = self._entries[name]
        return torch.empty(entry.shape, dtype=entry.dtype, device="meta")

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Tensor `name` (or its rows [start, stop) along the first dimension) as a new CPU tensor."""
        entry = self._entries[name]
        start, stop = rows if rows is not None else (0, entry.shape[0] if entry.shape else 1)
        if entry.tensor is not None:
            t = entry.tensor if rows is None else entry.tensor[start:stop]
            return t.clone()
        row_numel = 1
        for d in entry.shape[1:]:
            row_numel *= d
        itemsize = torch.empty((), dtype=entry.dtype).element_size()
        shape = entry.shape if rows is None else (stop - start, *entry.shape[1:])
        nbytes = (stop - start) * row_numel * itemsize if entry.shape else itemsize
        buffer = bytearray(nbytes)
        try:
            with open(entry.path, "rb") as f:
                f.seek(entry.offset + start * row_numel * itemsize)
                got = f.readinto(buffer)
        except OSError as exc:
            raise CheckpointError(f"cannot read {entry.path}: {exc.strerror or exc}") from None
        if got != nbytes:
            raise CheckpointError(f"{entry.path} is truncated (tensor {name}); re-download or re-import the checkpoint")
        if nbytes == 0:
            return torch.empty(shape, dtype=entry.dtype)
        return torch.frombuffer(buffer, dtype=entry.dtype).reshape(shape)

    def pieces(self, name: str):
        """Tensor `name` as successive row ranges of at most PIECE_BYTES: yields (start, rows tensor)."""
        entry = self._entries[name]
        row_bytes = max(1, torch.empty((), dtype=entry.dtype).element_size())
        for d in entry.shape[1:]:
            row_bytes *= d
        step = max(1, PIECE_BYTES // row_bytes)
        for start in range(0, entry.shape[0], step):
            stop = min(entry.shape[0], start + step)
            yield start, self.read(name, (start, stop))
