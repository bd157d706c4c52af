"""`--dtype auto` on a CPU: a bfloat16 checkpoint computes in bf16 only where the CPU multiplies bf16 natively
(AVX-512 BF16 / AMX), else in float32; and the classifier's pooled-position path equals the full one."""


import pytest
import torch
from task_models import SNIPPETS, hf_model, model_dir

from bigcode_cli.model import runtime
from bigcode_cli.model.engine import load
from bigcode_cli.text.tokenizer import Tokenizer

CPU = torch.device("cpu")


def test_cpuinfo_flags(tmp_path):
    amd = tmp_path / "amd"
    amd.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f\n")
    intel = tmp_path / "intel"
    intel.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    sapphire = tmp_path / "amx"
    sapphire.write_text("flags\t\t: avx2 amx_bf16 amx_tile\n")
    assert not runtime.cpu_multiplies_bf16(str(amd))
    assert runtime.cpu_multiplies_bf16(str(intel)) and runtime.cpu_multiplies_bf16(str(sapphire))
    assert not runtime.cpu_multiplies_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize("native, want", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_picks_bf16_only_where_it_is_native(monkeypatch, native, want):
    monkeypatch.setattr(runtime, "cpu_multiplies_bf16", lambda: native)
    assert runtime.resolve_dtype("auto", torch.bfloat16, CPU) == want
    assert runtime.resolve_dtype("auto", torch.float32, CPU) == torch.float32
    assert runtime.resolve_dtype("auto", torch.float16, CPU) == torch.float32
    assert runtime.resolve_dtype("float32", torch.bfloat16, CPU) == torch.float32


def test_a_bf16_checkpoint_loads_as_auto_chooses(monkeypatch, tmp_path):
    directory = model_dir(tmp_path / "ckpt", "sequence-classification", ["a", "b"], dtype=torch.bfloat16)
    for native, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(runtime, "cpu_multiplies_bf16", lambda: native)
        assert load(directory, "sequence-classification", device="cpu").dtype == want


def test_right_padding_takes_the_full_path_and_equals_transformers(tmp_path):
    # the batcher pads on the left, where only the last position's head runs; right padding must still pool right
    directory = model_dir(tmp_path / "ckpt", "sequence-classification", ["a", "b", "c"], n_positions=32)
    runner = load(directory, "sequence-classification", device="cpu", attn="eager")
    tokenizer = Tokenizer.from_dir(directory)
    rows = [tokenizer.encode(text) for text in SNIPPETS[:4]]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    reference = hf_model(directory, "sequence-classification")
    with torch.no_grad():
        want = torch.stack([reference(torch.tensor([r])).logits[0] for r in rows])
        got = runner(ids, mask)
    assert (got - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("native, want", [(True, "bfloat16"), (False, "float32")])
def test_complete_json_shows_the_chosen_dtype(monkeypatch, capsys, tmp_path, native, want):
    import json

    from bigcode_cli.cli import app as cli

    monkeypatch.setattr(runtime, "cpu_multiplies_bf16", lambda: native)
    (tmp_path / "a.py").write_text("def add(a, b):\n    return")
    code = cli.run(["complete", str(tmp_path / "a.py"), "--json", "--max-new-tokens", "2", "--temperature", "0"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out.splitlines()[0])["dtype"] == want


@pytest.mark.parametrize("native, want", [(True, torch.bfloat16), (False, torch.float32)])
def test_quantized_prefill_asks_the_same_bf16_check(monkeypatch, native, want):
    # one answer to "does this CPU multiply bf16": patching it moves the quantized prefill's matmul dtype too
    from bigcode_cli.model import quantized_loading

    monkeypatch.setattr(runtime, "cpu_multiplies_bf16", lambda: native)
    assert quantized_loading.prefill_dtype() == want
