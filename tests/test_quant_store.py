"""Quantized copies in the cache (store/quantized.py), loading while quantizing, and the CLI around them."""

from __future__ import annotations

import os

import pytest
import torch
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.cli import app as cli
from bigcode_cli.errors import BackendError, StoreError
from bigcode_cli.model import engine, quantized_file
from bigcode_cli.model.quantize import QuantizedLinear, dequantize, quantize
from bigcode_cli.model.tensor_reader import TensorReader
from bigcode_cli.paths import quantized_dir
from bigcode_cli.store import quantized
from bigcode_cli.store.loader import open_model


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("qlm") / "ckpt", n_embd=40, n_layer=2)


def run_cli(capsys, *args):
    code = cli.run(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, " ".join(err.split()) + ("\n" if err else "")


def _logits(runner, ids=None):
    ids = torch.arange(3, 20).unsqueeze(0) if ids is None else ids
    with torch.inference_mode():
        cache = runner.new_cache(1, ids.shape[1] + 4)
        prefill = runner(ids, cache=cache)
        steps = [runner(torch.tensor([[5 + i]]), cache=cache) for i in range(4)]
    return prefill, torch.cat(steps, 1)


def _leftovers():
    tmp = quantized_dir() / ".tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_a_kept_copy_maps_back_to_the_same_model_as_quantizing_afresh(lm, dtype):
    first = open_model(str(lm), "causal-lm", dtype=dtype, device="cpu")  # quantizes, then keeps the copy
    kept = quantized.find(first.resolved, dtype)
    assert kept is not None and _leftovers() == []
    again = open_model(str(lm), "causal-lm", dtype=dtype, device="cpu")
    fresh = engine.load(lm, "causal-lm", dtype=dtype, device="cpu")
    assert again.runner.decode_path == "kernel" and again.runner.dtype_name == dtype
    for a, b in zip(_logits(again.runner), _logits(fresh)):
        assert torch.equal(a, b)
    state, _ = quantized_file.map_state(kept)
    fresh_layer = fresh.model.transformer.h[1].mlp.c_fc
    assert torch.equal(state["transformer.h.1.mlp.c_fc.qweight"], fresh_layer.qweight)
    assert torch.equal(state["transformer.h.1.mlp.c_fc.scales"], fresh_layer.scales)


def test_quantizing_while_reading_equals_quantizing_the_loaded_weights(lm):
    runner = engine.load(lm, "causal-lm", dtype="int8", device="cpu")
    weights = TensorReader(lm)
    layer = runner.model.transformer.h[0].attn.c_attn
    expected = quantize(weights.read("transformer.h.0.attn.c_attn.weight"), 8)
    assert torch.equal(layer.qweight, expected.qweight) and torch.equal(layer.scales, expected.scales)
    # the tied LM head and the embedding are one quantized matrix
    assert runner.model.lm_head.qweight.data_ptr() == runner.model.transformer.wte.qweight.data_ptr()
    assert torch.equal(dequantize(runner.model.lm_head.quantized),
                       dequantize(quantize(weights.read("transformer.wte.weight"), 8)))


def test_read_in_pieces_equals_reading_whole(lm, monkeypatch):
    from bigcode_cli.model import tensor_reader

    whole = engine.load(lm, "causal-lm", dtype="int4", device="cpu")
    monkeypatch.setattr(tensor_reader, "PIECE_BYTES", 7 * 40 * 4)  # 7 rows at a time, a ragged last piece
    pieces = engine.load(lm, "causal-lm", dtype="int4", device="cpu")
    for a, b in zip(_logits(whole), _logits(pieces)):
        assert torch.equal(a, b)


def test_an_interrupted_write_leaves_nothing_behind(lm, monkeypatch):
    real = quantized_file.write_state

    def interrupted(path, state, metadata):
        real(path, state, metadata)
        with open(path, "r+b") as f:
            f.truncate(100)  # half the bytes on disk, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(quantized_file, "write_state", interrupted)
    runner = engine.load(lm, "causal-lm", dtype="int8", device="cpu")
    resolved = open_model(str(lm), "causal-lm", dtype="float32", device="cpu").resolved
    with pytest.raises(KeyboardInterrupt):
        quantized.save(resolved, "int8", runner.model)
    assert quantized.find(resolved, "int8") is None and _leftovers() == [] and quantized.entries() == []


def test_a_full_disk_is_a_store_error_and_the_run_goes_on(lm, monkeypatch):
    def full(path, state, metadata):
        path.write_bytes(b"x" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(quantized_file, "write_state", full)
    resolved = open_model(str(lm), "causal-lm", dtype="float32", device="cpu").resolved
    runner = engine.load(lm, "causal-lm", dtype="int8", device="cpu")
    with pytest.raises(StoreError, match="No space left on device"):
        quantized.save(resolved, "int8", runner.model)
    assert _leftovers() == [] and quantized.entries() == []
    loaded = open_model(str(lm), "causal-lm", dtype="int8", device="cpu")  # still runs, keeps nothing
    assert loaded.runner.dtype_name == "int8" and quantized.entries() == []


def test_a_changed_source_is_quantized_again(lm, tmp_path):
    import shutil

    copy = shutil.copytree(lm, tmp_path / "copy")
    first = open_model(str(copy), "causal-lm", dtype="int8", device="cpu")
    old = quantized.find(first.resolved, "int8")
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert quantized.find(first.resolved, "int8") is None
    assert [e["current"] for e in quantized.entries()] == [False]
    second = open_model(str(copy), "causal-lm", dtype="int8", device="cpu")
    assert quantized.find(second.resolved, "int8") not in (None, old)


def test_models_quantize_list_info_rm(lm, capsys):
    code, out, err = run_cli(capsys, "models", "quantize", str(lm), "--dtype", "int4")
    assert code == 0 and out.strip().endswith("/int4/model.safetensors") and "int4 copy of" in err
    path = out.strip()
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0 and f"{lm} (int4)\tquantized\tcausal-lm\t-\tint4\t-\t" in out
    code, out, _ = run_cli(capsys, "models", "info", str(lm))
    assert code == 0 and f"int4 {path}" in out
    code, out, _ = run_cli(capsys, "models", "rm", str(lm), "--quantized")
    assert code == 0 and out == f"removed {os.path.dirname(path)}\n" and quantized.entries() == []
    code, out, err = run_cli(capsys, "models", "rm", str(lm), "--quantized")
    assert code == 1 and err.startswith("error: no quantized copies of")


def test_refusing_to_remove_a_bundled_model_keeps_its_quantized_copies(capsys):
    code, out, _ = run_cli(capsys, "models", "quantize", "bigcode-tiny", "--dtype", "int8")
    assert code == 0
    kept = quantized.entries()
    code, out, err = run_cli(capsys, "models", "rm", "bigcode-tiny")
    assert (code, out) == (1, "") and err == "error: bigcode-tiny is bundled with bigcode-cli and cannot be removed\n"
    assert quantized.entries() == kept and os.path.isfile(kept[0]["path"])
    code, out, _ = run_cli(capsys, "models", "rm", "bigcode-tiny", "--quantized")
    assert code == 0 and out == f"removed {os.path.dirname(kept[0]['path'])}\n" and quantized.entries() == []


@pytest.mark.parametrize("args, message", [
    (["classify", "--dtype", "int8", "-"], "error: --dtype int8 quantizes causal language models only; "
                                           "sequence-classification heads run in float32 or bfloat16\n"),
    (["generate", "x", "--dtype", "int4", "--engine", "transformers"],
     "error: --dtype int4 runs on the native engine only; drop --engine transformers or choose float32 or bfloat16\n"),
])
def test_a_dtype_the_model_cannot_run_is_one_line(lm, capsys, monkeypatch, args, message):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("x = 1\n"))
    code, out, err = run_cli(capsys, *args)
    assert code == 1 and err == message and out == ""


def test_quantized_generation_on_another_device_is_refused():
    from bigcode_cli.model.quantized_loading import check_quantizable

    with pytest.raises(BackendError, match="--dtype int8 runs on the CPU only; use --device cpu"):
        check_quantizable("int8", "causal-lm", torch.device("cuda"))


def test_generate_with_int8_streams_the_same_text_as_the_kept_copy(lm, capsys):
    args = ["generate", "def f(x):", "--model", str(lm), "--dtype", "int8", "--max-new-tokens", "8", "-t", "0"]
    code, first, _ = run_cli(capsys, *args)
    assert code == 0 and quantized.entries() != []
    code, second, _ = run_cli(capsys, *args)
    assert code == 0 and first == second


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_complete_json_names_the_dtype_asked_for(lm, capsys, tmp_path, dtype):
    import json

    (tmp_path / "a.py").write_text("def f(x):\n    return")
    code, out, _ = run_cli(capsys, "complete", str(tmp_path / "a.py"), "--model", str(lm), "--dtype", dtype,
                           "--json", "--max-new-tokens", "2", "-t", "0")
    assert code == 0 and json.loads(out)["dtype"] == dtype


def test_the_server_and_the_repl_name_the_dtype_asked_for(lm):
    from bigcode_cli.repl.session import describe
    from bigcode_cli.serve.worker import EngineWorker

    loaded = open_model(str(lm), "causal-lm", dtype="int4", device="cpu")
    worker = EngineWorker(lambda: loaded)
    worker.loaded = loaded
    assert worker.dtype == "int4" and ", int4, decode: " in describe(loaded)


def test_a_quantized_linear_layer_survives_the_file_round_trip(tmp_path):
    layer = QuantizedLinear(quantize(torch.randn(9, 70), 4), 9, torch.randn(9))
    state = {"a.qweight": layer.qweight, "a.scales": layer.scales, "a.bias": layer.bias.detach()}
    quantized_file.write_state(tmp_path / "f.safetensors", state, {"format": "1"})
    from safetensors.torch import load_file

    back, metadata = quantized_file.map_state(tmp_path / "f.safetensors")
    assert metadata == {"format": "1"}
    theirs = load_file(str(tmp_path / "f.safetensors"))  # a plain safetensors file for other tools too
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor) and torch.equal(theirs[name], tensor)


