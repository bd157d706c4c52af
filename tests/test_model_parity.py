"""The native model against transformers itself, on random checkpoints written by save_pretrained.

Both engines load on the machine's default device (a CUDA GPU when there is one), so the inputs go there too.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli.model import engine
from bigcode_cli.model.attention import flash_problem
from bigcode_cli.errors import BackendError
from bigcode_cli.model.runtime import resolve_device

DEVICE = resolve_device("auto")  # where engine.load puts a model by default
FP32_TOL = 1e-4
VARIANTS = {
    "mqa": dict(multi_query=True),
    "mha": dict(multi_query=False),
    "mqa-noscale-untied": dict(multi_query=True, scale_softmax=False, tie=False),
    "mha-untied": dict(multi_query=False, tie=False),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    made = {}
    for name, kwargs in VARIANTS.items():
        for task in ("causal-lm", "sequence-classification", "token-classification"):
            made[name, task] = save_checkpoint(root / f"{name}-{task}", task, **kwargs)
    return made


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 97, (batch, length), generator=generator).to(DEVICE)


def _flash_attn_importable() -> bool:
    try:
        importlib.import_module("flash_attn")
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_causal_lm_logits_equal_transformers(checkpoints, variant, attn):
    path = checkpoints[variant, "causal-lm"]
    ours = engine.load(path, "causal-lm", attn=attn)
    ref = engine.load(path, "causal-lm", engine="transformers", attn=attn)
    ids = _ids(3, 17)
    with torch.inference_mode():
        assert (ours(ids) - ref(ids)).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_hidden_states_equal_transformers_base_model(checkpoints, variant):
    from transformers import GPTBigCodeModel

    path = checkpoints[variant, "causal-lm"]
    ours = engine.load(path, "causal-lm", attn="eager")
    ref = GPTBigCodeModel.from_pretrained(str(path), attn_implementation="eager").to(DEVICE).eval()
    ids = _ids(2, 11)
    with torch.inference_mode():
        expected = ref(ids).last_hidden_state
        got = ours.model.transformer(ids)
    assert (got - expected).abs().max().item() <= FP32_TOL


def _right_padded(lengths: list[int], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = _ids(len(lengths), max(lengths), seed=3)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = pad
    return ids, mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["mqa", "mha", "mqa-noscale-untied"])
def test_sequence_classification_equals_transformers_on_mixed_lengths(checkpoints, variant, attn):
    path = checkpoints[variant, "sequence-classification"]
    ours = engine.load(path, "sequence-classification", attn=attn)
    ref = engine.load(path, "sequence-classification", engine="transformers", attn=attn)
    ids, mask = _right_padded([9, 4, 13, 1])
    with torch.inference_mode():
        got, expected = ours(ids, mask), ref(ids, mask)
    assert got.shape == (4, 3)
    assert (got - expected).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_token_classification_equals_transformers_on_mixed_lengths(checkpoints, variant, attn):
    path = checkpoints[variant, "token-classification"]
    ours = engine.load(path, "token-classification", attn=attn)
    ref = engine.load(path, "token-classification", engine="transformers", attn=attn)
    ids, mask = _right_padded([7, 12, 3])
    with torch.inference_mode():
        got, expected = ours(ids, mask), ref(ids, mask)
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max().item() <= FP32_TOL
    assert torch.equal(got[real].argmax(-1), expected[real].argmax(-1))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_incremental_decoding_with_cache_equals_full_forward(checkpoints, variant, attn):
    runner = engine.load(checkpoints[variant, "causal-lm"], "causal-lm", attn=attn)
    ids = _ids(2, 15)
    with torch.inference_mode():
        full = runner(ids)
        cache = runner.new_cache(2, 32)
        pieces = [runner(ids[:, :8], cache=cache), runner(ids[:, 8:9], cache=cache), runner(ids[:, 9:], cache=cache)]
    assert cache.length == 15
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_left_padded_batch_equals_each_sequence_alone(checkpoints, variant, attn):
    runner = engine.load(checkpoints[variant, "causal-lm"], "causal-lm", attn=attn)
    lengths = [10, 4, 7]
    width = max(lengths)
    rows = [_ids(1, n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=DEVICE)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :] = row
        mask[r, width - len(row) :] = 1
    with torch.inference_mode():
        batched = runner(ids, mask)
        # and one more decoding step with the cache, still left-padded
        cache = runner.new_cache(len(rows), width + 1)
        runner(ids, mask, cache=cache)
        nxt = torch.tensor([[5], [6], [7]], device=DEVICE)
        step = runner(nxt, torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype, device=DEVICE)], 1), cache=cache)
        for r, row in enumerate(rows):
            alone = runner(row.unsqueeze(0))
            assert (batched[r, width - len(row) :] - alone[0]).abs().max().item() <= FP32_TOL
            alone_next = runner(torch.cat([row, nxt[r]]).unsqueeze(0))[:, -1]
            assert (step[r, -1] - alone_next[0]).abs().max().item() <= FP32_TOL


def test_bf16_error_is_no_worse_than_transformers_bf16(checkpoints):
    """bf16 keeps 8 bits of mantissa, so logits differ from fp32 by ~1e-2; we must not add error on top of that.

    Tolerance: our bf16 error against the fp32 reference may be at most 1.5x transformers' own bf16 error
    (plus 1e-2 slack for rounding-order differences on tiny values).
    """
    path = checkpoints["mqa", "causal-lm"]
    ids = _ids(2, 16)
    with torch.inference_mode():
        exact = engine.load(path, "causal-lm", engine="transformers", attn="eager")(ids)
        for attn in ("eager", "sdpa"):
            ours = engine.load(path, "causal-lm", attn=attn, dtype="bfloat16")
            ref = engine.load(path, "causal-lm", engine="transformers", attn=attn, dtype="bfloat16")
            assert ours.dtype == torch.bfloat16
            ours_err = (ours(ids).float() - exact).abs().max().item()
            ref_err = (ref(ids).float() - exact).abs().max().item()
            assert ours_err <= 1.5 * ref_err + 1e-2, (attn, ours_err, ref_err)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_auto_backend_is_flash_only_where_flash_can_run(checkpoints, dtype):
    runner = engine.load(checkpoints["mqa", "causal-lm"], "causal-lm", dtype=dtype)
    assert runner.backend == ("flash" if flash_problem(runner.device, runner.dtype) is None else "sdpa")
    if runner.device.type != "cuda" or dtype == "float32":
        assert runner.backend == "sdpa"


def _assert_one_line_flash_error(info: pytest.ExceptionInfo, reason: str) -> None:
    message = str(info.value)
    assert "\n" not in message and "--attn flash is unavailable" in message and "eager and sdpa work here" in message
    assert reason in message


def test_flash_on_cpu_is_a_clear_one_line_error(checkpoints):
    with pytest.raises(BackendError) as info:
        engine.load(checkpoints["mqa", "causal-lm"], "causal-lm", attn="flash", device="cpu")
    _assert_one_line_flash_error(info, "CUDA")


@pytest.mark.skipif(not torch.cuda.is_available() or _flash_attn_importable(),
                    reason="needs a CUDA GPU without the flash-attn package")
def test_flash_without_the_package_is_a_clear_one_line_error(checkpoints):
    with pytest.raises(BackendError) as info:
        engine.load(checkpoints["mqa", "causal-lm"], "causal-lm", attn="flash", device="cuda", dtype="bfloat16")
    _assert_one_line_flash_error(info, "flash-attn package is not installed")


@pytest.mark.skipif(not torch.cuda.is_available() or not _flash_attn_importable(),
                    reason="needs a CUDA GPU with flash-attn")
def test_flash_matches_sdpa_on_gpu(checkpoints):
    path = checkpoints["mqa", "causal-lm"]
    ids = _ids(2, 33).cuda()
    with torch.inference_mode():
        flash = engine.load(path, "causal-lm", attn="flash", device="cuda", dtype="bfloat16")(ids).float()
        sdpa = engine.load(path, "causal-lm", attn="sdpa", device="cuda", dtype="bfloat16")(ids).float()
    assert (flash - sdpa).abs().max().item() < 5e-2


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_last_position_only_equals_transformers_last_logits(checkpoints, variant, attn):
    """last_only runs the final block for the last position alone, and must still fill the whole cache."""
    path = checkpoints[variant, "causal-lm"]
    ours = engine.load(path, "causal-lm", attn=attn)
    ref = engine.load(path, "causal-lm", engine="transformers", attn=attn)
    ids = _ids(3, 12, seed=20)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding in one row
    mask[2, :2] = 0
    nxt = _ids(3, 1, seed=21)
    with torch.inference_mode():
        for attention_mask in (None, mask):
            expected = ref(ids, attention_mask)[:, -1:]
            cache = ours.new_cache(3, 13)
            got = ours(ids, attention_mask, cache=cache, last_only=True)
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() <= FP32_TOL
            assert (ours(ids, attention_mask, last_only=True) - expected).abs().max().item() <= FP32_TOL
            # the cache holds every prompt position: the next step matches a full forward
            full_mask = None if attention_mask is None else torch.cat([attention_mask, torch.ones_like(nxt)], 1)
            step = ours(nxt, full_mask, cache=cache, last_only=True)
            whole = ref(torch.cat([ids, nxt], 1), full_mask)[:, -1:]
            assert (step - whole).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_reference_engine_cached_steps_equal_its_own_full_forward(checkpoints, variant):
    """The transformers engine is the yardstick of the others' decoding: its own cache must be really used."""
    ref = engine.load(checkpoints[variant, "causal-lm"], "causal-lm", engine="transformers", attn="eager")
    ids = _ids(2, 12, seed=30)
    with torch.inference_mode():
        cache = ref.new_cache(2, 12)
        pieces = [ref(ids[:, :8], cache=cache)] + [ref(ids[:, i : i + 1], cache=cache) for i in range(8, 12)]
        full = ref(ids)
    assert cache.length == 12
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= FP32_TOL


def test_reference_engine_passes_the_cache_under_the_name_forward_takes():
    from bigcode_cli.model.reference_runner import _cache_argument

    class Before:
        def forward(self, input_ids, past_key_values=None, use_cache=None, **kwargs): ...

    class After:
        def forward(self, input_ids, cache=None, use_cache=None, **kwargs): ...

    assert _cache_argument(Before()) == "past_key_values"
    assert _cache_argument(After()) == "cache"
