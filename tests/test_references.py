"""A file path named in the code, the scripts or the docs (`kernels/cpu_decode.py`, `serve/worker.py`) is
a file that exists: a move or a rename updates every mention, or this fails."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["bigcode_cli/**/*", "scripts/**/*", "benchmarks/**/*", "docs/**/*", "tests/*.py", "README.md"]
SUFFIXES = (".py", ".c", ".h", ".md", ".sh", ".toml")
# a path with at least one directory, ending in a source or doc file
PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)+[\w-]+\.(?:py|c|h|sh|md))\b")
# paths of other projects or of outputs, named as examples
NOT_OURS = {
    "megatron/data/gpt_dataset.py",  # Megatron-LM's FIM code, cited in generation/fim.py
    "python/stdlib/json/decoder.py",  # a corpus file's path, in scripts/bundled/corpus.py
    "OUT/gpu_check.md",  # the report benchmarks/gpu_check.py writes under $OUT
    "sys/syscall.h",  # a system header, included by kernels/amx_tiles.h
}


def _sources() -> list[Path]:
    found = {path for pattern in SOURCES for path in ROOT.glob(pattern)}
    here = Path(__file__).resolve()  # names stale paths on purpose
    return sorted(p for p in found if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
                  and p.resolve() != here)


def _exists(reference: str, mentioned_in: Path) -> bool:
    """Relative to the repository, to the package, or to the mentioning file's directory or its parent."""
    bases = (ROOT, ROOT / "bigcode_cli", mentioned_in.parent, mentioned_in.parent.parent)
    return any((base / reference).exists() for base in bases)


def test_every_named_file_exists():
    stale = [f"{path.relative_to(ROOT)}: {match.group(1)}"
             for path in _sources()
             for match in PATH.finditer(path.read_text(encoding="utf-8", errors="replace"))
             if match.group(1) not in NOT_OURS and not _exists(match.group(1), path)]
    assert stale == []


def test_a_stale_name_is_caught(tmp_path):
    note = ROOT / "bigcode_cli" / "serve" / "__init__.py"
    assert _exists("worker.py", note) and _exists("kernels/cpu_decode.py", note)
    assert not _exists("server/worker.py", note) and not _exists("bigcode_cli/cpu_decode.py", note)
