"""The task table (bigcode_cli.tasks) and the choice lists (bigcode_cli.choices) against what they describe:
transformers' own classes, checkpoints it saves, its activation functions, and every place that offers a choice."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli import choices, paths, tasks


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_each_task_row_names_what_transformers_saves(tmp_path, name):
    from safetensors import safe_open

    from bigcode_cli.model.gpt_bigcode import model_class

    row = tasks.task(name)
    assert row.name == name
    assert model_class(name).__name__ == row.model_class  # our nn module, resolved by name
    saved = save_checkpoint(tmp_path / "ckpt", name)  # saved by transformers' own class for the task
    architectures = json.loads((saved / "config.json").read_text())["architectures"]
    assert [a for a in architectures if a.endswith(row.architecture_suffix)] == [row.model_class]
    with safe_open(str(saved / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    heads = {key.split(".")[0] for key in keys} - {"transformer"}
    # a tied lm_head is saved as wte alone; untied, it has its own key
    assert heads == ({row.head} if not row.tied_head else set()) and (row.head_key in keys) != row.tied_head
    if row.tied_head:
        untied = save_checkpoint(tmp_path / "untied", name, tie=False)
        with safe_open(str(untied / "model.safetensors"), "pt") as f:
            assert row.head_key in set(f.keys())


def test_task_lookups_derive_from_the_rows(monkeypatch):
    assert tasks.MODES == {"complete": "causal-lm", "infill": "causal-lm", "classify": "sequence-classification",
                           "tag": "token-classification"}
    assert tasks.FINETUNE_MODES == {"classify": "sequence-classification", "tag": "token-classification"}
    assert tasks.HEADS == {"lm_head": "causal-lm", "score": "sequence-classification",
                           "classifier": "token-classification"}
    assert [row.name for row in tasks.TASKS.values() if row.generative] == ["causal-lm"]
    with pytest.raises(ValueError, match="unknown task 'chat'"):
        tasks.task("chat")
    from bigcode_cli import store

    for row in tasks.TASKS.values():
        assert (paths.bundled_dir() / row.default_model / "config.json").is_file()
        assert store.default_model(row.name) == row.default_model
        monkeypatch.setenv(row.env_var, "acme/other")
        assert store.default_model(row.name) == "acme/other"


def test_every_choice_list_is_offered_where_it_is_used():
    from bigcode_cli.cli.commands import options
    from bigcode_cli.cli.commands.repl import Mode
    from bigcode_cli.model.attention import BACKENDS
    from bigcode_cli.model.engine import _LOADERS
    from bigcode_cli.model.runtime import DTYPES
    from bigcode_cli.repl.actions import REGISTRY, SETTINGS, _set_choices

    def values(enum):
        return tuple(member.value for member in enum)

    assert values(options.Engine) == choices.ENGINES == tuple(_LOADERS)
    assert values(options.Attn) == choices.ATTENTION_CHOICES == ("auto", *BACKENDS)
    assert values(options.Device) == choices.DEVICE_CHOICES
    assert values(options.Dtype) == choices.DTYPE_CHOICES == ("auto", *DTYPES, *choices.QUANTIZED_DTYPES)
    assert values(options.FimOrder) == choices.FIM_ORDERS
    assert values(Mode) == tuple(tasks.MODES)
    assert all(DTYPES[name] == getattr(torch, torch_name) for name, torch_name in choices.DTYPES.items())
    for command, offered in (("attn", choices.ATTENTION_CHOICES), ("device", choices.DEVICE_CHOICES),
                             ("dtype", choices.DTYPE_CHOICES), ("mode", tuple(tasks.MODES))):
        assert tuple(REGISTRY.find(command).choices(None, [])) == offered
    assert "order" in SETTINGS and tuple(_set_choices(None, ["order"])) == choices.FIM_ORDERS


@pytest.mark.parametrize("name", list(choices.ACTIVATIONS))
def test_each_activation_name_computes_what_transformers_computes(name):
    from transformers.activations import ACT2FN

    from bigcode_cli.model.config import GPTBigCodeConfig
    from bigcode_cli.model.gpt_bigcode import MLP

    mlp = MLP(GPTBigCodeConfig(n_embd=8, n_head=2, activation_function=name))
    x = torch.linspace(-6, 6, 101)
    assert (mlp.act(x) - ACT2FN[name](x)).abs().max().item() <= 1e-6
    overwritten = x.clone()
    assert mlp.act_(overwritten) is overwritten  # the in-place variant the MLP uses without autograd
    assert (overwritten - ACT2FN[name](x)).abs().max().item() <= 1e-6


def test_the_mlp_activates_in_place_only_without_autograd():
    from bigcode_cli.model.config import GPTBigCodeConfig
    from bigcode_cli.model.gpt_bigcode import MLP

    mlp = MLP(GPTBigCodeConfig(n_embd=8, n_head=2)).eval()
    seen = []
    mlp.c_fc.register_forward_hook(lambda module, args, out: seen.append((out, out.clone())))
    x = torch.randn(3, 5, 8)
    with torch.inference_mode():
        want = mlp.c_proj(mlp.act(mlp.c_fc(x)))
        got = mlp(x)
    buffer, before = seen[-1]
    assert torch.equal(got, want) and torch.equal(buffer, mlp.act(before))  # c_fc's output was overwritten
    out = mlp(x.requires_grad_())
    out.sum().backward()  # with autograd the activation keeps its input, which its gradient needs
    assert x.grad is not None and torch.equal(seen[-1][0], seen[-1][1])


def test_listed_reads_like_a_sentence():
    assert choices.listed(("a",)) == "a"
    assert choices.listed(("a", "b", "c")) == "a, b or c"
