"""`bigcode serve --parallel N`: requests generated together (continuous batching) make exactly the tokens they
make alone, whoever joins or leaves mid-run; slots plus queue bound what the server takes; nothing hangs."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from checkpoints import save_lm_with_tokenizer  # noqa: E402
from serve_process import ServerProcess, all_together, start_server, stream_events, wait_health  # noqa: E402

TIMEOUT = 120  # seconds any one request may take on a busy machine

# different prompts and lengths (so different positions in one step), fill-in-the-middle and plain
REQUESTS = [
    ("/infill", {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n\n\nprint(add(1, 2))\n"}),
    ("/completion", {"prompt": "import os\n\n\ndef list_python_files(directory):\n"}),
    ("/infill", {"input_prefix": "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n",
                 "input_suffix": "\n    def pop(self):\n        return self.items.pop()\n"}),
    ("/completion", {"prompt": "def fibonacci(n):\n    \"\"\"The n-th Fibonacci number.\"\"\"\n"}),
    ("/infill", {"input_prefix": "import json\n\n\ndef load(path):\n    with open(path) as f:\n        ",
                 "input_suffix": "\n\n\nconfig = load('settings.json')\n"}),
    ("/completion", {"prompt": "def is_prime(n):\n    if n < 2:\n        return False\n"}),
    ("/infill", {"input_prefix": "def mean(values):\n    total = ", "input_suffix": "\n    return total / len(values)\n"}),
    ("/completion", {"prompt": "# Sort a list of words by length\nwords = ['pear', 'fig', 'banana']\n"}),
]
GREEDY = {"temperature": 0, "n_predict": 32, "cache_prompt": False, "stream": False}


def post(server: ServerProcess, path: str, body: dict) -> dict:
    reply = httpx.post(server.url + path, json=body, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()


def answer(reply: dict) -> tuple[str, int, str]:
    """What must not depend on other requests: the text, how many tokens made it, why it stopped."""
    return reply["content"], reply["tokens_predicted"], reply["stop_type"]


def all_at_once(server: ServerProcess, requests: list[tuple[str, dict]]) -> list[dict]:
    """The requests sent together (released by one barrier), their replies in order; every wait bounded."""
    return all_together(len(requests), lambda i: post(server, *requests[i]), TIMEOUT)


@pytest.fixture(scope="module", params=["float32", "int8"])
def bundled(request, tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("serve_home"), ["--dtype", request.param, "--parallel", "8"])


@pytest.mark.parametrize("together", [1, 2, 4, 8])
def test_greedy_output_is_the_same_alone_and_in_company(bundled, together):
    alone = [answer(post(bundled, path, {**body, **GREEDY})) for path, body in REQUESTS[:together]]
    assert any(tokens > 4 for _, tokens, _ in alone)  # something was generated to compare
    replies = all_at_once(bundled, [(path, {**body, **GREEDY}) for path, body in REQUESTS[:together]])
    assert [answer(reply) for reply in replies] == alone
    wait_health(bundled, lambda body: body["slots_processing"] == 0 and body["slots_idle"] == 8)


# a random model with a long context: it never stops early, so requests surely overlap
LONG = {"temperature": 0, "n_predict": 300, "cache_prompt": False}


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory):
    # StarCoder's 8192-token context: fitting a multi-MB FIM prompt to it tokenizes ~0.25M characters a side, many times
    checkpoint = save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "lm", n_positions=8192, n_embd=64,
                                        n_layer=2, n_head=4)
    # without speculation: these tests need generations that outlast others, and this random model's output
    # repeats, which n-gram drafts make many times faster (tests/test_speculate_options.py batches speculation)
    yield from start_server(tmp_path_factory.mktemp("serve_home"),
                            ["--model", str(checkpoint), "--parallel", "3", "--queue", "1", "--speculate", "off"])


def test_a_request_joining_mid_run_changes_nothing(random_lm):
    first_body = {**LONG, "prompt": "def f(x):\n    return"}
    second_body = {**LONG, "prompt": "class A:\n    pass\n" * 3, "n_predict": 40}
    first_alone, second_alone = post(random_lm, "/completion", first_body), post(random_lm, "/completion", second_body)
    with httpx.Client(timeout=TIMEOUT) as client:
        with client.stream("POST", random_lm.url + "/completion", json={**first_body, "stream": True}) as response:
            events = stream_events(response)
            pieces = [next(events)["content"] for _ in range(5)]  # the first request is decoding now
            second = post(random_lm, "/completion", second_body)  # joins it, and leaves before it
            rest = list(events)
    pieces += [event["content"] for event in rest]
    assert rest[-1]["stop"] is True and rest[-1]["tokens_predicted"] == first_alone["tokens_predicted"] == 300
    assert "".join(pieces) == first_alone["content"]
    assert answer(second) == answer(second_alone)


def test_a_client_leaving_mid_run_frees_its_slot_and_changes_nothing(random_lm):
    bodies = [{**LONG, "prompt": "x = 1\n"}, {**LONG, "prompt": "for i in range(10):\n    print(i)\n"}]
    alone = [answer(post(random_lm, "/completion", body)) for body in bodies]
    leaver = {**LONG, "prompt": "while True:\n", "n_predict": 1000, "stream": True}
    results: list = []
    with httpx.Client(timeout=TIMEOUT) as client:
        with client.stream("POST", random_lm.url + "/completion", json=leaver) as response:
            events = stream_events(response)
            next(events)
            worker = threading.Thread(target=lambda: results.extend(all_at_once(
                random_lm, [("/completion", body) for body in bodies])))
            worker.start()
            wait_health(random_lm, lambda body: body["slots_processing"] == 3)  # all three in one batch
            next(events)
        # the stream is closed here: the client has gone while the others run
    worker.join(TIMEOUT + 20)
    assert not worker.is_alive(), "a request hung"
    assert [answer(reply) for reply in results] == alone
    wait_health(random_lm, lambda body: body["slots_processing"] == 0 and body["slots_idle"] == 3)
    deadline = time.monotonic() + 10
    while "(stopped: client gone)" not in random_lm.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "(stopped: client gone)" in random_lm.log()


def test_requests_beyond_the_slots_and_the_queue_get_503(random_lm):
    body = {**LONG, "prompt": "def g():\n", "n_predict": 1000, "stream": True}
    with httpx.Client(timeout=TIMEOUT) as a, httpx.Client(timeout=TIMEOUT) as b, httpx.Client(timeout=TIMEOUT) as c, \
            httpx.Client(timeout=TIMEOUT) as d:
        with a.stream("POST", random_lm.url + "/completion", json=body) as ra, \
                b.stream("POST", random_lm.url + "/completion", json=body) as rb, \
                c.stream("POST", random_lm.url + "/completion", json=body) as rc:
            assert [r.status_code for r in (ra, rb, rc)] == [200] * 3, [r.read() for r in (ra, rb, rc)]
            streams = [stream_events(r) for r in (ra, rb, rc)]
            for events in streams:  # all three slots are generating
                next(events)
            with d.stream("POST", random_lm.url + "/completion", json=body) as rd:  # waits in the one queue place
                wait_health(random_lm, lambda health: health["requests_waiting"] == 1)
                refused = httpx.post(random_lm.url + "/completion", json={**body, "stream": False}, timeout=TIMEOUT)
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                for events in streams:  # the running ones go on meanwhile
                    next(events)
                del rd
    wait_health(random_lm, lambda health: health["slots_processing"] == 0 and health["requests_waiting"] == 0)


def test_a_seeded_sample_draws_from_its_own_seed_in_company(random_lm):
    sampled = {**LONG, "prompt": "def h(y):\n", "n_predict": 60, "temperature": 1.0, "seed": 11}
    other = {**LONG, "prompt": "import sys\n", "n_predict": 60, "temperature": 1.0, "seed": 12}
    alone = answer(post(random_lm, "/completion", sampled))
    together = all_at_once(random_lm, [("/completion", sampled), ("/completion", other)])
    assert answer(together[0]) == alone
    assert together[0]["content"] != together[1]["content"]


def test_a_stream_and_health_go_on_while_multi_mb_prompts_are_tokenized(random_lm):
    # issue 21: a 4 MB prompt stopped the server, /health included. Fitting one to this context is about a second
    # of tokenizing; on the worker's thread the two below stalled every running slot for two seconds and more.
    line = "def scale(values, factor):\n    return [v * factor for v in values]\n"
    half = line * (1_900_000 // len(line))  # a prefix and a suffix: the body just under the 4 MiB limit
    big = {"input_prefix": half, "input_suffix": half, "n_predict": 1, "temperature": 0, "cache_prompt": False,
           "stream": True}
    statuses: list[int] = []
    slowest_health = [0.0]
    joined = threading.Event()  # both large requests are in slots: read and tokenized

    def send() -> None:
        with httpx.Client(timeout=TIMEOUT) as client:
            with client.stream("POST", random_lm.url + "/infill", json=big) as response:
                statuses.append(response.status_code)
                joined.wait(TIMEOUT)  # then leave: the server stops feeding its prompt

    def poll_health() -> None:
        while not joined.is_set():
            started = time.monotonic()
            status, health = random_lm.health()
            assert status == 200
            slowest_health[0] = max(slowest_health[0], time.monotonic() - started)
            if health["slots_processing"] == 3:
                joined.set()
            time.sleep(0.02)

    body = {**LONG, "prompt": "def f(x):\n", "n_predict": 6000, "stream": True}
    gaps: list[float] = []  # between the stream's events while the large requests were read and tokenized
    senders = [threading.Thread(target=send) for _ in range(2)]
    poller = threading.Thread(target=poll_health)
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            with client.stream("POST", random_lm.url + "/completion", json=body) as response:
                events = stream_events(response)
                next(events)
                last = time.monotonic()
                for thread in [*senders, poller]:
                    thread.start()
                for event in events:
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now
                    assert not event["stop"], "the stream ended before the large requests joined"
                    if joined.is_set():
                        break
    finally:
        joined.set()
        for thread in [*senders, poller]:
            thread.join(TIMEOUT)
    assert statuses == [200, 200]
    assert len(gaps) > 20
    assert max(gaps) < 1.0, f"the stream stalled {max(gaps):.2f} s while large prompts were tokenized"
    assert slowest_health[0] < 1.0, f"/health took {slowest_health[0]:.2f} s beside large prompts"
    wait_health(random_lm, lambda health: health["slots_processing"] == 0 and health["requests_waiting"] == 0)
