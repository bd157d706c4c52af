"""`bigcode serve` under abuse: bad inputs, a missing API key, clients that leave mid-stream, a full
queue, requests while loading. A random checkpoint with a long context (generations that would run for
thousands of tokens) behind --api-key and --queue 1."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from checkpoints import save_lm_with_tokenizer  # noqa: E402
from serve_process import bound_socket, start_server  # noqa: E402

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONTEXT = 8192
LONG = 6000  # tokens a cancelled generation would have run for (one a step: these requests say "speculate": "off",
# whose drafts would make a repeating generation end before the test is done with it)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # wide enough that LONG tokens take many seconds however fast the kernel gets: the queue tests below need the
    # first request still running after three one-second keystrokes (n_embd 128 and 4 layers once ran out early)
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("long_lm") / "lm", n_positions=CONTEXT, n_embd=256,
                                  n_layer=8, n_head=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint):
    # one slot: the queue tests below count on one running request (test_serve_batching has the slots' own)
    yield from start_server(tmp_path_factory.mktemp("serve_home"),
                            ["--model", str(checkpoint), "--api-key", KEY, "--queue", "1", "--parallel", "1"])


def post(server, path: str, body, headers=AUTH, timeout: float = 120) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json", **headers},
                      timeout=timeout)


def wait_idle(server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = server.health()
        if status == 200 and body["slots_processing"] == 0 and body["requests_waiting"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server is still busy: {server.health()}")


def test_a_long_generation_really_runs_to_its_limit(server):
    # the premise of the cancellation tests: this model does not stop by itself
    reply = post(server, "/completion", {"prompt": "def f(x):", "n_predict": 400, "temperature": 0}).json()
    assert reply["tokens_predicted"] == 400 and reply["stop_type"] == "limit"


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server):
    body = {"prompt": "def f(x):", "n_predict": LONG, "temperature": 0, "speculate": "off", "stream": True}
    with httpx.stream("POST", server.url + "/completion", json=body, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line)
                if len(events) == 3:
                    break
    # the connection is closed here; the next request must not wait for the 6000 tokens
    started = time.monotonic()
    reply = post(server, "/completion", {"prompt": "x = ", "n_predict": 4, "temperature": 0})
    waited = time.monotonic() - started
    assert reply.status_code == 200 and reply.json()["tokens_predicted"] == 4
    wait_idle(server)
    stopped = [line for line in server.log().splitlines() if "client gone" in line]
    assert stopped, server.log()
    new_tokens = int(stopped[-1].split(" new,")[0].rsplit(" ", 1)[1])
    assert 3 <= new_tokens < LONG / 4, stopped[-1]
    assert waited < 30


def test_t_max_predict_ms_bounds_generation_time(server):
    started = time.monotonic()
    reply = post(server, "/completion", {"prompt": "def f(x):", "n_predict": LONG, "temperature": 0, "speculate": "off",
                                         "t_max_predict_ms": 200}).json()
    assert reply["stop_type"] == "limit" and 0 < reply["tokens_predicted"] < LONG
    assert reply["timings"]["predicted_ms"] < 200 + 1000  # the token running at the deadline finishes
    assert time.monotonic() - started < 60


def test_a_full_queue_answers_503_at_once(server):
    body = {"prompt": "def f(x):", "n_predict": LONG, "temperature": 0, "speculate": "off", "stream": True}
    with httpx.Client(timeout=60, headers=AUTH) as running, httpx.Client(timeout=60, headers=AUTH) as waiting:
        with running.stream("POST", server.url + "/completion", json=body) as first:
            lines = first.iter_lines()  # kept: a dropped iterator would close the stream
            while not next(lines).startswith("data: "):  # wait until it is generating
                pass
            queued = threading.Thread(target=lambda: waiting.post(server.url + "/completion",
                                                                  json={**body, "stream": False, "n_predict": 4}))
            queued.start()
            deadline = time.monotonic() + 10
            while server.health()[1].get("requests_waiting") != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            started = time.monotonic()
            refused = post(server, "/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 4})
            assert time.monotonic() - started < 5
            assert refused.status_code == 503
            assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        queued.join(60)
    wait_idle(server)


def test_a_request_whose_client_left_while_it_waited_frees_its_place_at_once(server):
    # an editor cancels its request at every keystroke: requests whose clients left while they waited for the busy
    # slot must not hold the only queue place until the slot is free, refusing the one request still wanted
    body = {"prompt": "def f(x):", "n_predict": LONG, "temperature": 0, "speculate": "off", "stream": True}
    with httpx.Client(timeout=60, headers=AUTH) as running:
        with running.stream("POST", server.url + "/completion", json=body) as first:
            lines = first.iter_lines()  # kept: a dropped iterator would close the stream
            while not next(lines).startswith("data: "):  # wait until it is generating
                pass
            for keystroke in range(3):
                with pytest.raises(httpx.ReadTimeout):  # taken (a refusal would answer at once), then given up
                    post(server, "/completion", {"prompt": f"x = {keystroke}", "n_predict": 4}, timeout=1.0)
                deadline = time.monotonic() + 10
                while server.health()[1].get("requests_waiting") != 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert server.health()[1] == {**server.health()[1], "requests_waiting": 0, "slots_processing": 1}
            next(lines)  # the first request ran on meanwhile
    wait_idle(server)


def test_the_api_key_is_required_except_for_health(server):
    assert server.health()[0] == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Bearer {KEY}x"}):
        openai_reply = post(server, "/v1/completions", {"model": "m", "prompt": "x"}, headers=headers)
        assert openai_reply.status_code == 401
        assert openai_reply.json()["error"]["code"] == "invalid_api_key"
        llama_reply = post(server, "/infill", {"input_prefix": "x"}, headers=headers)
        assert llama_reply.status_code == 401
        assert llama_reply.json()["error"]["type"] == "authentication_error"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert client.completions.create(model="m", prompt="def", max_tokens=3, temperature=0).usage.completion_tokens == 3
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()


BAD_OPENAI = [
    b"{",  # malformed JSON
    b"[1, 2]",  # not an object
    b"\xff\xfe{}",  # not UTF-8
    b'{"prompt": "x", "temperature": NaN}',  # NaN (Python's JSON reads it)
    b"[" * 100_000 + b"]" * 100_000,  # nested too deeply
    b'{"prompt": "x", "max_tokens": ' + b"1" * 5000 + b"}",  # more digits than Python converts: was a 500
    {"prompt": 5},
    {"prompt": ["a", "b"]},
    {"prompt": [10**9]},  # token id outside the vocabulary
    {"prompt": "x", "max_tokens": "16"},
    {"prompt": "x", "max_tokens": -1},
    {"prompt": "x", "max_tokens": CONTEXT + 1},
    {"prompt": "x", "temperature": "hot"},
    {"prompt": "x", "temperature": -0.5},
    {"prompt": "x", "top_p": 1.5},
    {"prompt": "x", "n": 0},
    {"prompt": "x", "n": 1000},
    {"prompt": "x", "stop": 7},
    {"prompt": "x", "stop": ["s"] * 100},
    {"prompt": "x", "stream": "yes"},
    {"prompt": "x", "suffix": 3},
    {"prompt": "x", "seed": "one"},
    {"prompt": "x", "seed": 2**70},
    {"prompt": "x", "bigcode": {"fim_order": "abc"}},
    # text that is not Unicode (issue 20: these were `internal error: TypeError: TextInputSequence must be str`)
    {"prompt": "\ud800"},
    {"prompt": ["x = '\udfff'"]},
    {"prompt": "x", "suffix": "y\ud800"},
    {"prompt": "x", "stop": ["\udc80"]},
    b'{"prompt": "\\ud800\\u00e9"}',  # the escape itself, as a client's JSON encoder writes it
]
BAD_LLAMA = [
    ("/infill", b"{"),
    ("/infill", {"input_prefix": ["a"]}),
    ("/infill", {"input_prefix": "a", "input_extra": ["not a chunk"]}),
    ("/infill", {"input_prefix": "a", "input_extra": [{"filename": 1, "text": "x"}]}),
    ("/infill", {"input_prefix": "a", "n_predict": "many"}),
    ("/infill", b'{"input_prefix": "a", "n_predict": -' + b"9" * 4400 + b"}"),
    ("/infill", {"input_prefix": "a", "n_predict": CONTEXT + 1}),
    ("/infill", {"input_prefix": "a", "response_fields": "content"}),
    ("/infill", {"input_prefix": "a", "t_max_predict_ms": 1.5}),
    ("/infill", {"input_prefix": "a", "cache_prompt": "true"}),
    ("/completion", {"prompt": {"text": "x"}}),
    ("/completion", {"prompt": "x", "stop": "\n"}),
    ("/completion", {"prompt": "x", "repeat_penalty": 0}),
    ("/completion", {"prompt": [-1]}),
    ("/completion", {"prompt": "x", "seed": 2**64}),
    ("/infill", {"input_prefix": "def f():\n", "input_suffix": "\ud800"}),
    ("/infill", {"input_prefix": "\udbff"}),
    ("/infill", {"input_prefix": "a", "prompt": "\ud800"}),
    ("/infill", {"input_prefix": "a", "input_extra": [{"filename": "\ud800.py", "text": "x = 1"}]}),
    ("/infill", {"input_prefix": "a", "input_extra": [{"filename": "a.py", "text": "\udc00"}]}),
    ("/completion", {"prompt": "\ud800"}),
    ("/completion", {"prompt": "x", "stop": ["\ud800"]}),
]
# numbers at the edges of float32: each used to be `probability tensor contains either inf, nan or element < 0`
EXTREME_NUMBERS = [
    ("/v1/completions", {"prompt": "x", "temperature": 1e-300}),
    ("/v1/completions", {"prompt": "x", "temperature": 5e-324}),
    ("/v1/completions", {"prompt": "x", "repetition_penalty": 1e-308}),
    ("/v1/completions", {"prompt": "x", "temperature": 1e300, "repetition_penalty": 1e300, "top_p": 5e-324}),
    ("/completion", {"prompt": "x", "repeat_penalty": 1e-300}),
    ("/completion", {"prompt": "x", "temperature": 5e-324, "repeat_penalty": 5e-324, "stream": True}),
    ("/infill", {"input_prefix": "def f(", "temperature": 1e-300, "repeat_penalty": 1e-308}),
]


def _shape_ok(path: str, body: dict) -> bool:
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    keys = {"message", "type", "param", "code"} if path.startswith("/v1/") else {"code", "message", "type"}
    return set(error) == keys


def test_bad_inputs_get_4xx_json_errors_and_the_server_keeps_answering(server):
    cases = [("/v1/completions", body) for body in BAD_OPENAI] + BAD_LLAMA
    assert len(cases) >= 15
    for path, body in cases:
        reply = post(server, path, body)
        assert 400 <= reply.status_code < 500, (path, body if not isinstance(body, bytes) else body[:40], reply.text)
        assert _shape_ok(path, reply.json()), (path, reply.text)
    big = post(server, "/completion", json.dumps({"prompt": "x" * (5 * 1024 * 1024)}).encode())
    assert big.status_code == 413 and _shape_ok("/completion", big.json())
    for method, path, status in (("GET", "/v1/completions", 405), ("GET", "/nowhere", 404), ("POST", "/v1/nope", 404),
                                 ("GET", "/%ff%fe", 404), ("GET", "/v1/%ED%A0%80", 404)):
        reply = httpx.request(method, server.url + path, headers=AUTH, timeout=30)
        assert reply.status_code == status and _shape_ok(path, reply.json()), reply.text
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", None):
        headers = {**AUTH, "Content-Type": content_type} if content_type else AUTH
        for path in ("/v1/completions", "/infill", "/completion"):
            reply = httpx.post(server.url + path, content=b'{"prompt": "x"}', headers=headers, timeout=30)
            assert reply.status_code == 415 and _shape_ok(path, reply.json()), (path, content_type, reply.text)
    charset = httpx.post(server.url + "/completion", content=b'{"prompt": "x", "n_predict": 1}', timeout=60,
                         headers={**AUTH, "Content-Type": "Application/JSON; charset=utf-8"})
    assert charset.status_code == 200
    # still alive and well, and no traceback ever reached its log
    assert server.health()[0] == 200
    assert post(server, "/completion", {"prompt": "x", "n_predict": 2, "temperature": 0}).json()["tokens_predicted"] == 2
    assert "Traceback" not in server.log()


def test_numbers_at_the_edges_of_float32_are_answered(server):
    for path, body in EXTREME_NUMBERS:
        length = {"max_tokens": 4} if path.startswith("/v1/") else {"n_predict": 4}
        reply = post(server, path, {**body, **length})
        assert reply.status_code == 200, (path, body, reply.text)
        assert "error" not in reply.text, (path, body, reply.text)  # a streamed error would come with 200
    assert "Traceback" not in server.log() and "internal error" not in server.log()


def test_health_is_503_while_loading_then_200(checkpoint):
    import uvicorn

    from bigcode_cli.serve.app import create_app
    from bigcode_cli.serve.handling import ServeConfig
    from bigcode_cli.serve.worker import EngineWorker
    from bigcode_cli.store.loader import open_model

    may_load = threading.Event()

    def load():
        may_load.wait(30)
        return open_model(str(checkpoint), "causal-lm")

    worker = EngineWorker(load)
    sock = bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(worker, ServeConfig("random")), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        loading = httpx.get(url + "/health", timeout=10)
        assert loading.status_code == 503 and loading.json()["error"]["type"] == "unavailable_error"
        early = httpx.post(url + "/infill", json={"input_prefix": "x"}, timeout=10)
        assert early.status_code == 503
        may_load.set()
        deadline = time.monotonic() + 60
        while httpx.get(url + "/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.post(url + "/completion", json={"prompt": "x", "n_predict": 2}, timeout=60).status_code == 200
    finally:
        may_load.set()
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_large_requests_give_their_memory_back(server):
    # issue 20: ten 4 MB prompts left a server at ~1 GB for good. Not timed: a memory bound, with margin.
    # (Before the fix these /completion prompts were tokenized whole: ~4M tokens with this byte-level
    # tokenizer, and their memory stayed with the process.)
    line = "def scale(values, factor):\n    return [v * factor for v in values]\n"
    big = line * (3_800_000 // len(line))  # with JSON escapes and the suffix, just under the 4 MiB limit
    assert post(server, "/completion", {"prompt": "x", "n_predict": 1}).status_code == 200
    wait_idle(server)
    before = server.rss_mb()
    for path, body in (("/completion", {"prompt": big}), ("/v1/completions", {"prompt": big, "model": "m"}),
                       ("/infill", {"input_prefix": big, "input_suffix": big[:50_000]})):
        length = {"max_tokens": 1} if path.startswith("/v1/") else {"n_predict": 1}
        reply = post(server, path, {**body, **length, "temperature": 0})
        assert reply.status_code == 200, reply.text
        truncated = reply.json()["truncated"] if "truncated" in reply.json() else True
        assert truncated
    wait_idle(server)
    time.sleep(1.5)  # the worker gives memory back 0.5 s after its last large request
    grown = server.rss_mb() - before
    assert grown < 120, f"the server kept {grown:.0f} MB after three 4 MB requests"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_idle_server_uses_no_cpu(server):
    # a decode first, so the kernel's worker threads exist and have had a job to spin after
    assert post(server, "/completion", {"prompt": "def f():", "n_predict": 8, "temperature": 0}).status_code == 200
    wait_idle(server)
    time.sleep(1.0)  # past the workers' 2 ms spin and anything the request left behind
    before, started = server.cpu_seconds(), time.monotonic()
    time.sleep(3.0)
    used = server.cpu_seconds() - before
    # two spinning workers would use ~2 CPU seconds per second; an idle event loop, a few ms
    assert used < 0.15 * (time.monotonic() - started), f"{used:.2f} CPU s in 3 s of idling"
