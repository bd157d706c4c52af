"""The bundled LM's training recipe (scripts/bundled): FIM examples in the form inference sends, the data mix."""

from __future__ import annotations

import importlib
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizer_files import CORPUS, STARCODER_SPECIALS, save_tokenizer

from bigcode_cli.generation.completion import build_prompt
from bigcode_cli.text.tokenizer import Tokenizer

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "bundled"
# a Python file: the shared test corpus's Python part (functions, a class, a loop), after an import
SOURCE = "import os\n\n\n" + CORPUS[: CORPUS.index("function add")]


@pytest.fixture(scope="module")
def recipe():
    """The recipe's modules, imported the way `python scripts/bundled/train_lm.py` imports them."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield {name: importlib.import_module(name) for name in ("fim_training", "train_lm", "pretokenize")}
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer.from_dir(save_tokenizer(tmp_path_factory.mktemp("tok"), STARCODER_SPECIALS))


def cuts(recipe, kind: str, n: int = 60):
    rng = np.random.default_rng(0)
    return [recipe["fim_training"].choose_cut(SOURCE, kind, rng) for _ in range(n)]


def test_a_line_middle_is_the_rest_of_one_line(recipe):
    at_code_start = 0
    for prefix, middle, suffix in cuts(recipe, "line"):
        assert prefix + middle + suffix == SOURCE
        assert middle.endswith("\n") and middle.count("\n") == 1 and middle.strip()
        head = prefix[prefix.rfind("\n") + 1:]
        at_code_start += not head.strip()
    assert 20 < at_code_start < 60  # mostly at the start of the line's code, sometimes mid-line


def test_a_block_middle_ends_at_a_line_end_and_holds_the_block_it_opens(recipe):
    opening = 0
    for prefix, middle, suffix in cuts(recipe, "block", 200):
        assert prefix + middle + suffix == SOURCE
        assert middle.endswith("\n") and middle.rstrip("\n").strip()
        if middle.startswith("if n < 2"):  # opens a block: the middle is the block, through its last line
            assert middle == "if n < 2:\n        return n\n"
            opening += 1
    assert opening
    assert any(m.count("\n") > 1 for _p, m, _s in cuts(recipe, "block"))


def test_random_middles_are_arbitrary_spans(recipe):
    assert any(not m.endswith("\n") for _p, m, _s in cuts(recipe, "random"))


@pytest.mark.parametrize("order", ["psm", "spm"])
def test_a_training_example_starts_with_the_exact_prompt_completion_sends(recipe, tokenizer, order):
    fim_training = recipe["fim_training"]
    for cut in cuts(recipe, "line", 10):
        ids = fim_training.fim_example(tokenizer, cut, order)
        prompt = build_prompt(tokenizer, cut.prefix, cut.suffix, "fim", context=4096, max_new_tokens=16,
                              order=order)
        assert ids[: len(prompt.ids)] == prompt.ids
        assert ids[len(prompt.ids):] == [*tokenizer.encode(cut.middle), fim_training.EOS]


def test_batches_put_whole_fim_examples_in_rows_and_ignore_padding(recipe, tokenizer):
    train_lm = recipe["train_lm"]
    doc = np.asarray(tokenizer.encode(SOURCE), dtype=np.uint16)
    data = np.concatenate([np.concatenate([doc, np.zeros(1, np.uint16)])] * 40)
    rng = np.random.default_rng(1)
    length = len(doc) + 8
    inputs, targets = train_lm.sample_batch(data, 8, length, rng, 1.0, tokenizer)
    assert inputs.shape == targets.shape == (8, length)
    fim = tokenizer.require_fim()
    for row_in, row_out in zip(inputs.tolist(), targets.tolist()):
        assert fim.middle in row_in  # every piece became a FIM example
        real = [t for t in row_out if t != train_lm.IGNORE]
        assert real == row_in[1: len(real) + 1]
    plain_in, _ = train_lm.sample_batch(data, 4, length, np.random.default_rng(1), 0.0, tokenizer)
    assert fim.middle not in plain_in.flatten().tolist()


def test_training_data_weights_languages_and_never_takes_held_out_files(recipe):
    pretokenize = recipe["pretokenize"]
    records = [{"path": f"{lang}/{i}", "lang": lang, "split": split, "bytes": 1000}
               for lang in ("python", "javascript", "perl") for split in ("train", "heldout") for i in range(20)]
    chosen = pretokenize.choose(records, "train", 3000, random.Random(0), {"javascript": 8000})
    by_lang = {lang: sum(r["lang"] == lang for r in chosen) for lang in ("python", "javascript", "perl")}
    assert by_lang == {"python": 20, "javascript": 8, "perl": 3}
    assert all(r["split"] == "train" for r in chosen)


def test_training_continues_from_a_checkpoint_with_a_shorter_context(recipe, tmp_path):
    import torch

    train_lm = recipe["train_lm"]
    config = train_lm.model_config(300, 64)
    source = train_lm.GPTBigCodeForCausalLM(config)
    source.init_weights()
    train_lm.export(source, config, tmp_path / "no-tokenizer", tmp_path / "shipped", {"steps": 1})
    shorter = train_lm.GPTBigCodeForCausalLM(train_lm.model_config(300, 32))
    train_lm.load_init(shorter, tmp_path / "shipped")
    wpe = source.transformer.wpe.weight.detach().to(torch.bfloat16).float()
    assert torch.equal(shorter.transformer.wpe.weight.detach(), wpe[:32])
    assert shorter.lm_head.weight is shorter.transformer.wte.weight
    assert json.loads((tmp_path / "shipped" / "training.json").read_text()) == {"steps": 1}


def test_bf16_autocast_only_where_the_hardware_multiplies_it(recipe, monkeypatch):
    train_lm = recipe["train_lm"]
    monkeypatch.setattr(train_lm, "cpu_multiplies_bf16", lambda: False)
    assert train_lm.use_bf16("auto", "cpu") is False
    monkeypatch.setattr(train_lm, "cpu_multiplies_bf16", lambda: True)
    assert train_lm.use_bf16("auto", "cpu") is True
    assert train_lm.use_bf16("off", "cpu") is False and train_lm.use_bf16("on", "cpu") is True
