"""What a web page, a foreign host name or a key can and cannot do to `bigcode serve` (issue 20): the
Host and Origin checks, JSON-only bodies, API keys as UTF-8 bytes from --api-key-file, and the model
served by its name, never its local path. The policies alone first, then real servers on free ports
driven by curl, httpx and the openai client."""

from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from checkpoints import save_lm_with_tokenizer  # noqa: E402
from serve_process import ServerProcess  # noqa: E402

from bigcode_cli.errors import InputError, UsageError  # noqa: E402
from bigcode_cli.serve.api_keys import KeyRing, key_bytes, read_key_file  # noqa: E402
from bigcode_cli.serve.hosts import HostPolicy, allowed_hosts, allowed_origins  # noqa: E402

# -- which Host headers name the server ---------------------------------------------------------------

LOOPBACK = HostPolicy("127.0.0.1", "127.0.0.1")
EVERYWHERE = HostPolicy("0.0.0.0", "0.0.0.0")
ONE_ADDRESS = HostPolicy("192.0.2.10", "192.0.2.10")
BY_NAME = HostPolicy("devbox.lan", "192.0.2.10")


@pytest.mark.parametrize("header", ["localhost", "localhost:8012", "LOCALHOST:8012", "localhost.:8012",
                                    "127.0.0.1", "127.0.0.1:8012", "127.1.2.3:8012", "[::1]", "[::1]:8012",
                                    "app.localhost:8012", None])
def test_loopback_server_answers_its_loopback_names(header):
    assert LOOPBACK.allows(header)
    assert HostPolicy("localhost", "127.0.0.1").allows(header)
    assert HostPolicy("::1", "::1").allows(header)


@pytest.mark.parametrize("header", ["evil.example", "evil.example:8012", "127.0.0.1.nip.io:8012", "localhost.evil",
                                    "192.0.2.10:8012", "[2001:db8::1]:8012", "", "::1]:8012", "[::1"])
def test_loopback_server_refuses_other_hosts(header):
    assert not LOOPBACK.allows(header)


def test_a_server_on_every_address_answers_any_address_and_localhost_but_no_other_name():
    for header in ("192.0.2.10:8012", "10.1.2.3", "[2001:db8::1]:8012", "127.0.0.1:8012", "localhost:8012"):
        assert EVERYWHERE.allows(header), header
    for header in ("devbox.lan:8012", "evil.example", "rebind.evil.example:8012"):
        assert not EVERYWHERE.allows(header), header
    assert HostPolicy("0.0.0.0", "0.0.0.0", ("devbox.lan",)).allows("DevBox.lan:8012")


def test_a_server_on_one_address_or_name_answers_only_those():
    assert ONE_ADDRESS.allows("192.0.2.10:8012") and not ONE_ADDRESS.allows("192.0.2.11:8012")
    assert not ONE_ADDRESS.allows("localhost:8012") and not ONE_ADDRESS.allows("127.0.0.1:8012")
    assert BY_NAME.allows("devbox.lan:8012") and BY_NAME.allows("192.0.2.10") and not BY_NAME.allows("other.lan")


def test_allowed_hosts_and_origins_options():
    assert allowed_hosts(["devbox.lan, Other.LAN:8012", "*"]) == ("devbox.lan", "other.lan", "*")
    assert HostPolicy(allowed=("*",)).allows("anything.example")
    assert allowed_origins(["http://localhost:3000/, https://Editor.example", "null", "chrome-extension://abc"]) == (
        "http://localhost:3000", "https://editor.example", "null", "chrome-extension://abc")
    for bad in ("localhost:3000/app", "http://localhost:3000/app", "file.html", "http://x?y=1"):
        with pytest.raises(UsageError, match="--allowed-origins"):
            allowed_origins([bad])
    with pytest.raises(UsageError, match="--allowed-hosts"):
        allowed_hosts(["http://devbox.lan/"])


# -- API keys --------------------------------------------------------------------------------------


def test_keys_are_utf8_bytes_compared_whole():
    ring = KeyRing([key_bytes("clé"), b"second"])
    assert ring.matches("Bearer clé".encode()) and ring.matches(b"Bearer second")
    assert not ring.matches(b"Bearer cl\xe9")  # the latin-1 spelling of the key is another key
    for header in (None, b"", "clé".encode(), b"Bearer ", b"Bearer second ", b"Bearer secon", b"Bearer secondx",
                   b"bearer second"):
        assert not ring.matches(header), header
    assert not KeyRing() and len(KeyRing([b"a", b"a", b""])) == 1
    assert KeyRing([key_bytes("caf\udce9")]).matches(b"Bearer caf\xe9")  # an argument's own bytes, not UTF-8
    for unusable in (b" key", b"key\t", "clé\n".encode(), b"k\x7fey"):  # no HTTP header could carry it whole
        with pytest.raises(InputError, match="--api-key: a key cannot"):
            KeyRing([unusable])