def test_converting_while_reading_equals_converting_after(lm, monkeypatch):
    from safetensors.torch import load_file

    from bigcode_cli.model import tensor_reader

    monkeypatch.setattr(tensor_reader, "PIECE_BYTES", 5 * 40 * 4)  # a few rows per piece
    runner = engine.load(lm, "causal-lm", dtype="bfloat16", device="cpu")
    stored = load_file(str(lm / "model.safetensors"))
    ours = runner.model.state_dict()
    for name, tensor in stored.items():
        assert torch.equal(ours[name], tensor.to(torch.bfloat16)), name


def test_a_new_format_version_is_seen_by_the_store_without_a_second_edit(lm, monkeypatch):
    """The store reads the format version from the model's one definition: after a bump, old copies are ignored
    and the next load keeps a copy of the new version (no mismatch to swallow, no quantizing at every start)."""
    from bigcode_cli.model import quantized_format

    first = open_model(str(lm), "causal-lm", dtype="int8", device="cpu")
    assert quantized.find(first.resolved, "int8") is not None
    monkeypatch.setattr(quantized_format, "FORMAT_VERSION", quantized_format.FORMAT_VERSION + 1)
    assert quantized.find(first.resolved, "int8") is None
    open_model(str(lm), "causal-lm", dtype="int8", device="cpu")
    kept = quantized.find(first.resolved, "int8")
    assert kept is not None and quantized_file.map_state(kept)[1].get("format") == str(quantized_format.FORMAT_VERSION)


def test_whether_a_load_is_quantized_is_decided_in_one_place(lm, monkeypatch):
    """The loader and the engine both ask engine.quantized_bits (and nothing else decides)."""
    asked = []
    decide = engine.quantized_bits

    def recorded(dtype, task, **how):
        asked.append((dtype, task))
        return decide(dtype, task, **how)

    monkeypatch.setattr(engine, "quantized_bits", recorded)
    loaded = open_model(str(lm), "causal-lm", dtype="int8", device="cpu")
    assert loaded.runner.dtype_name == "int8"
    assert asked == [("int8", "causal-lm")] * 2  # once by the loader (kept copy or not), once by engine.load
    asked.clear()
    open_model(str(lm), "causal-lm", dtype="float32", device="cpu")
    assert asked == [("float32", "causal-lm")] * 2
