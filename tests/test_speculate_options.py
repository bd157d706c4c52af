"""`--speculate ngram|off` where users set it: `complete`, `generate`, `infill`, the REPL's /set, and `bigcode serve`
(its default and each request's `speculate` field); drafted and accepted tokens in --json records, responses'
`timings` and /metrics. Greedy output is the same either way, alone and among concurrent requests."""

from __future__ import annotations

import io
import json
import threading

import pytest
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.cli.app import run
from bigcode_cli.cli.commands.generation_run import make_settings
from bigcode_cli.repl.loop import interactive
from bigcode_cli.repl.session import Session

REPEATING = "x = 1\ny = 2\nx = 1\ny = 2\nx = 1\ny = 2\nx = 1\n"
ENTER = "\r"
TIMEOUT = 120


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "ckpt", n_positions=512)


def _run(capsys, *args):
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


CLASSES = ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
           "        self.items.append(item)\n\n\nclass Queue:\n    def __init__(self):\n")


@pytest.mark.parametrize("command", ["generate", "infill", "complete"])
def test_the_commands_make_the_same_greedy_text_and_report_drafts(capsys, tmp_path, command):
    # the bundled model: it re-types some of the prompt (a random one ends a fill-in-the-middle at once)
    source = tmp_path / "f.py"
    source.write_text(CLASSES + "<FILL>\n\n    def size(self):\n        return len(self.items)\n")
    target = {"generate": [CLASSES], "complete": [source],
              "infill": ["--prefix", CLASSES, "--suffix", "\n\n    def size(self):\n        return len(self.items)\n"]}
    records = {}
    for speculate in ("ngram", "off"):
        code, out, err = _run(capsys, command, *target[command], "-t", "0", "--max-new-tokens", "40", "--json",
                              "--no-block", "--speculate", speculate)
        assert code == 0, err
        records[speculate] = json.loads(out)
    assert records["ngram"]["text"] == records["off"]["text"]
    assert records["off"]["timings"]["draft_n"] == records["off"]["timings"]["draft_n_accepted"] == 0
    ngram = records["ngram"]["timings"]
    assert ngram["draft_n"] > 0 and 0 <= ngram["draft_n_accepted"] <= ngram["draft_n"]


def test_a_bad_speculate_value_is_a_usage_error(capsys, lm):
    code, out, err = _run(capsys, "generate", "x", "-m", lm, "--speculate", "maybe")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "'ngram', 'off'" in err and err.count("\n") == 1


def test_the_repl_sets_speculation(lm, capsys):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    settings = make_settings(max_new_tokens=8, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0,
                             stop=None, num_samples=1, lines=None, block=False)
    assert settings.speculate == "ngram"  # the default
    session = Session(settings, model=str(lm), out=io.StringIO())
    with create_pipe_input() as pipe:
        pipe.send_text("/set speculate off" + ENTER + "/set speculate maybe" + ENTER + "/quit" + ENTER)
        assert interactive(session, input=pipe, output=DummyOutput()) == 0
    assert session.settings.speculate == "off"
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: speculate takes ngram or off, got 'maybe'"]


# -- bigcode serve -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, lm):
    pytest.importorskip("starlette")
    from serve_process import start_server

    yield from start_server(tmp_path_factory.mktemp("serve_home"),
                            ["--model", str(lm), "--parallel", "4", "--speculate", "off"])


def _post(server, path: str, body: dict) -> dict:
    httpx = pytest.importorskip("httpx")
    reply = httpx.post(server.url + path, json=body, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _metrics(server) -> dict[str, int]:
    httpx = pytest.importorskip("httpx")
    text = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text
    return {line.split()[0]: int(line.split()[1]) for line in text.splitlines() if not line.startswith("#")}


REQUESTS = [
    ("/infill", {"input_prefix": REPEATING, "input_suffix": "\nprint(x)\n"}),
    ("/completion", {"prompt": REPEATING}),
    ("/infill", {"input_prefix": "def f(a):\n    return a\n\n\ndef g(a):\n", "input_suffix": "\n"}),
    ("/completion", {"prompt": "import os\nimport os\nimport"}),
]
GREEDY = {"temperature": 0, "n_predict": 40, "cache_prompt": False}


def test_a_request_turns_speculation_on_and_gets_the_same_text_alone_and_together(server):
    before = _metrics(server)
    alone = {(i, s): _post(server, path, {**body, **GREEDY, "speculate": s})
             for i, (path, body) in enumerate(REQUESTS) for s in ("off", "ngram")}
    for i in range(len(REQUESTS)):
        assert alone[i, "ngram"]["content"] == alone[i, "off"]["content"]
        assert alone[i, "off"]["timings"]["draft_n"] == 0
    assert sum(alone[i, "ngram"]["timings"]["draft_n_accepted"] for i in range(len(REQUESTS))) > 0
    # the server's default (--speculate off here): no drafts
    assert _post(server, *REQUESTS[1][:1], {**REQUESTS[1][1], **GREEDY})["timings"]["draft_n"] == 0
    # together, every other one speculating: each makes what it made alone
    replies: list = [None] * len(REQUESTS)
    barrier = threading.Barrier(len(REQUESTS))

    def send(i: int) -> None:
        barrier.wait(TIMEOUT)
        path, body = REQUESTS[i]
        replies[i] = _post(server, path, {**body, **GREEDY, "speculate": "ngram" if i % 2 else "off"})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(REQUESTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT + 10)
    assert not any(thread.is_alive() for thread in threads)
    assert [r["content"] for r in replies] == [alone[i, "off"]["content"] for i in range(len(REQUESTS))]
    after = _metrics(server)
    drafted = sum(alone[i, "ngram"]["timings"]["draft_n"] for i in range(len(REQUESTS))) + sum(
        replies[i]["timings"]["draft_n"] for i in range(len(REQUESTS)))
    accepted = sum(alone[i, "ngram"]["timings"]["draft_n_accepted"] for i in range(len(REQUESTS))) + sum(
        replies[i]["timings"]["draft_n_accepted"] for i in range(len(REQUESTS)))
    assert after["bigcode_draft_tokens_total"] - before.get("bigcode_draft_tokens_total", 0) == drafted
    assert after["bigcode_draft_tokens_accepted_total"] - before.get("bigcode_draft_tokens_accepted_total", 0) == accepted


def test_a_bad_speculate_field_is_a_400(server):
    httpx = pytest.importorskip("httpx")
    reply = httpx.post(server.url + "/completion", json={"prompt": "x", "speculate": "yes"}, timeout=TIMEOUT)
    assert reply.status_code == 400 and "speculate" in reply.json()["error"]["message"]


def test_openai_and_tgi_requests_take_the_field_too(server):
    body = {"prompt": REPEATING, "max_tokens": 30, "temperature": 0, "speculate": "ngram"}
    on = _post(server, "/v1/completions", {**body, "bigcode": {"details": True}})
    off = _post(server, "/v1/completions", {**body, "speculate": "off", "bigcode": {"details": True}})
    assert on["choices"][0]["text"] == off["choices"][0]["text"]
    assert on["bigcode"]["draft_n"] > 0 and off["bigcode"]["draft_n"] == 0
    tgi = _post(server, "/generate", {"inputs": REPEATING, "parameters": {"max_new_tokens": 30, "speculate": "ngram"}})
    assert tgi["generated_text"] == on["choices"][0]["text"]
