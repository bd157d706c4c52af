"""`bigcode repl`: the session driven through prompt-toolkit's pipe input (no terminal), the scripted
stdin mode, and one end-to-end run of the real command in a pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from checkpoints import save_checkpoint, save_lm_with_tokenizer
from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

from bigcode_cli.cli.commands.generation_run import make_settings
from bigcode_cli.generation.completion import complete
from bigcode_cli.store.loader import open_model
from bigcode_cli.repl.keys import next_indent, should_run
from bigcode_cli.repl.loop import interactive, read_turns
from bigcode_cli.repl.session import Session
from bigcode_cli.repl.toolbar import toolbar, toolbar_items

ENTER, ESC_ENTER, CTRL_C = "\r", "\x1b\r", "\x03"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random LM (a long context, for a long generation), a copy under another name, a classifier."""
    root = tmp_path_factory.mktemp("repl_models")
    lm = save_lm_with_tokenizer(root / "lm", n_positions=2048)
    other = root / "other-lm"
    shutil.copytree(lm, other)
    labels = {0: "python", 1: "c", 2: "js"}
    langid = save_checkpoint(root / "langid", "sequence-classification", vocab_size=400, num_labels=3,
                             id2label=labels, label2id={v: k for k, v in labels.items()})
    save_tokenizer(langid, STARCODER_SPECIALS)
    tags = {0: "O", 1: "B-KEY", 2: "I-KEY"}
    tagger = save_checkpoint(root / "tagger", "token-classification", vocab_size=400, num_labels=3,
                             id2label=tags, label2id={v: k for k, v in tags.items()}, seed=3)
    save_tokenizer(tagger, STARCODER_SPECIALS)
    return {"lm": lm, "other": other, "langid": langid, "tagger": tagger}


def greedy(**changes):
    values = dict(max_new_tokens=12, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0,
                  stop=None, num_samples=1, lines=None, block=False)
    values.update(changes)
    return make_settings(**values)


def new_session(models, out=None, **kwargs) -> Session:
    session = Session(kwargs.pop("settings", greedy()), model=str(models["lm"]), out=out or io.StringIO(), **kwargs)
    session.load(session.task, str(models["lm"]))
    return session