def test_key_file_one_key_per_line(tmp_path):
    path = tmp_path / "keys"
    path.write_bytes("clé\r\n\n  bob-key  \n\t\nlast".encode())
    path.chmod(0o600)
    warnings: list[str] = []
    assert read_key_file(str(path), warnings.append) == ["clé".encode(), b"bob-key", b"last"]
    assert warnings == []
    path.chmod(0o644)
    read_key_file(str(path), warnings.append)
    assert len(warnings) == 1 and "readable by other users" in warnings[0]


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), (b"", "holds no key"), (b" \n\n", "holds no key"),
    (b"good\nbad\x01key\n", "line 2: a key cannot contain control characters"),
    (b"x" * (1024 * 1024 + 1), "larger than"),
])
def test_bad_key_files(tmp_path, content, message):
    path = tmp_path / "keys"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_key_file(str(path))
    with pytest.raises(InputError, match="directory"):
        read_key_file(str(tmp_path))


# -- real servers ------------------------------------------------------------------------------------

KEYS = ["clé", "bob-key"]
PAGE = "http://localhost:3000"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("private_models") / "team-lm", n_positions=256)


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint):
    home = tmp_path_factory.mktemp("security_home")
    keys = home / "keys.txt"
    keys.write_text("\n".join(KEYS) + "\n", encoding="utf-8")
    keys.chmod(0o600)
    process = ServerProcess(["--model", str(checkpoint), "--api-key-file", str(keys), "--allowed-origins", PAGE],
                            home)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def curl(url: str, *options: str, body: str | None = None) -> tuple[int, str]:
    args = ["curl", "--silent", "--max-time", "60", "--write-out", "\n%{http_code}", *options, url]
    if body is not None:
        args[1:1] = ["--data-binary", "@-"]
    done = subprocess.run(args, input=(body or "").encode(), capture_output=True, timeout=90)
    text, _, status = done.stdout.decode("utf-8", "replace").rpartition("\n")
    return int(status), text


BOB = {"Authorization": "Bearer bob-key"}
JSON = {"Content-Type": "application/json"}


def test_editors_are_served_unchanged(server):
    # curl as llama.vim runs it, the openai client, and curl with the UTF-8 key straight from the file
    status, text = curl(server.url + "/infill", "--header", "Content-Type: application/json", "--header",
                        "Authorization: Bearer bob-key", body=json.dumps({"input_prefix": "def f(", "n_predict": 3}))
    assert status == 200 and json.loads(text)["tokens_predicted"] <= 3
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="bob-key", max_retries=0, timeout=60)
    assert client.completions.create(model="x", prompt="def", max_tokens=2, temperature=0).usage.completion_tokens == 2
    status, _ = curl(server.url + "/v1/models", "--header", "Authorization: Bearer clé")
    assert status == 200
    localhost = server.url.replace("127.0.0.1", "localhost")
    status, _ = curl(localhost + "/v1/models", "--ipv4", "--header", "Authorization: Bearer clé")
    assert status == 200


def test_the_latin1_spelling_of_a_utf8_key_is_refused(server):
    reply = httpx.get(server.url + "/v1/models", headers={"Authorization": b"Bearer cl\xe9"}, timeout=30)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"


def test_the_key_is_not_in_the_process_list(server):
    cmdline = open(f"/proc/{server.process.pid}/cmdline", "rb").read()
    assert b"--api-key-file" in cmdline and b"bob-key" not in cmdline


def test_a_rebound_host_name_is_refused_in_the_protocols_shape(server):
    for path, method in (("/v1/completions", "POST"), ("/infill", "POST"), ("/health", "GET"), ("/v1/models", "GET")):
        reply = httpx.request(method, server.url + path, headers={**BOB, **JSON, "Host": "evil.example:8012"},
                              content=b'{"prompt": "x", "max_tokens": 1}', timeout=30)
        assert reply.status_code == 403, (path, reply.text)
        error = reply.json()["error"]
        assert "Host" in error["message"] and "--allowed-hosts" in error["message"]
        assert set(error) == ({"message", "type", "param", "code"} if path.startswith("/v1/") else
                              {"code", "message", "type"})
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}", "localhost"):
        assert httpx.get(server.url + "/v1/models", headers={**BOB, "Host": host}, timeout=30).status_code == 200


