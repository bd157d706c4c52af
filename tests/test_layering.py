"""The import-linter contracts of pyproject.toml ([tool.importlinter]): the layers and the forbidden imports.

The contracts run on the package as it is (and must hold), and on a copy with wrong arrows added
(and must break), so a contract that could never fail does not pass for one that holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter's `lint-imports` on the package under `root` with the project's contracts."""
    script = Path(sys.executable).with_name("lint-imports")
    assert script.is_file(), "lint-imports is missing: pip install -e '.[test]'"
    env = {**os.environ, "PYTHONPATH": str(root)}  # the package under root, not the installed one
    return subprocess.run([str(script), str(root / "pyproject.toml"), "--no-cache", "--no-logo"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout


def test_contracts_break_on_a_wrong_arrow(tmp_path):
    shutil.copytree(ROOT / "bigcode_cli", tmp_path / "bigcode_cli", ignore=shutil.ignore_patterns("bundled", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    package = tmp_path / "bigcode_cli"
    with open(package / "model" / "weights.py", "a", encoding="utf-8") as f:
        f.write("\nimport bigcode_cli.store  # upward: model -> store\n")
    with open(package / "generation" / "loop.py", "a", encoding="utf-8") as f:
        f.write("\nimport rich  # a service drawing on the terminal\n")
    with open(package / "store" / "reading.py", "a", encoding="utf-8") as f:
        f.write("\nimport bigcode_cli.pipelines  # between siblings of one layer\n")
    with open(package / "generation" / "sampling.py", "a", encoding="utf-8") as f:
        f.write("\nimport bigcode_cli.generation.loop  # a cycle: the loop imports sampling\n")
    with open(package / "generation" / "prompt_cache.py", "a", encoding="utf-8") as f:
        f.write("\nfrom bigcode_cli.model.gpt_bigcode import KVCache  # a service reaching into the native cache\n")
    (package / "extras").mkdir()
    (package / "extras" / "__init__.py").write_text("")  # a subpackage no layer names
    result = _lint_imports(tmp_path)
    out = " ".join(result.stdout.split())
    assert result.returncode == 1, out
    assert "bigcode_cli.model.weights -> bigcode_cli.store" in out
    assert "bigcode_cli.generation is not allowed to import rich" in out
    assert "bigcode_cli.store.reading -> bigcode_cli.pipelines" in out
    assert "bigcode_cli.extras" in out
    assert "No cycles are allowed in bigcode_cli.generation" in out
    assert "bigcode_cli.generation is not allowed to import bigcode_cli.model.gpt_bigcode" in out
    assert "Contracts: 1 kept, 5 broken." in out
