"""`bigcode serve`'s prompt cache, seen by clients: a prefix one request left is reused by a later request
while another slot is busy, never across API keys nor across `cache_salt` values, and reuse never changes
a greedy completion."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from serve_process import metrics, start_server  # noqa: E402

KEY_A, KEY_B = "key-of-alice", "key-of-bob"
PROMPT = '''import json


def load_settings(path: str) -> dict:
    """The settings stored as JSON at path."""
    with open(path) as handle:
        return json.load(handle)


def save_settings(path: str, settings: dict) -> None:
    """Store settings as JSON at path."""
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve_prefix_home")
    keys = home / "keys"
    keys.write_text(f"{KEY_A}\n{KEY_B}\n")
    keys.chmod(0o600)
    yield from start_server(home, ["--api-key-file", str(keys), "--parallel", "2", "--cache-ram", "64"])


def complete(server, key: str, prompt: str, route: str = "/completion", **fields) -> dict:
    """A greedy request's response; `route` /completion (llama.cpp) or /v1/completions (OpenAI)."""
    if route == "/completion":
        body = {"prompt": prompt, "n_predict": 6, "temperature": 0, **fields}
    else:
        body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, **fields}
    response = httpx.post(server.url + route, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_prefix_is_reused_by_a_later_request_while_another_slot_is_busy(server):
    first = complete(server, KEY_A, PROMPT + "    with open(path, 'w') as handle:\n")
    assert first["timings"]["cache_n"] == 0
    busy = threading.Thread(target=complete, args=(server, KEY_A, "x = 1\n" * 50), kwargs={"n_predict": 60})
    busy.start()
    try:
        later = complete(server, KEY_A, PROMPT + "    data = json.dumps(settings)\n")
    finally:
        busy.join(120)
    assert not busy.is_alive()
    assert later["timings"]["cache_n"] >= 40  # the shared beginning (PROMPT is about 60 tokens)
    assert later["timings"]["cache_n"] + later["timings"]["prompt_n"] == later["tokens_evaluated"]


def test_never_across_api_keys(server):
    prompt = PROMPT + "    # alice's\n"
    complete(server, KEY_A, prompt)
    again = complete(server, KEY_A, prompt)
    assert again["timings"]["prompt_n"] == 1  # only the last token again, for its logits
    other = complete(server, KEY_B, prompt)
    assert other["timings"]["cache_n"] == 0
    assert other["content"] == again["content"]


def test_never_across_cache_salts(server):
    prompt = PROMPT + "    # salted\n"
    for route in ("/completion", "/v1/completions"):
        first = complete(server, KEY_A, prompt, route, cache_salt=f"one {route}")
        assert first["timings"]["cache_n"] == 0
        assert complete(server, KEY_A, prompt, route, cache_salt=f"one {route}")["timings"]["prompt_n"] == 1
        assert complete(server, KEY_A, prompt, route, cache_salt=f"two {route}")["timings"]["cache_n"] == 0


def test_tgi_requests_keep_to_their_cache_salt(server):
    """TGI's /generate carries the salt in `parameters`; its response has no timings, so /metrics tells."""
    headers = {"Authorization": f"Bearer {KEY_A}"}

    def cached_by(salt: str) -> int:
        before = metrics(server, headers)["bigcode_prompt_tokens_cached_total"]
        body = {"inputs": PROMPT + "    # tgi\n", "parameters": {"max_new_tokens": 4, "cache_salt": salt}}
        response = httpx.post(server.url + "/generate", json=body, headers=headers, timeout=120)
        assert response.status_code == 200, response.text
        return metrics(server, headers)["bigcode_prompt_tokens_cached_total"] - before

    assert cached_by("tgi one") == 0
    assert cached_by("tgi one") >= 40
    assert cached_by("tgi two") == 0


def test_greedy_completion_with_reuse_equals_one_without(server):
    prompt = PROMPT + "    with open(path, 'w') as out:\n        json.dump("
    fresh = complete(server, KEY_B, prompt, cache_prompt=False, n_predict=12)
    assert fresh["timings"]["cache_n"] == 0
    complete(server, KEY_B, PROMPT + "    with open(path, 'w') as out:\n", n_predict=12)
    reused = complete(server, KEY_B, prompt, n_predict=12)
    assert reused["timings"]["cache_n"] >= 40
    assert reused["content"] == fresh["content"]
