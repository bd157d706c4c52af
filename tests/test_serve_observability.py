"""`GET /metrics` (Prometheus text) and `GET /slots` of `bigcode serve`, and TGI's `POST /generate` (llm-ls,
llm.nvim, llm-vscode): on a real server with an API key, on a free loopback port; every wait bounded."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from checkpoints import save_lm_with_tokenizer  # noqa: E402
from serve_process import ServerProcess, start_server  # noqa: E402
from serve_process import metrics as read_metrics  # noqa: E402

from bigcode_cli.serve.counters import ServeCounters, Slot  # noqa: E402

TIMEOUT = 120
KEY = {"Authorization": "Bearer team-key"}
SECRET = "password = 'hunter2-do-not-leak'\n"
FIM = "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n\nprint(add(1, 2))\n<fim_middle>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "lm", n_positions=1024, n_embd=64,
                                        n_layer=2, n_head=4)
    yield from start_server(tmp_path_factory.mktemp("serve_home"),
                            ["--model", str(checkpoint), "--parallel", "2", "--api-key", "team-key"])


def metrics(server: ServerProcess) -> dict[str, int]:
    return read_metrics(server, KEY)


def slots(server: ServerProcess) -> list[dict]:
    reply = httpx.get(server.url + "/slots", headers=KEY, timeout=TIMEOUT)
    assert reply.status_code == 200
    assert SECRET.strip() not in reply.text and "hunter2" not in reply.text  # never another client's prompt
    return reply.json()


def wait_until(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def completion(server: ServerProcess, body: dict) -> dict:
    reply = httpx.post(server.url + "/completion", json=body, headers=KEY, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()


def generate(server: ServerProcess, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/generate", json=body, headers=KEY, timeout=TIMEOUT)


# -- /metrics ----------------------------------------------------------------------------------------


def test_metrics_count_finished_requests_and_their_tokens(server):
    wait_until(lambda: metrics(server)["bigcode_requests_running"] == 0, "an idle server")
    before = metrics(server)
    prompt = "def fibonacci(n):\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    first = completion(server, {"prompt": prompt, "n_predict": 7, "temperature": 0})
    second = completion(server, {"prompt": prompt, "n_predict": 5, "temperature": 0})
    after = metrics(server)
    assert second["timings"]["cache_n"] > 0  # the same prompt again: reused from the prompt cache
    delta = {name: after[name] - before[name] for name in before}
    assert delta["bigcode_requests_finished_total"] == 2
    assert delta["bigcode_tokens_generated_total"] == first["tokens_predicted"] + second["tokens_predicted"]
    assert delta["bigcode_prompt_tokens_total"] == first["timings"]["prompt_n"] + second["timings"]["prompt_n"]
    assert delta["bigcode_prompt_tokens_cached_total"] == first["timings"]["cache_n"] + second["timings"]["cache_n"]
    assert after["bigcode_requests_running"] == 0 and after["bigcode_requests_queued"] == 0
    assert after["bigcode_prompt_cache_entries"] >= 1 and after["bigcode_prompt_cache_bytes"] > 0


def test_counters_are_exact_when_added_to_from_many_threads():
    counters = ServeCounters(parallel=2)

    def add() -> None:
        for _ in range(2000):
            counters.finished(prompt_tokens=5, cached_tokens=2, generated_tokens=1)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    totals = counters.totals()
    assert (totals.requests_finished, totals.prompt_tokens_evaluated, totals.prompt_tokens_cached,
            totals.generated_tokens) == (8000, 24000, 16000, 8000)
    counters.publish({1: Slot(1, "decoding", 9, 3)})
    assert counters.slots == (Slot(0, "idle"), Slot(1, "decoding", 9, 3))


# -- /slots ------------------------------------------------------------------------------------------


def test_the_worker_publishes_prefilling_and_decoding_slots_by_their_ids():
    from types import SimpleNamespace

    from bigcode_cli.serve.worker import EngineWorker, _Running

    def decoding(prefilling: bool, prompt: int, made: list[int]) -> SimpleNamespace:
        samples = [SimpleNamespace(token_ids=[0] * n) for n in made]
        return SimpleNamespace(prefilling=prefilling, prompt_ids=[0] * prompt, samples=samples)

    worker = EngineWorker(lambda: None, parallel=3)
    running = {1: _Running(None, None, 0.0, 2, decoding(True, 4000, [0])),
               2: _Running(None, None, 0.0, 0, decoding(False, 12, [3, 5]))}
    worker._publish(running)
    assert worker.counters.slots == (Slot(0, "decoding", 12, 8), Slot(1, "idle"), Slot(2, "prefill", 4000, 0))
    worker._publish({})
    assert [slot.state for slot in worker.counters.slots] == ["idle"] * 3



def test_slots_show_a_running_request_without_its_prompt(server):
    wait_until(lambda: all(slot["state"] == "idle" for slot in slots(server)), "idle slots")
    assert [slot["id"] for slot in slots(server)] == [0, 1]
    body = {"prompt": SECRET * 3, "n_predict": 900, "temperature": 0, "cache_prompt": False, "stream": True,
            "speculate": "off"}  # one token a step: drafts from the repeating prompt would end it before the checks
    with httpx.stream("POST", server.url + "/completion", json=body, headers=KEY, timeout=TIMEOUT) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))  # generating now
        assert metrics(server)["bigcode_requests_running"] == 1
        busy = wait_until(lambda: [s for s in slots(server) if s["state"] == "decoding" and s["generated_tokens"]],
                          "a decoding slot")
        assert len(busy) == 1 and set(busy[0]) == {"id", "state", "prompt_tokens", "generated_tokens"}
        assert busy[0]["prompt_tokens"] > 10
    # the client left: its slot is idle again at the next step
    wait_until(lambda: all(slot["state"] == "idle" for slot in slots(server)), "the slot freed")


def test_observability_needs_the_key_and_a_local_host(server):
    for path in ("/metrics", "/slots"):
        refused = httpx.get(server.url + path, timeout=TIMEOUT)
        assert refused.status_code == 401 and "API key" in refused.json()["error"]["message"]
        wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer other"}, timeout=TIMEOUT)
        assert wrong.status_code == 401
        rebound = httpx.get(server.url + path, headers={**KEY, "Host": "evil.example"}, timeout=TIMEOUT)
        assert rebound.status_code == 403
        page = httpx.get(server.url + path, headers={**KEY, "Origin": "https://evil.example"}, timeout=TIMEOUT)
        assert page.status_code == 403


# -- TGI /generate -----------------------------------------------------------------------------------


def test_generate_answers_llm_ls_fim_prompts_like_completion(server):
    greedy = completion(server, {"prompt": FIM, "n_predict": 12, "temperature": 0, "cache_prompt": False})
    reply = generate(server, {"inputs": FIM, "parameters": {"max_new_tokens": 12, "do_sample": False}})
    assert reply.status_code == 200 and reply.json() == {"generated_text": greedy["content"]}
    full = generate(server, {"inputs": FIM, "parameters": {"max_new_tokens": 12, "return_full_text": True}})
    assert full.json() == {"generated_text": FIM + greedy["content"]}
    # the special tokens are tokens: spelled as plain text they would make a longer, different prompt
    plain = completion(server, {"prompt": FIM, "n_predict": 1, "cache_prompt": False})
    assert plain["tokens_evaluated"] < len(FIM) // 2


def test_generate_samples_as_llm_ls_asks_and_repeats_with_a_seed(server):
    # llm-ls / llm.nvim's default parameters; a seed makes the sample repeatable
    parameters = {"max_new_tokens": 10, "temperature": 0.2, "top_p": 0.95, "do_sample": True, "seed": 7,
                  "return_full_text": False, "stop": ["\n\n"], "details": False}
    first = generate(server, {"inputs": FIM, "parameters": parameters})
    again = generate(server, {"inputs": FIM, "parameters": parameters})
    assert first.status_code == 200 and first.json() == again.json()
    assert isinstance(first.json()["generated_text"], str) and "\n\n" not in first.json()["generated_text"]


@pytest.mark.parametrize("body, field", [
    ({}, "inputs"),
    ({"inputs": ""}, "inputs"),
    ({"inputs": 3}, "inputs"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, "max_new_tokens"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 100000}}, "max_new_tokens"),
    ({"inputs": "x", "parameters": {"temperature": 0}}, "temperature"),
    ({"inputs": "x", "parameters": {"top_k": 0}}, "top_k"),
    ({"inputs": "x", "parameters": {"top_p": 1.5}}, "top_p"),
    ({"inputs": "x", "parameters": {"repetition_penalty": -1}}, "repetition_penalty"),
    ({"inputs": "x", "parameters": {"seed": -1}}, "seed"),
    ({"inputs": "x", "parameters": {"do_sample": "yes"}}, "do_sample"),
    ({"inputs": "x", "parameters": {"stop": ["s"] * 17}}, "stop"),
    ({"inputs": "x", "parameters": "fast"}, "parameters"),
])
def test_generate_refuses_bad_requests_in_tgis_shape(server, body, field):
    reply = generate(server, body)
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert set(error) == {"error", "error_type"} and error["error_type"] == "validation"
    assert field in error["error"]


def test_generate_refuses_lone_surrogates_and_a_missing_key(server):
    raw = b'{"inputs": "def f(\\ud800", "parameters": {"max_new_tokens": 2}}'
    reply = httpx.post(server.url + "/generate", content=raw, headers={**KEY, "Content-Type": "application/json"},
                       timeout=TIMEOUT)
    assert reply.status_code == 400 and "inputs" in reply.json()["error"]
    stop = {"inputs": "x", "parameters": {"stop": ["\udfff"]}}
    reply = httpx.post(server.url + "/generate", content=json.dumps(stop).encode(),
                       headers={**KEY, "Content-Type": "application/json"}, timeout=TIMEOUT)
    assert reply.status_code == 400 and "stop" in reply.json()["error"]
    unauthorised = httpx.post(server.url + "/generate", json={"inputs": "x"}, timeout=TIMEOUT)
    assert unauthorised.status_code == 401
    assert unauthorised.json()["error_type"] == "authentication"