def drive(session: Session, keys: str) -> None:
    """Type `keys` into the interactive loop (it must end the session, e.g. with /quit)."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        assert interactive(session, input=pipe, output=DummyOutput()) == 0


def reference(models, prefix, suffix="", mode="continue", settings=None) -> str:
    """What the completion service itself gives for this input."""
    loaded = open_model(str(models["lm"]), "causal-lm")
    return complete(loaded.runner, loaded.tokenizer, prefix, suffix, mode, settings or greedy()).texts[0]


# -- turns through the prompt ----------------------------------------------------------------------


def test_completion_turn_streams_the_model_text_after_the_input(models):
    session = new_session(models)
    # Enter after ':' indents, Enter after `return a` dedents, Enter on the empty line runs
    drive(session, "def add(a, b):" + ENTER + "return a" + ENTER + ENTER + "/quit" + ENTER)
    prefix = "def add(a, b):\n    return a\n"
    expected = reference(models, prefix)
    assert expected
    assert session.out.getvalue() == expected + ("" if expected.endswith("\n") else "\n")
    turn = [t for t in session.transcript.turns if t.mode == "complete"][0]
    assert (turn.input, turn.output) == (prefix, expected)
    assert session.last.new_tokens > 0 and session.last.prompt_tokens > 0
    assert ("mode", "complete") in toolbar_items(session)
    assert any(label == "speed" for label, _ in toolbar_items(session))
    history = Path(os.environ["BIGCODE_HOME"], "repl_history").read_text()
    assert "+    return a\n" in history and "+/quit\n" in history


@pytest.mark.parametrize("width", [80, 120])
def test_the_toolbar_wraps_between_items_to_the_terminal_width(models, width):
    session = new_session(models)
    drive(session, "def add(a, b):" + ENTER + ENTER + "/quit" + ENTER)
    items = toolbar_items(session)
    assert len(" ".join(f" {label} {value}" for label, value in items)) > width  # too wide for one line
    lines = "".join(text for _, text in toolbar(session, width)).split("\n")
    assert len(lines) > 1 and all(len(line) <= width for line in lines)
    assert "".join(lines) == "".join(f" {label} {value} " for label, value in items)  # every item, whole


def test_esc_enter_runs_a_partial_last_line_and_echoes_it(models):
    session = new_session(models)
    drive(session, "def add(a, b):" + ENTER + "return" + ESC_ENTER + "/quit" + ENTER)
    prefix = "def add(a, b):\n    return"
    expected = reference(models, prefix)
    # the unfinished line is shown again so the completion continues it on screen
    assert session.out.getvalue().startswith("    return" + expected.split("\n")[0])


def test_mode_switch_to_infill(models, capsys):
    session = new_session(models)
    drive(session, "/mode infill" + ENTER + "x = 1" + ENTER + ENTER
          + "def f(x):" + ENTER + "<FILL>" + ENTER + "return y" + ENTER + ENTER + "/quit" + ENTER)
    assert session.mode == "infill"
    err = capsys.readouterr().err
    assert "error: infill mode fills in at a <FILL> marker" in err
    turn = session.transcript.turns[-2]
    assert (turn.mode, turn.input, turn.suffix) == ("infill", "def f(x):\n    ", "\n    return y\n")
    assert turn.output == reference(models, "def f(x):\n    ", "\n    return y\n", "fim")


def test_set_changes_settings_and_bad_values_keep_the_session(models, capsys):
    session = new_session(models)
    drive(session, "/set temperature 0.7" + ENTER + "/set top-k 5" + ENTER + "/set top_p 2" + ENTER
          + "/set top_k x" + ENTER + "/set lines 1" + ENTER + "/set block off" + ENTER + '/stop "\\n\\n" ";"'
          + ENTER + "/seed 99999999999999999999" + ENTER + "/seed 7" + ENTER + "/set max_new_tokens 9" + ENTER
          + "/quit" + ENTER)
    settings = session.settings
    assert (settings.sampling.temperature, settings.sampling.top_k, settings.sampling.top_p) == (0.7, 5, 1.0)
    assert (settings.sampling.seed, settings.max_new_tokens, settings.lines, settings.block) == (7, 9, 1, False)
    assert settings.stops == ["\n\n", ";"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: --top-p must be in (0, 1] (1 = off), got 2.0",
                      "error: top_k takes a whole number, got 'x'",
                      "error: seed takes a whole number from 0 to 9223372036854775807, got '99999999999999999999'"]


def test_unknown_command_is_one_line_and_the_session_goes_on(models, capsys):
    session = new_session(models)
    drive(session, "/sett temperature 0" + ENTER + "/frobnicate" + ENTER + "/set temperature 0.5" + ENTER
          + "/quit" + ENTER)
    err = capsys.readouterr().err
    assert "error: unknown command /sett (did you mean /set?); /help lists the commands\n" in err
    assert "error: unknown command /frobnicate; /help lists the commands\n" in err
    assert session.settings.sampling.temperature == 0.5
    assert not session.running


def test_model_switch_keeps_the_old_model_when_the_new_one_fails(models, capsys):
    session = new_session(models)
    drive(session, f"/model {models['other']}" + ENTER + "/model /no/such/model" + ENTER
          + "/attn eager" + ENTER + "/quit" + ENTER)
    assert session.current.name == str(models["other"])
    assert session.current.runner.backend == "eager"
    err = capsys.readouterr().err
    assert f"loaded {models['other']} (native/" in err
    if session.current.runner.decode_path == "kernel":  # a CPU with a C compiler
        assert "float32, decode: C kernel) in " in err
    else:
        assert f"float32, decode: PyTorch ({session.current.runner.decode_reason})) in " in err
    assert "error: no checkpoint directory at /no/such/model" in err
    assert ("model", str(models["other"])) in toolbar_items(session)
    assert ("attn", "eager") in toolbar_items(session)


def test_the_load_line_says_why_decoding_is_not_in_the_c_kernel(models, capsys, monkeypatch):
    monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    session = new_session(models)
    drive(session, f"/model {models['other']}" + ENTER + "/quit" + ENTER)
    assert "float32, decode: PyTorch (turned off by BIGCODE_CPU_KERNEL=0)) in " in capsys.readouterr().err


class StopAfterFirstText(io.StringIO):
    """Output that raises KeyboardInterrupt on its first model text, as Ctrl-C would in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = False

    def write(self, text: str) -> int:
        written = super().write(text)
        if not self.raised and text.strip():
            self.raised = True
            raise KeyboardInterrupt
        return written


def test_ctrl_c_during_generation_keeps_the_text_and_the_session(models, capsys):
    session = new_session(models, out=StopAfterFirstText(), settings=greedy(max_new_tokens=200))
    drive(session, "def add(a, b):" + ENTER + "return a" + ENTER + ENTER + "/set temperature 0.3" + ENTER
          + "/quit" + ENTER)
    turn = [t for t in session.transcript.turns if t.mode == "complete"][0]
    assert turn.interrupted and session.last.interrupted
    assert 0 < session.last.new_tokens < 200
    full = reference(models, "def add(a, b):\n    return a\n", settings=greedy(max_new_tokens=200))
    assert turn.output and full.startswith(turn.output)
    assert f"stopped after {session.last.new_tokens} tokens" in capsys.readouterr().err
    assert session.settings.sampling.temperature == 0.3


