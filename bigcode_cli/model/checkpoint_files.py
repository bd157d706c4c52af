"""A checkpoint directory read without loading its weights: which files it has, safetensors headers,
sha256 hashes, the remote-code check and the summary `bigcode models info` shows.

Library code: no typer or rich; torch is imported only to read `.bin` weights.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.errors import CheckpointError
from bigcode_cli.tasks import TASKS

# the only files a pull fetches besides the weights
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
WEIGHT_LAYOUTS = (("model.safetensors.index.json", "model.safetensors"),
                  ("pytorch_model.bin.index.json", "pytorch_model.bin"))

# bytes per element of each safetensors dtype
_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_MAX_HEADER = 100 * 1024 * 1024
_HASH_CHUNK = 4 * 1024 * 1024


class TensorInfo(NamedTuple):
    """One tensor as a safetensors header describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n


def weight_files(directory: Path) -> list[Path] | None:
    """The checkpoint's weight files (safetensors preferred, shards in index order), None if it has none."""
    for index_name, single in WEIGHT_LAYOUTS:
        index = directory / index_name
        if index.is_file():
            shards = index_shards(index)
            return [directory / s for s in shards]
        if (directory / single).is_file():
            return [directory / single]
    return None


def index_shards(index: Path) -> list[str]:
    """The shard file names a `*.index.json` names, in order; refuses names that leave the directory."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index} is not a valid shard index ({exc})") from None
    for shard in shards:
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index} names an invalid shard file {shard!r}")
    return shards


def complete_weight_files(directory: Path) -> list[Path]:
    """Like weight_files, but every file must exist: raises CheckpointError otherwise."""
    files = weight_files(directory)
    if files is None:
        raise CheckpointError(
            f"{directory} has no weights (model.safetensors, sharded safetensors or pytorch_model.bin)")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{directory} is missing weight shard(s) {', '.join(missing)}")
    return files


def has_weights(directory: Path) -> bool:
    """Whether every weight file the directory needs is present."""
    try:
        files = weight_files(directory)
    except CheckpointError:
        return False
    return bool(files) and all(f.is_file() for f in files)


def read_safetensors_header(path: Path) -> list[TensorInfo]:
    """The tensors of a safetensors file, checked against the file size; CheckpointError if it does not add up."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise CheckpointError(f"{path} is truncated (no safetensors header)")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER:
                raise CheckpointError(f"{path} is not a safetensors file (header of {length} bytes)")
            raw = f.read(length)
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) != length:
        raise CheckpointError(f"{path} is truncated (incomplete safetensors header)")
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt (its safetensors header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupt (bad safetensors header)")
    tensors: list[TensorInfo] = []
    data_size = size - 8 - length
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} is corrupt (bad header entry for {name})") from None
        info = TensorInfo(name, dtype, shape)
        if dtype not in _DTYPE_SIZES or not (0 <= begin <= end) or end - begin != info.numel * _DTYPE_SIZES[dtype]:
            raise CheckpointError(f"{path} is corrupt (tensor {name} does not match its byte range)")
        end_max = max(end_max, end)
        tensors.append(info)
    if end_max != data_size:
        raise CheckpointError(
            f"{path} is truncated or corrupt: the header describes {end_max} bytes of data, the file holds {data_size}")
    return tensors


def load_bin(path: Path) -> dict[str, Any]:
    """A `.bin` state dict, loaded with weights_only=True (never runs pickled code), memory-mapped when possible."""
    import torch

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy, non-zip format
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot load {path} with weights_only=True ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    return state


def tensor_infos(files: list[Path]) -> list[TensorInfo]:
    """Every tensor of the weight files, from headers (safetensors) or a memory-mapped load (.bin)."""
    infos: list[TensorInfo] = []
    for path in files:
        if path.suffix == ".safetensors":
            infos.extend(read_safetensors_header(path))
        else:
            for name, t in load_bin(path).items():
                infos.append(TensorInfo(name, _torch_dtype_code(str(t.dtype)), tuple(t.shape)))
    return infos


def _torch_dtype_code(dtype: str) -> str:
    name = dtype.removeprefix("torch.")
    return {v: k for k, v in _DTYPE_NAMES.items()}.get(name, name.upper())


def check_weights(directory: Path) -> None:
    """Every weight file is present and readable: safetensors headers add up, .bin files load safely."""
    tensor_infos(complete_weight_files(directory))


