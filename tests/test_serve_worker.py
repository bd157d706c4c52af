"""The serve worker (serve/worker.py) in-process: a job's prompt is tokenized on a preparing thread, never on
the worker's thread, so the running batch keeps making tokens while a large prompt is tokenized; the place a
job holds is free again before its client hears the answer."""

from __future__ import annotations

import threading
import time

import pytest
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.generation.completion import CompletionSettings
from bigcode_cli.generation.sampling import SamplingParams
from bigcode_cli.serve.worker import EngineWorker, Job, ServerBusy
from bigcode_cli.store.loader import open_model

WAIT = 30  # seconds any one wait may take on a busy machine
MARK = "# tokenizing this one takes as long as the test says\n"


class Events:
    """What a job emitted, from the worker's threads, readable from the test's."""

    def __init__(self) -> None:
        self.texts = 0
        self.ended: list[tuple[str, object]] = []
        self.changed = threading.Condition()

    def emit(self, kind: str, payload: object) -> None:
        with self.changed:
            if kind == "text":
                self.texts += 1
            else:
                self.ended.append((kind, payload))
            self.changed.notify_all()

    def wait(self, check, what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(check, WAIT), f"never happened: {what}"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    # a random model: it does not stop early, so a long job really runs on
    path = save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "lm", n_positions=1024, n_embd=64, n_layer=2,
                                  n_head=4)
    return open_model(str(path), "causal-lm")


@pytest.fixture
def worker(loaded):
    engine = EngineWorker(lambda: loaded, parallel=2, queue_size=1, log=lambda line: None)
    engine.start()
    assert engine.loaded_event.wait(WAIT) and engine.state == "ready"
    yield engine
    engine.stop()
    assert not engine.alive


def job(events: Events, prompt: str, kind: str = "continue", new_tokens: int = 600) -> Job:
    settings = CompletionSettings(max_new_tokens=new_tokens, sampling=SamplingParams(temperature=0), block=False)
    return Job(kind, settings, events.emit, prefix=prompt, suffix="\n" if kind == "fim" else "", use_cache=False)


def test_a_prompt_is_tokenized_off_the_worker_thread_while_the_batch_runs_on(worker, loaded, monkeypatch):
    tokenizer = loaded.tokenizer
    encode = tokenizer.encode
    entered, release = threading.Event(), threading.Event()
    where: list[str] = []

    def slow_encode(text: str) -> list[int]:
        if MARK in text:  # a prompt of many MB: it holds its thread until the test lets it go
            where.append(threading.current_thread().name)
            entered.set()
            release.wait(WAIT)
        return encode(text)

    monkeypatch.setattr(tokenizer, "encode", slow_encode)
    running, large = Events(), Events()
    worker.submit(job(running, "def f(x):\n    return"))
    running.wait(lambda: running.texts >= 3, "the first job generating")
    worker.submit(job(large, MARK + "x = 1\n", kind="fim", new_tokens=4))
    try:
        assert entered.wait(WAIT)
        before = running.texts
        running.wait(lambda: running.texts >= before + 10, "tokens made while another prompt is tokenized")
        assert worker.waiting == 1 and worker.running == 1  # taken, not yet queued: /health counts it waiting
    finally:
        release.set()
    large.wait(lambda: large.ended, "the large job answered")
    assert large.ended[0][0] == "done"
    assert where and all(name.startswith("bigcode-prompt") for name in where)


def test_a_failed_preparation_frees_its_place_before_the_answer(worker, loaded, monkeypatch):
    def broken(text: str) -> list[int]:
        raise RuntimeError("the tokenizer broke")

    monkeypatch.setattr(loaded.tokenizer, "encode", broken)
    for _ in range(5):  # a client that retries at once, with every place but one taken, is never refused
        events = Events()
        worker.submit(job(events, "y = 2\n", new_tokens=2))
        events.wait(lambda: events.ended, "the error")
        assert events.ended[0][0] == "error" and "tokenizer broke" in str(events.ended[0][1])
    assert worker.waiting == 0
    held = [Events() for _ in range(3)]  # parallel 2 + queue 1: every place taken by jobs that fail at once
    for events in held:
        worker.submit(job(events, "z = 3\n", new_tokens=2))
    for events in held:
        events.wait(lambda: events.ended, "the error")
    assert worker.waiting == 0 and worker.running == 0


def test_jobs_beyond_the_places_are_refused_while_prompts_are_being_tokenized(worker, loaded, monkeypatch):
    encode = loaded.tokenizer.encode
    release = threading.Event()

    def held(text: str) -> list[int]:
        release.wait(WAIT)
        return encode(text)

    monkeypatch.setattr(loaded.tokenizer, "encode", held)
    jobs = [Events() for _ in range(3)]
    try:
        for events in jobs:
            worker.submit(job(events, "w = 4\n", new_tokens=2))
        with pytest.raises(ServerBusy):
            worker.submit(job(Events(), "w = 5\n", new_tokens=2))
        assert worker.waiting == 3
    finally:
        release.set()
    for events in jobs:
        events.wait(lambda: events.ended, "the answer")
        assert events.ended[0][0] == "done"
    deadline = time.monotonic() + WAIT
    while (worker.waiting or worker.running) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.waiting == 0 and worker.running == 0