def test_history_persists_and_ctrl_r_finds_it(models):
    drive(new_session(models), "y = 2" + ENTER + ENTER + "/quit" + ENTER)
    session = new_session(models)  # a new session reads the history file back
    drive(session, "\x12" + "y =" + ENTER + ESC_ENTER + "/quit" + ENTER)
    assert [t.input for t in session.transcript.turns] == ["y = 2\n", "/quit"]


def test_ctrl_c_at_the_prompt_clears_the_input(models):
    session = new_session(models)
    drive(session, "def half_typed(" + CTRL_C + "/quit" + ENTER)
    assert [t.input for t in session.transcript.turns] == ["/quit"]
    assert session.out.getvalue() == ""


def test_an_exception_in_a_turn_is_one_line(models, capsys, monkeypatch):
    import bigcode_cli.generation.completion

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bigcode_cli.generation.completion, "complete", broken)
    session = new_session(models)
    drive(session, "x = 1" + ENTER + ENTER + "/quit" + ENTER)
    err = capsys.readouterr().err
    assert "error: internal error: RuntimeError: boom (BIGCODE_DEBUG=1 shows the traceback)\n" in err
    assert "Traceback" not in err
    monkeypatch.setenv("BIGCODE_DEBUG", "1")
    assert session.handle("x = 1\n") is False
    assert "Traceback" in capsys.readouterr().err


def test_classify_mode_uses_the_classification_service(models):
    from bigcode_cli.pipelines.batching import Batcher
    from bigcode_cli.pipelines.classification import predict, problem_type

    session = new_session(models)
    drive(session, f"/mode classify {models['langid']}" + ENTER + "def f(x):" + ENTER + "return x" + ENTER
          + ENTER + "/quit" + ENTER)
    loaded = open_model(str(models["langid"]), "sequence-classification")
    scored = Batcher(loaded.runner, loaded.tokenizer).run(["def f(x):\n    return x\n"])[0]
    expected = predict(scored.logits, loaded.runner.config.labels(), problem_type(loaded.runner.config))
    assert session.mode == "classify"
    assert session.out.getvalue().startswith(f"{expected.label}\t{expected.score:.4f}\t(")


def test_tag_mode_uses_the_tagging_service(models):
    from bigcode_cli.pipelines.batching import Batcher
    from bigcode_cli.pipelines.tagging import spans_from_tokens, token_predictions

    text = 'key = "sk-123456"\n'
    session = new_session(models)
    drive(session, f"/mode tag {models['tagger']}" + ENTER + 'key = "sk-123456"' + ENTER + ENTER + "/quit" + ENTER)
    loaded = open_model(str(models["tagger"]), "token-classification")
    scored = Batcher(loaded.runner, loaded.tokenizer, offsets=True).run([text])[0]
    predictions = token_predictions(scored.logits, loaded.runner.config.labels())
    spans = spans_from_tokens(text, scored.encoded.offsets, predictions)
    rows = [f"{s.label}\t{s.start}-{s.end}\t{s.score:.3f}\t{s.text!r}\n" for s in spans]
    assert spans and session.out.getvalue() == "".join(rows)
    assert session.transcript.turns[-2].mode == "tag"


def test_device_and_dtype_reload_the_model(models, capsys):
    session = new_session(models)
    drive(session, "/dtype bfloat16" + ENTER + "/device cpu" + ENTER + "/dtype float64" + ENTER + "/quit" + ENTER)
    assert str(session.current.runner.dtype) == "torch.bfloat16"
    assert (session.options.dtype, session.options.device) == ("bfloat16", "cpu")
    assert "error: unknown dtype 'float64'; choose auto, float32, bfloat16, float16" in capsys.readouterr().err


def test_save_writes_the_transcript(models, tmp_path):
    session = new_session(models)
    text_file, json_file = tmp_path / "session.py", tmp_path / "session.jsonl"
    drive(session, "x = 1" + ENTER + ENTER + f"/save {text_file}" + ENTER + f"/save {json_file}" + ENTER
          + "/quit" + ENTER)
    completion = reference(models, "x = 1\n")
    assert text_file.read_text().startswith("# [1] complete, ")
    assert "\nx = 1\n" + completion in text_file.read_text()
    records = [json.loads(line) for line in json_file.read_text().splitlines()]
    assert [r["mode"] for r in records] == ["complete", "command", "command"]
    assert records[0]["output"] == completion


