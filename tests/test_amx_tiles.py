"""bf16 products on AMX tiles (decode_step.c's amx_bf16.h) against the vector path they replace.

Where this CPU has AMX and Linux hands the tiles out, every bf16 step of this process runs on them (the other
tests' bf16 steps included: their parity with transformers and their batch invariance hold on tiles). Here
the same step runs once more in a process with BIGCODE_AMX=0 (the vector path) and the two must agree to
float rounding, and BIGCODE_AMX=0 must really keep the tiles off.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli.kernels import build as kernel_build
from bigcode_cli.kernels.decode_support import amx_tiles

pytestmark = pytest.mark.skipif(kernel_build.find_compiler() is None, reason="no C compiler to build the kernel")

# rows of 5, 1, 1 and 12 tokens (19: a whole group of 16 tokens and part of another) after prompts of 7, 3, 12
# and 4 tokens; 96 inputs a row (3 tile steps: an odd count), attention's 144 outputs (9 groups of 16 rows)
# and a vocabulary of 97 (6 groups and a row the vector path takes)
STEP = """
import sys, torch
from bigcode_cli.model import engine
from bigcode_cli.model.runner import RowTokens
from bigcode_cli.kernels.decode_support import amx_tiles
runner = engine.load(sys.argv[1], "causal-lm", dtype="bfloat16", device="cpu")
assert runner.decode_path == "kernel"
g = torch.Generator().manual_seed(5)
rows = []
with torch.inference_mode():
    for prompt, new in [(7, 5), (3, 1), (12, 1), (4, 12)]:
        cache = runner.new_cache(1, prompt + new + 1)
        runner(torch.randint(3, 97, (1, prompt), generator=g), cache=cache)
        rows.append(RowTokens(cache, torch.randint(3, 97, (new,), generator=g).tolist()))
    torch.save({"logits": runner.step(rows), "tiles": amx_tiles()}, sys.argv[2])
