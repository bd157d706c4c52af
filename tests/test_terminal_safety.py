"""Model text never drives the user's terminal: on a terminal every control character a checkpoint
makes the model emit (ESC/CSI/OSC sequences, other C0 and C1 controls) is shown, not obeyed, in
every command that prints model text; in a pipe the exact text comes through.

The checkpoints are made with transformers (save_pretrained): a causal LM whose every next token is
one added token full of control characters (transformers' own generate emits it too), and a
classifier and a tagger whose labels carry an OSC sequence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import re

import pytest
import torch
from checkpoints import save_checkpoint
from cli_process import on_a_terminal
from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

# an OSC window title, clear-screen, an 8-bit CSI, NUL, DEL, backspace, carriage return
EVIL = "\x1b]0;owned\x07\x1b[2J\x9b31m\x00\x7f\x08\r"
OSC = "\x1b]0;owned\x07"
SHOWN_OSC = "\\x1b]0;owned\\x07"  # how it must appear on a terminal
# what must never reach a terminal (the tty itself turns "\n" into "\r\n", so CR is not checked)
FORBIDDEN = ("\x1b]", "\x07", "\x1b[2J", "\x9b", "\x00", "\x7f", "\x08")
OWN_CSI = re.compile(r"\x1b\[[0-9;?]*[A-HJKSTfhlmsu]|\r")  # our colours, spinner and line re-draws


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    root = tmp_path_factory.mktemp("evil_models")
    lm = root / "lm"
    save_tokenizer(lm, STARCODER_SPECIALS, extra_tokens=[EVIL])
    evil_id = next(t["id"] for t in json.loads((lm / "tokenizer.json").read_text())["added_tokens"]
                   if t["content"] == EVIL)
    config = GPTBigCodeConfig(n_embd=32, n_layer=1, n_head=4, vocab_size=368, n_positions=64, bos_token_id=1,
                              eos_token_id=2)
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(config)
    with torch.no_grad():  # a constant final hidden state that points at the EVIL token's (tied) embedding
        direction = torch.nn.functional.normalize(torch.randn(32), dim=0)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(direction)
        model.transformer.wte.weight[evil_id] = 50 * direction
    model.save_pretrained(str(lm))

    labels = {i: f"{name}{OSC}" for i, name in enumerate("abc")}
    cls = save_checkpoint(root / "cls", "sequence-classification", vocab_size=360, num_labels=3, id2label=labels,
                          label2id={v: k for k, v in labels.items()})
    save_tokenizer(cls, STARCODER_SPECIALS)
    tags = {0: "O", 1: f"B-K{OSC}", 2: f"I-K{OSC}"}
    tagger = save_checkpoint(root / "tag", "token-classification", vocab_size=360, num_labels=3, id2label=tags,
                             label2id={v: k for k, v in tags.items()}, seed=3)
    save_tokenizer(tagger, STARCODER_SPECIALS)
    source = root / "a.py"
    source.write_text(f"key = 'sk-123'  # {OSC}\nprint(key)\n")
    return {"lm": lm, "cls": cls, "tag": tagger, "file": source}


def _env(**changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="160", **changes)
    return env


GENERATE = ["generate", "x = 1", "-m", "{lm}", "--max-new-tokens", "3", "-t", "0"]


@pytest.mark.parametrize("args, stdin", [
    (GENERATE, None),  # streamed
    ([*GENERATE, "-n", "2"], None),  # samples
    ([*GENERATE, "--json"], None),
    (["complete", "{file}", "-m", "{lm}", "--max-new-tokens", "3", "-t", "0", "--no-block", "--diff"], None),
    (["infill", "--prefix", "a = ", "--suffix", "\n", "-m", "{lm}", "--max-new-tokens", "3", "-t", "0"], None),
    (["repl", "-m", "{lm}", "--max-new-tokens", "3", "-t", "0"], b"x = 1\n"),  # scripted turns, stdout a terminal
    (["classify", "{file}", "-m", "{cls}"], None),  # the table: labels come from the checkpoint
    (["tag", "{file}", "-m", "{tag}"], None),  # highlighted code (holding an OSC) and the legend
    (["tag", "{file}", "-m", "{tag}", "--labels", "NOPE"], None),  # an error line naming the model's labels
    (["models", "info", "{cls}"], None),
], ids=["stream", "samples", "json", "diff", "infill", "repl", "classify", "tag", "tag-error", "models-info"])
@pytest.mark.parametrize("colour", ["colour", "no-colour"])
def test_a_terminal_gets_control_characters_shown_not_obeyed(models, args, stdin, colour):
    args = [a.format(**models) for a in args]
    screen = on_a_terminal(args, _env(**({"NO_COLOR": "1"} if colour == "no-colour" else {})), stdin)
    for sequence in FORBIDDEN:
        assert sequence not in screen, (sequence, screen)
    if "--json" in args:  # JSON keeps its escapes (the same value), and shows them as text
        assert "\\u001b]0;owned\\u0007" in screen and "\\u009b31m" in screen
    else:  # the model's text did arrive, shown: the check above is not vacuous
        assert SHOWN_OSC in OWN_CSI.sub("", screen), screen


@pytest.mark.parametrize("args", [GENERATE, [*GENERATE, "-n", "2"], [*GENERATE, "--json"]])
def test_a_pipe_gets_the_exact_text(models, args):
    args = [a.format(**models) for a in args]
    proc = subprocess.run([sys.executable, "-m", "bigcode_cli", *args], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    if "--json" in args:
        assert json.loads(proc.stdout)["text"] == EVIL * 3
    elif "-n" in args:
        assert proc.stdout == f"{EVIL * 3}\n---\n{EVIL * 3}\n".encode()
    else:
        assert proc.stdout == (EVIL * 3).encode()


def test_the_reference_engine_emits_the_same_text(models):
    """The checkpoint really makes a model emit the sequences: transformers' own generate does too."""
    from transformers import AutoTokenizer, GPTBigCodeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(models["lm"]))
    model = GPTBigCodeForCausalLM.from_pretrained(str(models["lm"])).eval()
    ids = tokenizer("x = 1", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=2)
    assert tokenizer.decode(out[0, ids.shape[1]:]) == EVIL * 3


def test_classify_and_tag_pipes_keep_the_labels_exact(models):
    run = lambda *a: subprocess.run([sys.executable, "-m", "bigcode_cli", *map(str, a)], capture_output=True,
                                    timeout=120)
    classified = json.loads(run("classify", models["file"], "-m", models["cls"]).stdout)
    assert classified["label"].endswith(OSC)
    tagged = json.loads(run("tag", models["file"], "-m", models["tag"], "--aggregate", "none").stdout)
    assert tagged["spans"] and all(s["label"] in (f"B-K{OSC}", f"I-K{OSC}") for s in tagged["spans"])
