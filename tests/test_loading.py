"""Config validation and checkpoint loading: formats, dtypes, and every way a checkpoint can be wrong."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli.model import engine, runtime
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("lm") / "ckpt")


def _logits(path, **kwargs):
    with torch.inference_mode():
        return engine.load(path, "causal-lm", device="cpu", **kwargs)(torch.arange(3, 20).unsqueeze(0))


def test_config_round_trips_through_transformers(lm, tmp_path):
    from transformers import GPTBigCodeConfig as HFConfig

    ours = GPTBigCodeConfig.from_file(lm / "config.json")
    ours.save(tmp_path)
    theirs = HFConfig.from_pretrained(str(tmp_path))
    for field in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size", "multi_query", "activation_function",
                  "scale_attention_softmax_in_fp32", "attention_softmax_in_fp32", "layer_norm_epsilon"):
        assert getattr(theirs, field) == getattr(ours, field)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2"}, "not 'gpt_bigcode'"),
        ({"n_embd": 30, "n_head": 4}, "not divisible"),
        ({"activation_function": "wiggle"}, "unknown activation_function"),
        ({"n_layer": 0}, "positive integer"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(lm, tmp_path, change, message):
    data = json.loads((lm / "config.json").read_text())
    data.update(change)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        GPTBigCodeConfig.from_file(tmp_path / "config.json")


def test_corrupt_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GPTBigCodeConfig.from_file(tmp_path / "config.json")


def test_bin_and_sharded_checkpoints_load_the_same_weights(lm, tmp_path):
    from transformers import GPTBigCodeForCausalLM

    model = GPTBigCodeForCausalLM.from_pretrained(str(lm))
    model.save_pretrained(str(tmp_path / "bin"), safe_serialization=False)
    model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    assert list((tmp_path / "sharded").glob("model-*.safetensors"))
    reference = _logits(lm)
    assert torch.equal(_logits(tmp_path / "bin"), reference)
    assert torch.equal(_logits(tmp_path / "sharded"), reference)


@pytest.mark.parametrize("native, want", [(True, torch.bfloat16), (False, torch.float32)],
                         ids=["cpu-multiplies-bf16", "bf16-emulated"])
def test_dtype_auto_keeps_bf16_where_the_cpu_multiplies_it_and_computes_in_fp32_elsewhere(monkeypatch, tmp_path,
                                                                                         native, want):
    # both kinds of CPU the project runs on: the Intel Xeon (AMX, AVX-512 BF16) and the AMD Zen 4 without them
    monkeypatch.setattr(runtime, "cpu_multiplies_bf16", lambda: native)
    path = save_checkpoint(tmp_path / "bf16", dtype=torch.bfloat16)
    assert engine.load(path, "causal-lm", device="cpu").dtype == want
    assert engine.load(path, "causal-lm", device="cpu", dtype="bfloat16").dtype == torch.bfloat16


def test_tied_head_shares_the_embedding(lm):
    model = engine.load(lm, "causal-lm").model
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_truncated_weights_are_a_clear_error(lm, tmp_path):
    import shutil

    shutil.copytree(lm, tmp_path / "cut")
    weights = tmp_path / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        engine.load(tmp_path / "cut", "causal-lm")


def test_missing_weights_file(lm, tmp_path):
    import shutil

    shutil.copytree(lm, tmp_path / "none")
    (tmp_path / "none" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights"):
        engine.load(tmp_path / "none", "causal-lm")


def test_missing_head_names_the_fix(lm):
    with pytest.raises(CheckpointError, match="no sequence-classification .* `bigcode finetune classify`"):
        engine.load(lm, "sequence-classification")
    with pytest.raises(CheckpointError, match="no token-classification"):
        engine.load(lm, "token-classification", engine="transformers")


def test_config_that_disagrees_with_the_weights(lm, tmp_path):
    import shutil

    shutil.copytree(lm, tmp_path / "wrong")
    data = json.loads((tmp_path / "wrong" / "config.json").read_text())
    data["n_layer"] = 3
    (tmp_path / "wrong" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="config.json says n_layer 3, the weights hold 2 layers"):
        engine.load(tmp_path / "wrong", "causal-lm")
    data["n_layer"], data["n_inner"] = 2, 64
    (tmp_path / "wrong" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="has shape"):
        engine.load(tmp_path / "wrong", "causal-lm")


def test_bin_weights_load_without_running_pickled_code(lm, tmp_path):
    import shutil

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    shutil.copytree(lm, tmp_path / "evil", ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({"x": Evil()}, tmp_path / "evil" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        engine.load(tmp_path / "evil", "causal-lm")


def test_a_tokenizer_larger_than_the_models_vocabulary_is_one_line_error(tmp_path, capsys):
    from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

    from bigcode_cli.cli.app import run

    path = save_checkpoint(tmp_path / "mismatched", vocab_size=97)
    save_tokenizer(path, STARCODER_SPECIALS)  # 360 tokens: ids 97..359 have no embedding in this model
    code = run(["generate", "-m", str(path), "--device", "cpu", "--max-new-tokens", "2", "def main():"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (f"error: {path}: the tokenizer has 360 tokens but the model's vocabulary (vocab_size in "
                   "config.json) has 97; the tokenizer files belong to another model\n")
