"""Copy a checkpoint into the package's bundled models, storing its weights in bfloat16 to keep the wheel small,
with the manifest of file hashes that `bigcode models verify` checks.

    python scripts/bundled/ship.py runs/langid bigcode_cli/bundled/bigcode-tiny-langid

On a CPU the package computes in float32 anyway (`--dtype auto` upcasts half-precision checkpoints there).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bigcode_cli.store.writing import record_hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    tmp = args.dest.with_name(args.dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in args.source.iterdir():
        if item.name == "model.safetensors":
            state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
                     for k, v in load_file(str(item)).items()}
            save_file(state, str(tmp / item.name), metadata={"format": "pt"})
        elif item.name == "config.json":
            config = json.loads(item.read_text())
            config["torch_dtype"] = "bfloat16"
            config.pop("dtype", None)
            (tmp / item.name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        elif item.is_file() and item.name != "manifest.json":
            shutil.copy(item, tmp / item.name)
    record_hashes(tmp, {"source": "bundled", "name": args.dest.name})  # what `bigcode models verify` checks
    for path in tmp.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; shipped files are world-readable
    if args.dest.exists():
        shutil.rmtree(args.dest)
    tmp.rename(args.dest)
    size = sum(p.stat().st_size for p in args.dest.iterdir())
    print(f"{args.dest}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
