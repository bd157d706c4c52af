"""`bigcode serve` with the bundled model, driven by clients nobody here wrote: the `openai` package,
curl with the body llama.vim sends, and httpx for server-sent events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serve_process import ServerProcess  # noqa: E402

PREFIX = '''import math


def mean(values: list[float]) -> float:
    """The arithmetic mean of values."""
    return sum(values) / len(values)


def variance(values: list[float]) -> float:
    """The population variance of values."""
    m = mean(values)
    return sum((v - m) ** 2 for v in values) / len(values)


def stddev(values: list[float]) -> float:
    """The population standard deviation."""
'''
SUFFIX = '''

def zscores(values: list[float]) -> list[float]:
    """How many deviations each value lies from the mean."""
    m, s = mean(values), stddev(values)
    return [(v - m) / s for v in values]
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess([], tmp_path_factory.mktemp("serve_home"))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def cli_json(home, *args: str) -> dict:
    """One --json record of a local (model-loading) `bigcode` run."""
    env = dict(os.environ, BIGCODE_HOME=str(home), HF_HUB_OFFLINE="1", NO_COLOR="1")
    env.pop("BIGCODE_MODEL", None)
    done = subprocess.run([sys.executable, "-m", "bigcode_cli", *args, "--json"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[0])


def curl(url: str, body: dict | str) -> tuple[int, dict]:
    data = body if isinstance(body, str) else json.dumps(body)
    done = subprocess.run(["curl", "--silent", "--no-buffer", "--request", "POST", "--url", url,
                           "--header", "Content-Type: application/json", "--data", "@-",
                           "--write-out", "\n%{http_code}"], input=data, capture_output=True, text=True, timeout=120)
    text, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(text)


def llama_vim_body(prefix: str, line_prefix: str, suffix: str, **overrides) -> dict:
    """The /infill body llama.vim sends (autoload/llama.vim, llama#fim), with our text in it."""
    body = {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "input_extra": [{"text": "def helper():\n    return 1\n", "time": 1733000000, "filename": "util.py"}],
        "prompt": line_prefix,
        "n_predict": 24,
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.99,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "response_fields": ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
                            "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
                            "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated",
                            "tokens_cached"],
    }
    body.update(overrides)
    return body


def test_health_and_models(server, client):
    from bigcode_cli.serve.worker import DEFAULT_PARALLEL

    assert server.health() == (200, {"status": "ok", "slots_idle": DEFAULT_PARALLEL, "slots_processing": 0,
                                     "requests_waiting": 0})
    models = client.models.list()
    assert [m.id for m in models.data] == ["bigcode-tiny"]


def test_openai_suffix_equals_bigcode_infill(server, client, tmp_path):
    reply = client.completions.create(model="bigcode-tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=24,
                                      temperature=0, extra_body={"bigcode": {"fim_order": "psm"}})
    local = cli_json(tmp_path, "infill", "--prefix", PREFIX, "--suffix", SUFFIX, "-t", "0", "--max-new-tokens", "24")
    assert reply.choices[0].text == local["text"]
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == local["prompt_tokens"]
    assert reply.usage.completion_tokens == local["new_tokens"]


def test_llama_vim_body_with_curl(server, tmp_path):
    cursor_line = "    return math.sqrt(var"
    prefix, line_suffix = PREFIX, ""
    status, reply = curl(server.url + "/infill", llama_vim_body(prefix, cursor_line, line_suffix + "\n" + SUFFIX))
    assert status == 200, reply
    assert set(reply) == {"content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
                          "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
                          "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated",
                          "tokens_cached"}
    assert isinstance(reply["content"], str) and reply["timings/prompt_n"] > 50
    # greedy, without the other file's chunk: exactly what `bigcode infill` gives for the same cursor (SPM order,
    # which this server picks for FIM-trained checkpoints)
    body = llama_vim_body(prefix, cursor_line, "\n" + SUFFIX, temperature=0, input_extra=[], response_fields=None,
                          t_max_predict_ms=None)  # no deadline: this machine may be busy
    status, reply = curl(server.url + "/infill", body)
    assert status == 200, reply
    local = cli_json(tmp_path, "infill", "--prefix", prefix + cursor_line, "--suffix", "\n" + SUFFIX, "-t", "0",
                     "--max-new-tokens", "24", "--fim-order", "spm")
    assert reply["content"] == local["text"]
    assert reply["tokens_evaluated"] == local["prompt_tokens"]
    assert reply["stop"] is True and set(reply["timings"]) >= {"prompt_n", "cache_n", "prompt_ms", "predicted_n",
                                                             "predicted_ms"}