"""


def _step_in_a_process(checkpoint, out, amx: str, script: str = STEP) -> dict:
    env = {**os.environ, "BIGCODE_AMX": amx}
    subprocess.run([sys.executable, "-c", script, str(checkpoint), str(out)], env=env, check=True, timeout=300)
    return torch.load(out)


@pytest.mark.skipif(not amx_tiles(), reason="this CPU or kernel gives no AMX tiles")
def test_a_step_on_tiles_agrees_with_the_vector_path(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "mqa", n_embd=96, n_head=4, n_layer=2, dtype=torch.bfloat16)
    tiles = _step_in_a_process(checkpoint, tmp_path / "tiles.pt", "1")
    vector = _step_in_a_process(checkpoint, tmp_path / "vector.pt", "0")
    assert tiles["tiles"] and not vector["tiles"]
    assert tiles["logits"].shape == (19, 97)
    assert not torch.equal(tiles["logits"], vector["logits"])  # another order of the sums: it did run on tiles
    # the same bf16 products, summed in another order (and subnormal inputs as 0): float rounding apart
    assert (tiles["logits"] - vector["logits"]).abs().max().item() <= 1e-4 * vector["logits"].abs().max().item() + 1e-5


@pytest.mark.skipif(not amx_tiles(), reason="this CPU or kernel gives no AMX tiles: they are off anyway")
def test_bigcode_amx_off_keeps_the_tiles_off_as_bigcode_cpu_kernel_reads_its_words(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "mqa", n_embd=64, n_head=4, n_layer=2, dtype=torch.bfloat16)
    for word in ("0", " False ", "OFF", "off     ", "0\r", "no\n"):
        assert _step_in_a_process(checkpoint, tmp_path / "vector.pt", word)["tiles"] is False
    assert _step_in_a_process(checkpoint, tmp_path / "tiles.pt", "1")["tiles"] is True


@pytest.mark.skipif(not amx_tiles(), reason="this CPU or kernel gives no AMX tiles")
def test_the_decode_summary_says_when_bf16_runs_on_tiles(tmp_path):
    from bigcode_cli.model import engine

    checkpoint = save_checkpoint(tmp_path / "mqa", n_embd=64, n_head=4, n_layer=2)
    assert engine.load(checkpoint, "causal-lm", dtype="bfloat16", device="cpu").decode_summary == \
        "C kernel, bf16 on AMX tiles"
    assert engine.load(checkpoint, "causal-lm", dtype="float32", device="cpu").decode_summary == "C kernel"
    assert engine.load(checkpoint, "causal-lm", dtype="int8", device="cpu").decode_summary == "C kernel"


# 8-bit weights: rows of 5, 1, 1 and 12 tokens as above; heads 24 wide, so the caches stay float32 and
# attention takes the same vector path in both processes: only the matrix products differ
# ("tiles": whether the step's products really ran on tiles)
INT8_STEP = STEP.replace('dtype="bfloat16"', 'dtype="int8"').replace(
    "from bigcode_cli.kernels.decode_support import amx_tiles",
    "from bigcode_cli.kernels.decode_support import amx_int8_products\namx_tiles = lambda: amx_int8_products() > 0")


@pytest.mark.skipif(not amx_tiles(), reason="this CPU or kernel gives no AMX tiles")
# 19 tokens: a group of 16 and one of 3 (4 tokens a tile row); 6 tokens (8 a tile row)
@pytest.mark.parametrize(("rows", "tokens"), [("(7, 5), (3, 1), (12, 1), (4, 12)", 19), ("(7, 5), (3, 1)", 6)])
def test_8bit_products_on_tiles_are_the_vector_paths_bits(tmp_path, rows, tokens):
    from bigcode_cli.kernels.decode_support import amx_int8

    if not amx_int8():
        pytest.skip("this build has no AMX-INT8 tile products")
    # 96 inputs: 3 blocks of 32 (an odd count: the last block alone); 144 attention outputs: 9 groups of 16 rows
    checkpoint = save_checkpoint(tmp_path / "mqa", n_embd=96, n_head=4, n_layer=2)

    script = INT8_STEP.replace("(7, 5), (3, 1), (12, 1), (4, 12)", rows)
    tiles = _step_in_a_process(checkpoint, tmp_path / "tiles.pt", "1", script)
    vector = _step_in_a_process(checkpoint, tmp_path / "vector.pt", "0", script)
    assert tiles["tiles"] and not vector["tiles"]  # the step's products ran on tiles, and only with BIGCODE_AMX=1
    assert tiles["logits"].shape == (tokens, 97)
    # exact integer sums per block, scaled and added in the same order: the same bits
    assert torch.equal(tiles["logits"], vector["logits"])


@pytest.mark.skipif(not amx_tiles(), reason="this CPU or kernel gives no AMX tiles")
def test_multi_query_attention_over_bf16_caches_on_tiles_agrees_with_the_vector_path(tmp_path):
    from bigcode_cli.kernels.decode_support import amx_attention

    if not amx_attention():
        pytest.skip("this build has no tile attention (no AVX-512 BF16 pair path)")
    # heads 64 wide (the tile path's shape); prompts of 3 to 1,030 positions and up to 12 new: whole 16s of positions,
    # a rest, and a second attention block of 1,024
    checkpoint = save_checkpoint(tmp_path / "mqa", n_embd=128, n_head=2, n_layer=2, n_positions=1100,
                                 dtype=torch.bfloat16)
    script = STEP.replace("(7, 5), (3, 1), (12, 1), (4, 12)", "(37, 5), (3, 1), (1030, 1), (20, 12)").replace(
        "from bigcode_cli.kernels.decode_support import amx_tiles",
        "from bigcode_cli.kernels.decode_support import amx_attention as amx_tiles")

    tiles = _step_in_a_process(checkpoint, tmp_path / "tiles.pt", "1", script)
    vector = _step_in_a_process(checkpoint, tmp_path / "vector.pt", "0", script)
    assert tiles["tiles"] and not vector["tiles"]
    assert not torch.equal(tiles["logits"], vector["logits"])  # the products ran on tiles
    # the same bf16 roundings of query and weights, fp32 sums in another order (and in both processes the
    # weights' own products on tiles or not): float rounding apart
    assert (tiles["logits"] - vector["logits"]).abs().max().item() <= 2e-2 * vector["logits"].abs().max().item()