def _json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file's top-level object, or None when it is missing, unreadable or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_remote_code(directory: Path) -> None:
    """Refuse a checkpoint whose config or tokenizer needs code from the hub: bigcode never runs it."""
    for name in ("config.json", "tokenizer_config.json"):
        path = directory / name
        data = _json_object(path)
        if data is None and name == "config.json" and path.is_file():
            raise CheckpointError(f"{path} is not valid JSON")
        if data and (data.get("auto_map") or data.get("trust_remote_code")):
            raise CheckpointError(
                f"{path} asks for remote code (auto_map): bigcode never runs code shipped with a checkpoint; "
                "use a checkpoint saved with transformers' built-in gpt_bigcode classes")


def check_checkpoint(directory: Path) -> GPTBigCodeConfig:
    """A usable checkpoint directory: config.json present, no remote code, a gpt_bigcode config."""
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory} has no config.json: it is not a checkpoint directory")
    check_remote_code(directory)
    return GPTBigCodeConfig.from_file(directory / "config.json")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the hub uses as the ETag of small, non-LFS files)."""
    digest = hashlib.sha1()
    digest.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(directory: Path, *, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of every file below directory."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel not in skip:
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def fim_style(directory: Path) -> str | None:
    """The fill-in-the-middle token spelling: 'starcoder' (<fim_prefix>), 'santacoder' (<fim-prefix>) or None."""
    tokens: set[str] = set()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        data = _json_object(directory / name)
        if data is None:
            continue
        for entry in data.get("added_tokens") or []:
            if isinstance(entry, dict):
                tokens.add(str(entry.get("content")))
        for entry in (data.get("added_tokens_decoder") or {}).values():
            if isinstance(entry, dict):
                tokens.add(str(entry.get("content")))
        for entry in data.get("additional_special_tokens") or []:
            tokens.add(entry.get("content") if isinstance(entry, dict) else str(entry))
    if "<fim_prefix>" in tokens:
        return "starcoder"
    if "<fim-prefix>" in tokens:
        return "santacoder"
    return None


def tasks_present(config: GPTBigCodeConfig, names: list[str]) -> list[str]:
    """Which task heads the checkpoint has, from its architectures and its tensor names."""
    found: set[str] = set()
    for arch in config.architectures or []:
        found.update(row.name for row in TASKS.values() if str(arch).endswith(row.architecture_suffix))
    for name in names:
        found.update(row.name for row in TASKS.values() if name == row.head_key or name.endswith("." + row.head_key))
    return [t for t in TASKS if t in found]


def disk_size(directory: Path) -> int:
    """Bytes the checkpoint's files take (symlinked blobs counted at their target)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _parameter_count(config: GPTBigCodeConfig, infos: list[TensorInfo]) -> int | None:
    """Parameters in the weights; a tied lm_head (saved by .bin checkpoints) is counted once."""
    if not infos:
        return None
    names = {t.name for t in infos}
    tied = config.tie_word_embeddings and any(n.endswith("wte.weight") for n in names)
    tied_heads = tuple(row.head_key for row in TASKS.values() if row.tied_head)
    return sum(t.numel for t in infos if not (tied and t.name.endswith(tied_heads)))


def summarize(directory: Path) -> dict[str, Any]:
    """Config and weights summary of a checkpoint directory, without loading the weights."""
    config = check_checkpoint(directory)
    files = weight_files(directory) or []
    infos = tensor_infos([f for f in files if f.is_file()]) if files else []
    floating = Counter()
    for t in infos:
        if t.dtype in _DTYPE_NAMES:
            floating[_DTYPE_NAMES[t.dtype]] += t.numel
    dtype = floating.most_common(1)[0][0] if floating else config.torch_dtype
    tasks = tasks_present(config, [t.name for t in infos])
    labels = config.labels() if any(not TASKS[t].generative for t in tasks) else []
    return {
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "multi_query": config.multi_query,
        "n_positions": config.n_positions,
        "vocab_size": config.vocab_size,
        "fim": fim_style(directory),
        "tasks": tasks,
        "labels": labels,
        "parameters": _parameter_count(config, infos),
        "dtype": dtype,
        "weights": [f.name for f in files],
        "weights_complete": bool(files) and all(f.is_file() for f in files),
        "size_bytes": disk_size(directory),
    }