def test_n_indent_ends_the_infill_before_a_shallower_line(server):
    # at the start of an empty line, with block cleaning off, a plain /completion of the same prompt
    # runs over several lines; n_indent 100 must keep only the first
    body = {"input_prefix": PREFIX, "input_suffix": "\n" + SUFFIX, "prompt": "", "n_predict": 48,
            "temperature": 0, "cache_prompt": False}
    status, free = curl(server.url + "/infill", {**body, "n_indent": 0})
    status_indent, bounded = curl(server.url + "/infill", {**body, "n_indent": 100})
    assert status == status_indent == 200, (free, bounded)
    later = bounded["content"].split("\n")[1:]
    assert not any(line.strip() for line in later), bounded["content"]
    assert free["content"].startswith(bounded["content"].rstrip())


def test_ignore_eos_makes_exactly_n_predict_tokens_and_keeps_the_cleaned_text(server):
    # llama.cpp's ignore_eos: benchmarks ask both servers for equal work; the cleaning that would have ended
    # the completion (here n_indent) still cuts its text but no longer ends the generation
    body = {"input_prefix": PREFIX, "input_suffix": "\n" + SUFFIX, "prompt": "", "n_predict": 48,
            "temperature": 0, "cache_prompt": False, "n_indent": 100}
    status, ended = curl(server.url + "/infill", body)
    status_all, ignoring = curl(server.url + "/infill", {**body, "ignore_eos": True})
    assert status == status_all == 200, (ended, ignoring)
    assert ended["tokens_predicted"] < 48
    assert ignoring["tokens_predicted"] == 48 and ignoring["stop_type"] == "limit"
    assert ignoring["content"] == ended["content"]


def test_openai_streaming_matches_the_whole_answer(client):
    whole = client.completions.create(model="x", prompt=PREFIX, max_tokens=20, temperature=0)
    pieces, reasons = [], []
    for chunk in client.completions.create(model="x", prompt=PREFIX, max_tokens=20, temperature=0, stream=True):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == whole.choices[0].text
    assert reasons[-1] == whole.choices[0].finish_reason and set(reasons[:-1]) == {None}


def test_llama_streaming_ends_with_stop_and_timings(server):
    events = []
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 16, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/infill", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["stop"] is True and "timings" in events[-1]
    assert all(e["stop"] is False for e in events[:-1])
    whole = httpx.post(server.url + "/infill", json={**body, "stream": False}, timeout=120).json()
    assert "".join(e["content"] for e in events) == whole["content"]


def test_typing_one_more_character_reuses_the_prompt_cache(server):
    body = {"input_prefix": PREFIX + "    return math.sqrt(varia", "input_suffix": SUFFIX, "n_predict": 8,
            "temperature": 0}
    assert httpx.post(server.url + "/infill", json=body, timeout=120).status_code == 200
    body["input_prefix"] += "n"
    second = httpx.post(server.url + "/infill", json=body, timeout=120).json()["timings"]
    total = second["prompt_n"] + second["cache_n"]
    assert total > 100
    assert second["prompt_n"] <= 4, second  # the typed character's token(s) and what follows them in SPM order
    assert second["cache_n"] >= total - 4


def test_n_predict_zero_only_warms_the_cache(server):
    body = {"input_prefix": PREFIX + "    s = 0\n", "input_suffix": SUFFIX, "n_predict": 0, "temperature": 0}
    warm = httpx.post(server.url + "/infill", json=body, timeout=120).json()
    assert warm["content"] == "" and warm["tokens_predicted"] == 0
    real = httpx.post(server.url + "/infill", json={**body, "n_predict": 8}, timeout=120).json()
    assert real["timings"]["prompt_n"] == 1  # only the last prompt token again, for its logits
    assert real["timings"]["cache_n"] == real["tokens_evaluated"] - 1


SOURCE = PREFIX + "    return math.sqrt(variance(values))\n" + SUFFIX