def test_context_from_other_files_is_tokenized_only_while_it_can_fit(loaded, monkeypatch):
    from bigcode_cli.serve.prompt import extra_context_ids

    tokenizer = loaded.tokenizer
    chunks = [("huge.py", "x = 1\n" * 500_000), ("b.py", "def b():\n    return 2\n"), ("", ""),
              ("c.py", "import os\n" * 3)]
    # what the chunks make: the last ones that fit, whole, each after a file separator, in their order
    separator = tokenizer.token_to_id("<file_sep>")
    lead = tokenizer.encode("\n") if separator is None else [separator]  # a vocabulary without one: a newline
    pieces = [lead + tokenizer.encode(f"{name}\n{text}") for name, text in chunks[1:] if name]
    assert extra_context_ids(tokenizer, chunks, 200) == pieces[0] + pieces[1]
    assert extra_context_ids(tokenizer, chunks, len(pieces[1])) == pieces[1]  # b.py does not fit beside it
    assert extra_context_ids(tokenizer, chunks, len(pieces[1]) - 1) == []
    encode = tokenizer.encode
    seen: list[int] = []
    monkeypatch.setattr(tokenizer, "encode", lambda text: seen.append(len(text)) or encode(text))
    extra_context_ids(tokenizer, chunks, 200)
    assert max(seen) < 1000  # the 3 MB chunk, which 200 tokens cannot hold, was never tokenized


def test_a_job_still_being_prepared_when_the_server_stops_is_answered(worker, loaded, monkeypatch):
    encode = loaded.tokenizer.encode
    entered, release = threading.Event(), threading.Event()

    def held(text: str) -> list[int]:
        entered.set()
        release.wait(WAIT)
        return encode(text)

    monkeypatch.setattr(loaded.tokenizer, "encode", held)
    events = Events()
    worker.submit(job(events, "v = 6\n", new_tokens=2))
    assert entered.wait(WAIT)
    worker.stop()  # the worker's thread ends while the job is still being tokenized
    assert not worker.alive
    release.set()
    events.wait(lambda: events.ended, "an answer, not silence")
    kind, error = events.ended[0]
    assert kind == "error" and "shutting down" in str(error)


def test_a_waiting_job_withdrawn_by_its_client_frees_its_place_at_once(loaded):
    engine = EngineWorker(lambda: loaded, parallel=1, queue_size=1, log=lambda line: None)
    engine.start()
    try:
        assert engine.loaded_event.wait(WAIT) and engine.state == "ready"
        running = Events()
        engine.submit(job(running, "def g(y):\n", new_tokens=1000))
        running.wait(lambda: running.texts >= 2, "the slot busy")
        for _ in range(3):  # keystrokes: each request withdrawn while it waits, the next one sent at once
            events = Events()
            waiting = job(events, "u = 7\n", new_tokens=2)
            engine.submit(waiting)
            assert engine.waiting == 1
            engine.cancel(waiting)
            assert engine.waiting == 0
        last = Events()
        engine.submit(job(last, "u = 8\n", new_tokens=2))
        with pytest.raises(ServerBusy):  # the bound still holds for jobs that are wanted
            engine.submit(job(Events(), "u = 9\n", new_tokens=2))
        assert running.texts > 0 and not running.ended
    finally:
        engine.stop()
    assert not engine.alive


def test_a_running_job_withdrawn_by_its_client_frees_its_place_before_its_slot(loaded, monkeypatch):
    runner = loaded.runner
    step = runner.step_best  # what the batch's steps call
    paused, resume = threading.Event(), threading.Event()

    def held_step(rows, last_only=False):
        if pause_next:
            paused.set()
            resume.wait(WAIT)  # the worker's thread inside a step: it cannot notice the client left yet
        return step(rows, last_only)

    pause_next = False
    monkeypatch.setattr(runner, "step_best", held_step)
    engine = EngineWorker(lambda: loaded, parallel=1, queue_size=1, log=lambda line: None)
    engine.start()
    try:
        assert engine.loaded_event.wait(WAIT) and engine.state == "ready"
        first = Events()
        running = job(first, "def h(z):\n", new_tokens=1000)
        engine.submit(running)
        first.wait(lambda: first.texts >= 2, "the slot busy")
        pause_next = True
        assert paused.wait(WAIT)
        engine.cancel(running)  # the editor cancels and sends its next request at once
        again = [Events(), Events()]
        for events in again:  # the slot (when the step ends) and the queue place are both free for them
            engine.submit(job(events, "t = 1\n", new_tokens=2))
        with pytest.raises(ServerBusy):
            engine.submit(job(Events(), "t = 2\n", new_tokens=2))
        pause_next = False
        resume.set()
        for events in again:
            events.wait(lambda: events.ended, "the answer")
            assert events.ended[0][0] == "done"
        first.wait(lambda: first.ended, "the withdrawn job's end")
        assert engine.waiting == 0
    finally:
        resume.set()
        engine.stop()
    assert not engine.alive
