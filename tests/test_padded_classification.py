"""A padded sequence-classification batch runs front-aligned under causal attention alone, and still equals
transformers (which masks the padding) whichever side is padded; rows that cannot be aligned fall back to the mask.
"""

from __future__ import annotations

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli.model import engine
from bigcode_cli.model.attention import Backend
from bigcode_cli.model.gpt_bigcode import front_aligned

FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifiers")
    return {mq: save_checkpoint(root / f"mq-{mq}", "sequence-classification", multi_query=mq, n_layer=3)
            for mq in (True, False)}


def _batch(lengths: list[int], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        where = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, where] = torch.randint(3, 97, (n,), generator=generator)
        mask[row, where] = 1
    return ids, mask


def _recording(runner) -> list:
    """Record the MaskInfo every forward step of the runner's model is prepared with."""
    seen: list = []
    backend = runner.model.transformer.backend

    def prepare(info, n_head, multi_query):
        seen.append(info)
        return backend.prepare(info, n_head, multi_query)

    runner.model.set_backend(Backend(backend.name, prepare, backend.attend))
    return seen


def test_front_aligned_moves_each_run_of_real_tokens_to_the_front():
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 1], [2, 3, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    aligned, lengths = front_aligned(ids, mask)
    assert lengths.tolist() == [2, 4, 2]
    for row, n in enumerate(lengths.tolist()):
        assert aligned[row, :n].tolist() == ids[row][mask[row].bool()].tolist()
    assert front_aligned(ids, torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])) is None  # a hole
    assert front_aligned(ids, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])) is None  # an empty row


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("multi_query", [True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_attends_causally_without_a_mask_and_equals_transformers(classifiers, attn, multi_query, side):
    path = classifiers[multi_query]
    ours = engine.load(path, "sequence-classification", attn=attn, device="cpu")
    ref = engine.load(path, "sequence-classification", engine="transformers", attn=attn, device="cpu")
    seen = _recording(ours)
    ids, mask = _batch([9, 4, 13, 1, 13], side)
    with torch.inference_mode():
        got, want = ours(ids, mask), ref(ids, mask)
    assert (got - want).abs().max().item() <= FP32_TOL
    every_position, pooled = seen  # one step for the blocks, one for the final block's pooled queries
    assert every_position.causal and every_position.key_valid is None  # no padding mask at all
    assert pooled.allowed is not None and pooled.allowed.shape == (5, 1, 13)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_mask_with_a_hole_keeps_the_mask_and_equals_transformers(classifiers, attn):
    path = classifiers[True]
    ours = engine.load(path, "sequence-classification", attn=attn, device="cpu")
    ref = engine.load(path, "sequence-classification", engine="transformers", attn=attn, device="cpu")
    seen = _recording(ours)
    ids, mask = _batch([9, 4, 13], "right")
    mask[2, 3] = 0  # not one run of real tokens: cannot be front-aligned
    with torch.inference_mode():
        got, want = ours(ids, mask), ref(ids, mask)
    assert (got - want).abs().max().item() <= FP32_TOL
    assert not seen[0].causal and seen[0].key_valid is not None


def test_the_projections_and_the_mlp_see_real_tokens_only(classifiers):
    ours = engine.load(classifiers[True], "sequence-classification", attn="sdpa", device="cpu")
    rows = []
    for block in ours.model.transformer.h:
        block.attn.c_attn.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
        block.mlp.c_fc.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    ids, mask = _batch([9, 4, 13, 1, 13], "left")
    with torch.inference_mode():
        ours(ids, mask)
    assert rows == [40] * 5 + [5]  # 9+4+13+1+13 packed tokens; the final block's MLP runs for the 5 pooled rows
    shapes = []
    ours.model.transformer.h[0].attn.c_attn.register_forward_hook(lambda m, args, out: shapes.append(args[0].shape))
    ids, mask = _batch([6, 6], "left")
    with torch.inference_mode():
        ours(ids, mask)
    assert shapes == [(2, 6, 32)]  # no padding, nothing to pack: the batch stays (B, T, C)


@pytest.mark.parametrize("width", [1, 2])
def test_rows_of_one_token_equal_transformers(classifiers, width):
    path = classifiers[False]
    ours = engine.load(path, "sequence-classification", attn="sdpa", device="cpu")
    ref = engine.load(path, "sequence-classification", engine="transformers", attn="sdpa", device="cpu")
    ids, mask = _batch([1, 1, width], "left")
    with torch.inference_mode():
        got, want = ours(ids, mask), ref(ids, mask)
    assert got.shape == (3, 3)
    assert (got - want).abs().max().item() <= FP32_TOL