def test_a_web_page_cannot_use_the_server(server):
    body = json.dumps({"input_prefix": "x", "n_predict": 1})
    # the "simple" requests a page sends without a preflight: a form, or fetch with text/plain
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        reply = httpx.post(server.url + "/infill", content=body, headers={**BOB, "Content-Type": content_type},
                           timeout=30)
        assert reply.status_code == 415 and "application/json" in reply.json()["error"]["message"], content_type
        with_origin = httpx.post(server.url + "/infill", content=body, timeout=30,
                                 headers={**BOB, "Content-Type": content_type, "Origin": "https://evil.example"})
        assert with_origin.status_code == 403
    assert httpx.post(server.url + "/infill", content=body, headers=BOB, timeout=30).status_code == 415  # no type
    # a page's fetch with JSON: refused, preflight or not, and no CORS header lets it read the refusal
    for origin in ("https://evil.example", "null", "http://localhost:3001", PAGE + ".evil.example"):
        refused = httpx.post(server.url + "/infill", content=body, timeout=30,
                             headers={**BOB, **JSON, "Origin": origin})
        assert refused.status_code == 403 and "--allowed-origins" in refused.json()["error"]["message"], origin
        assert "access-control-allow-origin" not in refused.headers
        preflight = httpx.options(server.url + "/infill", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def test_an_allowed_origin_gets_cors_answers(server):
    preflight = httpx.options(server.url + "/v1/completions", timeout=30, headers={
        "Origin": PAGE, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == PAGE
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    reply = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=60,
                       headers={**BOB, "Origin": PAGE})
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == PAGE
    unauthorised = httpx.post(server.url + "/v1/completions", json={"prompt": "x"}, headers={"Origin": PAGE},
                              timeout=30)
    assert unauthorised.status_code == 401 and unauthorised.headers["access-control-allow-origin"] == PAGE


def test_the_model_is_served_by_name_not_by_path(server, checkpoint):
    models = httpx.get(server.url + "/v1/models", headers=BOB, timeout=30).json()
    assert [entry["id"] for entry in models["data"]] == ["team-lm"]
    completion = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, headers=BOB,
                            timeout=60)
    infill = httpx.post(server.url + "/infill", json={"input_prefix": "x", "n_predict": 1}, headers=BOB, timeout=60)
    assert completion.json()["model"] == infill.json()["model"] == "team-lm"
    for reply in (models, completion.json(), infill.json(), httpx.get(server.url + "/health", timeout=30).json()):
        assert str(checkpoint.parent) not in json.dumps(reply)


def test_a_load_error_reaches_clients_without_the_local_path(tmp_path):
    from starlette.testclient import TestClient

    from bigcode_cli.errors import CheckpointError
    from bigcode_cli.serve.app import create_app
    from bigcode_cli.serve.handling import ServeConfig
    from bigcode_cli.serve.server import path_hider
    from bigcode_cli.serve.worker import EngineWorker

    private = tmp_path / "home" / "alice" / "secret-project" / "lm"

    def load():
        raise CheckpointError(f"{private}/model.safetensors is truncated (given as ./secret-project/lm)")

    worker = EngineWorker(load, hide=path_hider("./secret-project/lm", private, "lm"))
    with TestClient(create_app(worker, ServeConfig("lm")), base_url="http://127.0.0.1:8012") as client:
        assert worker.loaded_event.wait(30)
        health = client.get("/health")
        refused = client.post("/infill", json={"input_prefix": "x"})
    assert health.status_code == refused.status_code == 503
    for reply in (health, refused):
        message = reply.json()["error"]["message"]
        assert "secret-project" not in message and "lm/model.safetensors is truncated" in message, message
    assert str(private) in worker.error  # the server's own log still says where


@pytest.fixture(scope="module")
def everywhere(tmp_path_factory, checkpoint):
    process = ServerProcess(["--model", str(checkpoint), "--host", "0.0.0.0", "--alias", "shared-model",
                             "--allowed-hosts", "devbox.lan"], tmp_path_factory.mktemp("everywhere_home"),
                            env={"BIGCODE_API_KEY": "bob-key"})
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_a_server_on_every_address(everywhere):
    port = everywhere.port
    for host, status in ((f"127.0.0.1:{port}", 200), (f"192.0.2.10:{port}", 200), (f"[2001:db8::5]:{port}", 200),
                         (f"localhost:{port}", 200), (f"devbox.lan:{port}", 200),
                         (f"other.lan:{port}", 403), (f"evil.example:{port}", 403)):
        reply = httpx.get(everywhere.url + "/v1/models", headers={**BOB, "Host": host}, timeout=30)
        assert reply.status_code == status, (host, reply.text)
        if status == 200:
            assert reply.json()["data"][0]["id"] == "shared-model"
    assert b"bob-key" not in open(f"/proc/{everywhere.process.pid}/cmdline", "rb").read()


def test_a_stream_to_an_allowed_page_carries_cors_headers(server):
    with httpx.stream("POST", server.url + "/completion", json={"prompt": "x", "n_predict": 4, "stream": True},
                      headers={**BOB, "Origin": PAGE}, timeout=60) as reply:
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == PAGE
        events = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1]["stop"] is True


def test_the_cli_client_sends_a_non_ascii_key_as_utf8(server, tmp_path):
    import os
    import sys

    env = dict(os.environ, BIGCODE_HOME=str(tmp_path), BIGCODE_SERVER=server.url, BIGCODE_API_KEY="clé", NO_COLOR="1")
    done = subprocess.run([sys.executable, "-m", "bigcode_cli", "generate", "def", "--max-new-tokens", "2", "-t", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
