"""The checkpoint cache: name resolution, pull against a local fake hub with the real huggingface_hub client,
import (.bin -> safetensors), verify, rm, path safety, and the `bigcode models` commands."""

import json
import os
import threading
import time
from pathlib import Path

import pytest
from checkpoints import save_checkpoint
from hub_server import FakeHub
from tokenizer_files import SANTACODER_SPECIALS, STARCODER_SPECIALS, save_tokenizer

from bigcode_cli.cli import app as cli
from bigcode_cli import paths, store
from bigcode_cli.errors import CheckpointError, ModelNotFoundError, StoreError

REPO = "bigcode/tiny-test"


@pytest.fixture(autouse=True)
def store_env(tmp_path, monkeypatch):
    """Our cache, the HF cache and the bundled directory all live in this test's tmp dir."""
    monkeypatch.setenv("BIGCODE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for name in ("HF_ENDPOINT", "HF_TOKEN", "TRANSFORMERS_OFFLINE", "BIGCODE_MODEL", "BIGCODE_CLASSIFY_MODEL",
                 "BIGCODE_TAG_MODEL", "BIGCODE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(paths, "bundled_dir", lambda: bundled)
    return tmp_path


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    """A tiny causal-LM checkpoint written by transformers, with a StarCoder-style tokenizer."""
    path = save_checkpoint(tmp_path_factory.mktemp("lm") / "ckpt", vocab_size=300)
    save_tokenizer(path, STARCODER_SPECIALS)
    return path


@pytest.fixture(scope="session")
def lm_files(lm_dir):
    return {p.name: p.read_bytes() for p in lm_dir.iterdir() if p.is_file()}


@pytest.fixture
def hub(monkeypatch, lm_files):
    """A fake hub serving REPO (main), with a README and a .bin that a pull must not fetch."""
    import huggingface_hub.constants

    with FakeHub() as server:
        server.add(REPO, {**lm_files, "README.md": b"# tiny\n", "pytorch_model.bin": b"not fetched"})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        # huggingface_hub read HF_HUB_OFFLINE once at import (conftest sets it): follow the environment
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield server


def models_root() -> Path:
    return Path(os.environ["BIGCODE_HOME"]) / "models"


def entries() -> list[Path]:
    root = models_root()
    return sorted(p for p in root.glob("*/*") if not p.parent.name.startswith(".")) if root.is_dir() else []


def leftovers() -> list[Path]:
    return [p for p in (models_root() / ".tmp").glob("*")] if (models_root() / ".tmp").is_dir() else []


def run_cli(capsys, *args):
    """Run `bigcode ARGS`; stderr comes back with rich's line wrapping undone (one message, one line)."""
    code = cli.run(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, " ".join(err.split()) + ("\n" if err else "")


# --- names --------------------------------------------------------------------------------------------


def test_aliases_point_at_real_gpt_bigcode_repos():
    assert store.ALIASES["santacoder"] == "bigcode/gpt_bigcode-santacoder"
    assert store.ALIASES["starcoderbase-1b"] == "bigcode/starcoderbase-1b"
    assert store.ALIASES["tiny_starcoder_py"] == "bigcode/tiny_starcoder_py"
    assert all(repo.startswith("bigcode/") for repo in store.ALIASES.values())


def test_default_model_from_environment(monkeypatch):
    assert store.default_model() == "bigcode-tiny"
    assert store.default_model("token-classification") == "bigcode-tiny-secrets"
    monkeypatch.setenv("BIGCODE_MODEL", "starcoder")
    monkeypatch.setenv("BIGCODE_CLASSIFY_MODEL", "my/langid")
    assert store.default_model("causal-lm") == "starcoder"
    assert store.default_model("sequence-classification") == "my/langid"


@pytest.mark.parametrize("name", ["bigcode/../../etc", "a/b/c", "bigcode\\evil", "bigcode//x", "..", "x/.",
                                  "bigcode/x@../../y", "bigcode/x@/abs", " bigcode/x"])
def test_names_that_escape_the_cache_are_refused(name, tmp_path, lm_dir):
    for call in (lambda: store.resolve(name), lambda: store.remove(name), lambda: store.pull(name),
                 lambda: store.import_checkpoint(lm_dir, name)):
        with pytest.raises((StoreError, ModelNotFoundError, CheckpointError)):
            call()
    assert entries() == [] and not (tmp_path / "etc").exists()


def test_traversal_refusal_messages(capsys):
    with pytest.raises(StoreError, match="invalid model name"):
        store.remove("../x")
    with pytest.raises(ModelNotFoundError, match="no checkpoint directory"):
        store.resolve("../definitely-not-here")
    code, out, err = run_cli(capsys, "models", "rm", "bigcode/../../x")
    assert (code, out) == (1, "") and err.startswith("error: invalid model name 'bigcode/../../x'")


def test_local_directory_resolves_in_place(lm_dir, tmp_path, monkeypatch):
    model = store.resolve(str(lm_dir))
    assert (model.source, model.path) == ("path", lm_dir.resolve())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        store.resolve(str(empty))
    nested = tmp_path / "a" / "b" / "c"
    nested.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no config.json"):
        store.resolve("a/b/c")


def test_remote_code_is_refused(tmp_path, lm_dir):
    ckpt = tmp_path / "remote"
    ckpt.mkdir()
    config = json.loads((lm_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling.Model"}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="remote code"):
        store.resolve(str(ckpt))
    with pytest.raises(CheckpointError, match="bigcode/gpt_bigcode-santacoder"):
        store.resolve("bigcode/santacoder")
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        store.pull("bigcode/santacoder")


def test_unknown_names_say_where_they_looked(capsys):
    with pytest.raises(ModelNotFoundError, match=r"looked in .*models and the Hugging Face cache.*bigcode models pull starcoder"):
        store.resolve("starcoder")
    code, out, err = run_cli(capsys, "models", "path", "no-such-model")
    assert (code, out) == (1, "") and err.startswith("error: unknown model 'no-such-model'")
    assert err.count("\n") == 1


# --- pull -----------------------------------------------------------------------------------------------


def test_pull_fetches_only_the_needed_files_atomically(hub, store_env, lm_files):
    seen = []
    model = store.pull(REPO, progress=lambda f, done, total: seen.append((f, done, total)))
    assert model.source == "downloaded" and model.path == models_root() / "bigcode--tiny-test" / "main"
    names = sorted(p.name for p in model.path.iterdir())
    assert names == sorted([*lm_files, "manifest.json"])  # no README.md, no pytorch_model.bin
    assert hub.count("GET", "/pytorch_model.bin") == 0 and hub.count("GET", "README.md") == 0
    for name, data in lm_files.items():
        assert (model.path / name).read_bytes() == data
    manifest = json.loads((model.path / "manifest.json").read_text())
    assert manifest["commit"] == hub.repos[REPO].refs["main"] and manifest["revision"] == "main"
    assert set(manifest["files"]) == set(lm_files)
    assert seen[-1][1] == seen[-1][2] == sum(len(d) for d in lm_files.values())
    assert leftovers() == [] and not (store_env / "hf" / "hub").exists()  # nothing written to the HF cache
    # afterwards it resolves offline, and a second pull downloads nothing
    assert store.resolve(REPO, offline=True) == store.ResolvedModel(REPO, model.path, "cache", REPO, "main")
    again = store.pull(REPO)
    assert again.source == "cache" and hub.count("GET", "/model.safetensors") == 1


def test_pull_a_revision_and_an_alias(hub, monkeypatch, lm_files, tmp_path):
    config = json.loads(lm_files["config.json"])
    config["n_positions"] = 32
    commit = hub.add(REPO, {**lm_files, "config.json": json.dumps(config).encode()}, revision="v1")
    model = store.pull(f"{REPO}@v1")
    assert model.path.name == "v1" and model.revision == "v1"
    assert store.info(f"{REPO}@v1")["n_positions"] == 32 and store.info(f"{REPO}@v1")["commit"] == commit
    by_commit = store.pull(REPO, revision=commit)
    assert by_commit.path.name == commit
    monkeypatch.setitem(store.ALIASES, "tiny", REPO)
    assert store.pull("tiny").path == models_root() / "bigcode--tiny-test" / "main"
    assert store.info("tiny")["n_positions"] == 64
    with pytest.raises(ModelNotFoundError, match="no revision 'nope'"):
        store.pull(f"{REPO}@nope")
    with pytest.raises(ModelNotFoundError, match="not found"):
        store.pull("bigcode/absent")


def test_dropped_connection_leaves_nothing_usable(hub):
    hub.drop.add("model.safetensors")
    with pytest.raises(StoreError, match="nothing was saved"):
        store.pull(REPO)
    assert entries() == [] and leftovers() == []
    with pytest.raises(ModelNotFoundError):
        store.resolve(REPO, offline=True)
    assert hub.count("GET", "/model.safetensors") == 2  # the broken transfer and huggingface_hub's one retry
    hub.drop.clear()
    assert store.pull(REPO).source == "downloaded"
    store.verify(REPO)


def test_interrupted_pull_leaves_nothing_usable(hub):
    def interrupt(filename, done, total):
        if filename == "model.safetensors":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.pull(REPO, progress=interrupt)
    assert entries() == [] and leftovers() == []
    assert store.pull(REPO).source == "downloaded"


def test_concurrent_pulls_end_with_one_good_copy(hub):
    hub.gate.clear()  # weight downloads wait until both pulls are under way
    results, errors = [], []

    def worker():
        try:
            results.append(store.pull(REPO))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while hub.count("GET", "/model.safetensors") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    hub.gate.set()
    for t in threads:
        t.join(10)
    assert errors == []
    assert sorted(r.source for r in results) == ["cache", "downloaded"]
    assert results[0].path == results[1].path and entries() == [results[0].path]
    assert hub.count("GET", "/model.safetensors") == 1 and leftovers() == []
    store.verify(REPO)


def test_a_hub_whose_name_does_not_resolve_means_no_network(monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")  # .invalid never resolves (RFC 6761)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    code, out, err = run_cli(capsys, "models", "pull", REPO)
    assert (code, out) == (1, "") and entries() == [] and leftovers() == []
    assert err == (f"error: cannot download {REPO}: no network (hub.invalid does not resolve); nothing was saved. "
                   "Bundled and cached models need none: --offline or HF_HUB_OFFLINE=1 never tries\n")


def test_offline_mode_gives_one_clear_line(monkeypatch, capsys):
    with pytest.raises(ModelNotFoundError, match="offline"):
        store.pull(REPO)
    with pytest.raises(ModelNotFoundError, match="offline"):
        store.resolve(REPO, download=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code, out, err = run_cli(capsys, "models", "pull", REPO, "--offline")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: cannot download {REPO}: offline") and err.count("\n") == 1


def test_huggingface_cache_snapshot_is_used_in_place(hub, store_env, lm_files):
    from huggingface_hub import hf_hub_download

    cache = store_env / "hf" / "hub"
    for name in lm_files:
        hf_hub_download(REPO, name, cache_dir=cache, endpoint=hub.url)
    model = store.resolve(REPO, offline=True)
    commit = hub.repos[REPO].refs["main"]
    assert model.source == "hf-cache" and model.path == cache / "models--bigcode--tiny-test" / "snapshots" / commit
    assert store.pull(REPO).source == "hf-cache"
    assert entries() == [] and hub.count("GET", "/api/models/bigcode/tiny-test/revision/main") == 0
    listed = [m for m in store.list_models() if m["source"] == "hf-cache"]
    assert [m["name"] for m in listed] == [REPO] and listed[0]["tasks"] == ["causal-lm"]
    assert store.verify(REPO)["files"] == len(lm_files)
    blob = (model.path / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x80
    blob.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="model.safetensors hash differs"):
        store.verify(REPO)
    with pytest.raises(StoreError, match="Hugging Face cache"):
        store.remove(REPO)


def test_huggingface_cache_scan_finds_branches_tags_and_commits_of_complete_gpt_bigcode_snapshots(
        hub, store_env, lm_files):
    from huggingface_hub import hf_hub_download

    cache = store_env / "hf" / "hub"
    tagged = hub.add(REPO, lm_files, revision="v1")
    gpt2 = {**lm_files, "config.json": json.dumps({**json.loads(lm_files["config.json"]), "model_type": "gpt2"}).encode()}
    hub.add("acme/gpt2", gpt2)
    hub.add("acme/partial", lm_files)
    for repo, revision, names in ((REPO, "v1", lm_files), ("acme/gpt2", "main", gpt2),
                                  ("acme/partial", "main", ["config.json"])):  # no weights: not usable
        for name in names:
            hf_hub_download(repo, name, revision=revision, cache_dir=cache, endpoint=hub.url)
    snapshot = cache / "models--bigcode--tiny-test" / "snapshots" / tagged
    assert store.resolve(f"{REPO}@v1", offline=True).path == snapshot
    assert store.resolve(f"{REPO}@{tagged}", offline=True).path == snapshot  # a commit, no ref needed
    with pytest.raises(ModelNotFoundError, match="not downloaded"):
        store.resolve(REPO, offline=True)  # main is not in the cache
    with pytest.raises(ModelNotFoundError, match="not downloaded"):
        store.resolve("acme/partial", offline=True)
    listed = [(m["name"], m["path"]) for m in store.list_models() if m["source"] == "hf-cache"]
    assert listed == [(f"{REPO}@v1", str(snapshot))]  # gpt2 is another model type; partial has no weights


# --- import, verify, rm, info ----------------------------------------------------------------------------


def test_bin_import_converts_to_equal_safetensors(tmp_path, lm_dir):
    import torch
    from safetensors.torch import load_file
    from transformers import GPTBigCodeForCausalLM

    src = tmp_path / "binckpt"
    src.mkdir()
    model = GPTBigCodeForCausalLM.from_pretrained(str(lm_dir))
    state = model.state_dict()  # lm_head.weight and transformer.wte.weight share one storage
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    torch.save(state, src / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (src / name).write_bytes((lm_dir / name).read_bytes())
    imported = store.import_checkpoint(src, "mine")
    assert imported.source == "cache" and not list(imported.path.glob("*.bin"))
    converted = load_file(str(imported.path / "model.safetensors"))
    assert converted.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(converted[key], tensor), key
    assert store.resolve("mine").path == imported.path
    assert store.info("mine")["parameters"] == model.num_parameters()
    store.verify("mine")
    with pytest.raises(StoreError, match="already exists"):
        store.import_checkpoint(src, "mine")


def test_verify_catches_a_flipped_byte(lm_dir, capsys):
    imported = store.import_checkpoint(lm_dir, "acme/tiny")
    code, out, _ = run_cli(capsys, "models", "verify", "acme/tiny")
    assert (code, out) == (0, f"ok: acme/tiny: {len(list(lm_dir.iterdir()))} files match\n")
    weights = imported.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="model.safetensors sha256 differs"):
        store.verify("acme/tiny")
    code, out, err = run_cli(capsys, "models", "verify", "acme/tiny")
    assert (code, out) == (1, "") and err.startswith("error: acme/tiny is corrupt: model.safetensors sha256 differs")


SHIPPED = Path(paths.__file__).resolve().parent / "bundled"  # the package's own bundled models
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "bundled"


def test_the_bundled_models_ship_their_hashes(monkeypatch, capsys):
    monkeypatch.setattr(paths, "bundled_dir", lambda: SHIPPED)
    for name in store.bundled_models():
        files = len([p for p in (SHIPPED / name).iterdir() if p.name != "manifest.json"])
        code, out, _ = run_cli(capsys, "models", "verify", name)
        assert (code, out) == (0, f"ok: {name}: {files} files match\n")


def test_models_list_on_an_80_column_terminal_shows_whole_names(monkeypatch, capsys):
    import sys

    from bigcode_cli.terminal.console import stdout_console

    monkeypatch.setattr(paths, "bundled_dir", lambda: SHIPPED)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    stdout_console.cache_clear()
    try:
        code, out, _ = run_cli(capsys, "models", "list")
    finally:
        stdout_console.cache_clear()
    rows = [line.split() for line in out.splitlines()]
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80 and "…" not in out
    assert rows[0] == ["NAME", "SOURCE", "COMMANDS", "PARAMS", "DTYPE", "CONTEXT", "SIZE"]
    assert [row[:3] for row in rows[1:]] == [["bigcode-tiny", "bundled", "complete,"], ["infill"],
                                             ["bigcode-tiny-langid", "bundled", "classify"],
                                             ["bigcode-tiny-secrets", "bundled", "tag"]]


def test_verify_catches_a_changed_bundled_model(store_env, capsys):
    import shutil

    copy = shutil.copytree(SHIPPED / "bigcode-tiny", store_env / "bundled" / "bigcode-tiny")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "n_positions": 64}))
    code, out, err = run_cli(capsys, "models", "verify", "bigcode-tiny")
    assert (code, out) == (1, "") and err.startswith("error: bigcode-tiny is corrupt: config.json has ")
    assert err.endswith("replace it with a reinstall of bigcode-cli\n")


def test_the_bundled_recipe_records_what_verify_checks(lm_dir, tmp_path, capsys, monkeypatch):
    import importlib.util
    import subprocess
    import sys

    monkeypatch.syspath_prepend(str(SCRIPTS))  # train_lm.py imports its sibling fim_training.py

    shipped = tmp_path / "bundled" / "shipped"
    subprocess.run([sys.executable, str(SCRIPTS / "ship.py"), str(lm_dir), str(shipped)], check=True,
                   capture_output=True, timeout=120)
    spec = importlib.util.spec_from_file_location("train_lm", SCRIPTS / "train_lm.py")
    train_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_lm)
    config = train_lm.model_config(300, 64)
    trained = tmp_path / "bundled" / "trained"
    train_lm.export(train_lm.GPTBigCodeForCausalLM(config), config, lm_dir, trained, {"steps": 0})
    for directory in (shipped, trained):
        assert json.loads((directory / "manifest.json").read_text())["source"] == "bundled"
        code, out, _ = run_cli(capsys, "models", "verify", directory.name)
        assert code == 0 and out.endswith(" files match\n")


def test_rm_removes_entries_only_from_our_cache(lm_dir, store_env, capsys):
    imported = store.import_checkpoint(lm_dir, "mine")
    code, out, err = run_cli(capsys, "models", "rm", "mine")
    assert (code, out, err) == (0, f"removed {imported.path}\n", "")
    assert not imported.path.exists() and not (models_root() / "mine").exists() and leftovers() == []
    with pytest.raises(ModelNotFoundError, match="not in"):
        store.remove("mine")
    bundled = store_env / "bundled" / "bigcode-tiny"
    bundled.mkdir()
    (bundled / "config.json").write_bytes((lm_dir / "config.json").read_bytes())
    with pytest.raises(StoreError, match="bundled"):
        store.remove("bigcode-tiny")
    assert lm_dir.is_dir() and (lm_dir / "model.safetensors").is_file()


def test_info_reads_config_tokenizer_and_headers(tmp_path, lm_dir):
    data = store.info(str(lm_dir))
    assert {k: data[k] for k in ("n_layer", "n_head", "multi_query", "n_positions", "vocab_size", "fim", "tasks",
                                 "dtype", "source")} == {
        "n_layer": 2, "n_head": 4, "multi_query": True, "n_positions": 64, "vocab_size": 300, "fim": "starcoder",
        "tasks": ["causal-lm"], "dtype": "float32", "source": "path"}
    tagger = save_checkpoint(tmp_path / "tagger", "token-classification", vocab_size=300, multi_query=False)
    save_tokenizer(tagger, SANTACODER_SPECIALS)
    data = store.info(str(tagger))
    assert (data["tasks"], data["fim"], data["multi_query"]) == (["token-classification"], "santacoder", False)
    assert data["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"]


# --- the commands ----------------------------------------------------------------------------------------


def test_models_commands_end_to_end(hub, lm_dir, store_env, capsys):
    bundled = store_env / "bundled" / "bigcode-tiny"
    bundled.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (bundled / name).write_bytes((lm_dir / name).read_bytes())

    code, out, err = run_cli(capsys, "models", "pull", REPO)
    path = models_root() / "bigcode--tiny-test" / "main"
    assert (code, out) == (0, f"{path}\n") and f"pulled {REPO}" in err

    code, out, err = run_cli(capsys, "models", "path", REPO)
    assert (code, out, err) == (0, f"{path}\n", "")
    code, out, _ = run_cli(capsys, "models", "path", "bigcode-tiny")
    assert out == f"{bundled}\n"

    code, out, _ = run_cli(capsys, "models", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["name"], r["source"]) for r in rows] == [("bigcode-tiny", "bundled"), (REPO, "cache")]
    assert rows[1]["n_positions"] == 64 and rows[1]["tasks"] == ["causal-lm"]

    code, out, _ = run_cli(capsys, "models", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split("\t") == ["NAME", "SOURCE", "TASKS", "PARAMS", "DTYPE", "CONTEXT", "SIZE"]
    assert lines[2].split("\t")[:6] == [REPO, "cache", "causal-lm", _params(rows[1]), "float32", "64"]

    code, out, _ = run_cli(capsys, "models", "info", REPO)
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"name         {REPO}" and lines[-1] == f"path         {path}"
    for line in ("layers       2", "heads        4", "multi-query  yes", "context      64", "vocab        300",
                 "fim tokens   <fim_prefix> (starcoder)", "tasks        causal-lm", "dtype        float32"):
        assert line in lines
    code, out, _ = run_cli(capsys, "models", "info", REPO, "--json")
    assert json.loads(out)["commit"] == hub.repos[REPO].refs["main"]

    code, out, err = run_cli(capsys, "models", "import", str(lm_dir), "--name", "local-copy")
    assert (code, out) == (0, f"{models_root() / 'local-copy' / 'main'}\n")
    code, out, err = run_cli(capsys, "models", "import", str(lm_dir))
    assert code == 2 and "--name" in err
    code, out, err = run_cli(capsys, "models", "rm", REPO)
    assert (code, out) == (0, f"removed {path}\n")


def _params(row):
    n = row["parameters"]
    return f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)