# -- small pieces ------------------------------------------------------------------------------------


def test_model_text_is_plain_text_never_markup_or_escapes():
    from bigcode_cli.terminal.stream_printer import StreamPrinter

    out = io.StringIO()
    printer = StreamPrinter(out, colour=True, language="python", end_line=True)
    printer.width = 80
    printer.start("    ")
    printer.write("x = [bold]1[/bold]")
    printer.write("  # \x1b[31mred\n")
    printer.finish()
    screen = out.getvalue()
    assert screen.startswith("\r\x1b[K") and screen.endswith("\n")
    assert ANSI.sub("", screen.rsplit("\r\x1b[K", 1)[1]) == '    x = [bold]1[/bold]  # \\x1b[31mred\n'


def test_enter_runs_only_on_an_empty_last_line():
    assert should_run("/set temperature 0", 18)
    assert should_run("", 0)
    assert not should_run("def f(x):", 9)
    assert should_run("def f(x):\n    ", 14)
    assert should_run("x = 1\n", 6)
    assert not should_run("x = 1\n", 3)  # editing in the middle
    assert next_indent("    if x:") == "        "
    assert next_indent("        return x") == "    "
    assert next_indent("    y = 2") == "    "


def test_slash_completion(models):
    from prompt_toolkit.document import Document

    from bigcode_cli.repl.slash import SlashCompleter

    session = new_session(models)
    completer = SlashCompleter(session.commands, session)

    def words(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), None)]

    assert words("/se") == ["/set", "/seed"]
    assert words("/mode cl") == ["classify"]
    assert words("/set top") == ["top_k", "top_p"]
    assert words("/attn ") == ["auto", "eager", "sdpa", "flash"]
    assert words("def f(x):") == []


def test_read_turns_splits_on_blank_lines():
    assert list(read_turns(["/set temperature 0\n", "\n", "def f():\n", "    pass", "\n", "  \n", "x\n"])) == [
        "/set temperature 0\n", "def f():\n    pass\n", "x\n"]


# -- the command -------------------------------------------------------------------------------------


def test_scripted_repl_reads_turns_from_stdin(models, capsys, monkeypatch):
    from bigcode_cli.cli.app import run

    monkeypatch.setattr(sys, "stdin", io.StringIO("/set max_new_tokens 6\n\nx = 1\n\n/nope\n"))
    code = run(["repl", "-m", str(models["lm"]), "-t", "0", "--no-block", "--seed", "0"])
    out, err = capsys.readouterr()
    expected = reference(models, "x = 1\n", settings=greedy(max_new_tokens=6))
    assert out == expected + ("" if expected.endswith("\n") else "\n")
    assert "error: unknown command /nope" in err
    assert code == 1


def test_scripted_repl_stops_at_ctrl_c_with_130(models):
    from bigcode_cli.repl.loop import scripted

    session = new_session(models, out=StopAfterFirstText(), settings=greedy(max_new_tokens=50), interactive=False)
    assert scripted(session, ["/lang rust\n", "\n", "x = 1\n", "\n", "/set temperature 0.9\n"]) == 130
    assert session.language == "rust"
    assert session.transcript.turns[-1].interrupted
    assert session.settings.sampling.temperature == 0.0  # the turns after Ctrl-C did not run


def test_end_to_end_in_a_pseudo_terminal(models, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    first = reference(models, "def add(a, b):\n    ", settings=greedy(max_new_tokens=3)).strip()
    assert first
    env = dict(os.environ, NO_COLOR="1", TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", OMP_NUM_THREADS="1",
               COLUMNS="120", LINES="30")
    child = pexpect.spawn(sys.executable, ["-m", "bigcode_cli", "repl", "-m", str(models["lm"]), "-t", "0",
                                           "--no-block", "--max-new-tokens", "1500"],
                          env=env, encoding="utf-8", timeout=30, dimensions=(30, 120))
    try:
        child.expect(">>>")
        child.send("def add(a, b):" + ENTER)
        child.expect(r"\.\.\.")
        child.send(ENTER)  # Enter on the (indented) empty line runs: the body is generated
        seen = ""
        while first not in ANSI.sub("", seen):  # streamed output reaches the screen ...
            child.expect(r".+")
            seen += child.after
        child.sendintr()  # ... and Ctrl-C stops it mid-way
        child.expect(r"stopped after \d+ tokens")
        child.expect(">>>")
        child.send("/quit" + ENTER)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