def bigcode(home, *args: str, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m bigcode_cli ARGS`, or with `code`, a Python snippet that runs the CLI in-process."""
    environment = dict(os.environ, BIGCODE_HOME=str(home), HF_HUB_OFFLINE="1", NO_COLOR="1", **(env or {}))
    environment.pop("BIGCODE_MODEL", None)
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "bigcode_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def test_server_client_output_equals_local_output(server, tmp_path):
    path = tmp_path / "stats.py"
    path.write_text(SOURCE)
    at = ["--at", "17:12", "-t", "0", "--max-new-tokens", "24", "--fim-order", "spm"]
    local_stream = bigcode(tmp_path, "complete", str(path), *at)
    local_json = bigcode(tmp_path, "complete", str(path), *at, "--json")
    assert local_stream.returncode == 0 and local_json.returncode == 0, local_stream.stderr + local_json.stderr
    remote_stream = bigcode(tmp_path, "complete", str(path), *at, "--server", server.url)
    assert remote_stream.returncode == 0, remote_stream.stderr
    assert remote_stream.stdout == local_stream.stdout
    # BIGCODE_SERVER does the same as --server; --json has the local keys, equal except the timings
    remote_json = bigcode(tmp_path, "complete", str(path), *at, "--json", env={"BIGCODE_SERVER": server.url})
    local_record, remote_record = json.loads(local_json.stdout), json.loads(remote_json.stdout)
    assert set(remote_record) == set(local_record) and set(remote_record["timings"]) == set(local_record["timings"])
    local_record.pop("timings"), remote_record.pop("timings")
    assert remote_record == local_record
    text = local_record["text"]
    lines = SOURCE.split("\n")
    offset = sum(len(line) + 1 for line in lines[:16]) + 11
    expected = SOURCE[:offset] + text + SOURCE[offset:]
    diff = bigcode(tmp_path, "complete", str(path), *at, "--diff", "--server", server.url)
    assert diff.returncode == 0 and diff.stdout.startswith(f"--- a/{path}")
    assert "".join(line[1:] for line in diff.stdout.splitlines(keepends=True) if line.startswith("+") and not
                   line.startswith("+++")) in expected
    written = bigcode(tmp_path, "complete", str(path), *at, "--in-place", "--server", server.url)
    assert written.returncode == 0, written.stderr
    assert path.read_text() == expected


def test_the_local_and_the_remote_completer_return_the_same_result(server, monkeypatch):
    """One CompletionResult from either completer: equal but for the timings (and load_s, 0 for a server)."""
    import dataclasses

    from bigcode_cli.cli.commands.completer import CompletionRequest
    from bigcode_cli.cli.commands.generation_run import LocalCompleter, completer_for, make_settings
    from bigcode_cli.cli.commands.server_client import RemoteCompleter
    from bigcode_cli.terminal.model_choice import ModelChoice

    monkeypatch.delenv("BIGCODE_SERVER", raising=False)
    local, remote = completer_for(None, ModelChoice()), completer_for(server.url, ModelChoice())
    assert isinstance(local, LocalCompleter) and isinstance(remote, RemoteCompleter)
    settings = make_settings(max_new_tokens=12, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=None,
                             stop=None, num_samples=2, lines=None, block=True, fim_order="spm")
    # timings, and the drafts: their length follows each runner's measured step costs (model/step_costs.py)
    untimed = dict(load_s=0.0, prefill_s=0.0, decode_s=0.0, tokens_per_s=0.0, draft_tokens=0, draft_accepted=0)
    for request in (CompletionRequest(PREFIX, SUFFIX, "fim", settings),
                    CompletionRequest("def mean(", "", "continue", settings)):
        streamed = []
        here = local.complete(request, None)
        there = remote.complete(request, None)
        assert dataclasses.replace(there, **untimed) == dataclasses.replace(here, **untimed)
        assert len(here.samples) == 2 and here.dtype and there.load_s == 0.0
        one = request._replace(settings=dataclasses.replace(settings, num_samples=1))
        assert remote.complete(one, streamed.append).texts == ["".join(streamed)] == local.complete(one, None).texts


def test_server_client_never_imports_torch(server, tmp_path):
    code = ("import sys; from bigcode_cli.cli.app import run; status = run(sys.argv[1:]); "
            "print('torch' in sys.modules, file=sys.stderr); sys.exit(status)")
    done = bigcode(tmp_path, "infill", "--prefix", PREFIX, "--suffix", SUFFIX, "-t", "0", "--max-new-tokens", "8",
                   "--server", server.url, code=code)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "False"
    generated = bigcode(tmp_path, "generate", "def mean(", "-t", "0", "--max-new-tokens", "8", "--server", server.url,
                        code=code)
    assert generated.returncode == 0 and generated.stderr.strip().splitlines()[-1] == "False", generated.stderr


def test_server_client_reports_an_unreachable_server_in_one_line(tmp_path):
    from serve_process import bound_socket

    with bound_socket() as refusing:  # held while the client tries: nobody else can listen there meanwhile
        done = bigcode(tmp_path, "generate", "x", "--server", f"http://127.0.0.1:{refusing.getsockname()[1]}")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: cannot reach the server at") and done.stderr.count("\n") == 1


def test_sigterm_shuts_down_cleanly(server):
    # last in this module: it stops the module's server
    code = server.stop(signal.SIGTERM)
    assert code == 0, server.log()
    log = server.log()
    assert "Traceback" not in log and log.rstrip().endswith("stopped")
