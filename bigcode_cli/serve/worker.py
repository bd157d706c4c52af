"""The engine worker: the one thread that owns the model, and the bounded queue in front of it.

torch is not thread-safe for one model, so every request becomes a `Job` run on this thread. Up to
`parallel` jobs run at once with continuous batching (generation/batch.py): a queued job joins the
running batch before the next step (its prompt is prefilled in chunks between the others' steps), each
step makes one token for every running job in one pass over the weights, and a job leaves as soon as it
ends, freeing its slot for the next queued one. A job's prompt is tokenized and fitted on a preparing thread
before it enters the queue (a multi-MB prompt takes seconds to tokenize), so neither the event loop nor the
running batch waits for it. Slots plus queue bound the jobs held: beyond, a new job is refused at once (503).
A job whose client went away gives its place back at once, and leaves its slot at the next step if running;
`max_predict_ms` stops it at the first token past its deadline. The thread blocks on the queue when idle: no polling
(after a large request it waits TRIM_AFTER_IDLE_S first, then gives the freed memory back: serve.memory).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from bigcode_cli.choices import FIM_ORDERS, SPECULATE_DEFAULT
from bigcode_cli.errors import BigCodeError
from bigcode_cli.generation.prompt_cache import DEFAULT_CACHE_RAM_MIB
from bigcode_cli.serve.counters import ServeCounters, Slot
from bigcode_cli.serve.memory import LARGE_REQUEST, TRIM_AFTER_IDLE_S, release_free_memory

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import Completion, CompletionSettings
    from bigcode_cli.store.loader import LoadedModel

# slots when --parallel is not given. Measured (benchmarks/serve_parallel.py, 116M shape in int8, editors typing
# with ~1,600-token windows): 4 editors got 2.0x one editor's aggregate tokens/s with each editor's p50 at 1.95x
# a lone editor's; 8 got only 14% more than 4 for 1.75x their latency. See the README's serve section.
DEFAULT_PARALLEL = 4
# threads tokenizing prompts at most: a few large prompts at once still leave one for a small prompt
PREPARING_THREADS = 8

JobKind = Literal["fim", "continue", "text", "ids"]
# where a job stands in the worker: not yet taken, holding a place while its prompt is prepared or it is queued,
# in a slot, or out (ended, or withdrawn by its client)
JobState = Literal["new", "waiting", "running", "out"]
# emit(event, payload) is called from the worker thread; the app hands events over to its event loop
Emit = Callable[[str, Any], None]


class ServerBusy(BigCodeError):
    """The queue is full: the client should retry later."""


class NotReady(BigCodeError):
    """The model is still loading, or failed to load."""


@dataclass
class Job:
    """One completion request as the worker runs it.

    kind "fim": prefix/suffix fill-in-the-middle (after the `extra` context chunks); "continue": `prefix`
    continued as plain text (`bigcode generate`); "text": `prefix` continued, its control-token
    spellings (<fim_prefix>...) read as tokens; "ids": token ids continued. `fim_order` None: the server's.
    """

    kind: JobKind
    settings: CompletionSettings
    emit: Emit
    prefix: str = ""
    suffix: str = ""
    ids: list[int] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)  # (filename, text) context chunks
    warm_only: bool = False  # prefill into the prompt cache, generate nothing
    use_cache: bool = True
    max_predict_ms: float | None = None
    fim_order: str | None = None
    cache_salt: str = ""  # the request's own prompt-cache partition (vLLM's `cache_salt`)
    speculate: str | None = None  # "ngram" | "off"; None: the server's
    key_digest: str = ""  # SHA-256 of the client's Authorization header: its API key's partition, never the key
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    state: JobState = "new"  # changed by the worker, under its lock

    def cancel(self) -> None:
        """Stop this job at its next token (or skip it if it has not started); EngineWorker.cancel also frees
        its place at once."""
        self.cancelled.set()

    @property
    def cache_partition(self) -> tuple[str, str]:
        """Which prompt-cache entries this job may reuse: those of the same API key and cache_salt."""
        return self.key_digest, self.cache_salt

    @property
    def size(self) -> int:
        """How much input the job carries: characters of text plus token ids."""
        return len(self.prefix) + len(self.suffix) + len(self.ids) + sum(len(a) + len(b) for a, b in self.extra)


@dataclass
class JobResult:
    """What a finished job reports."""

    completion: Completion
    queued_ms: float
    prompt_tokens: int
    cached_tokens: int


@dataclass
class _Prepared:
    """A job whose prompt is tokenized and whose generation is made, waiting in the queue for a slot."""

    job: Job
    prompt: Any  # generation.completion.Prompt
    decoding: Any  # generation.loop.Decoding, not yet run


@dataclass
class _Running:
    """A job in the batch: what its result reports besides the generation."""

    job: Job
    prompt: Any  # generation.completion.Prompt
    queued_ms: float
    slot: int = 0  # its id in /slots
    decoding: Any = None  # generation.loop.Decoding


class EngineWorker:
    """Loads the model on its own thread, then runs queued jobs, up to `parallel` at once."""

    def __init__(self, load: Callable[[], LoadedModel], *, queue_size: int = 4, cache_ram_mib: int = DEFAULT_CACHE_RAM_MIB,
                 parallel: int = DEFAULT_PARALLEL, fim_order: str = "auto", log: Callable[[str], None] | None = None,
                 hide: Callable[[str], str] | None = None, speculate: str = SPECULATE_DEFAULT) -> None:
        self._load = load
        self._queue: queue.Queue[_Prepared | None] = queue.Queue()
        self.queue_size = max(1, queue_size)
        self._held = 0  # jobs "waiting" or "running": at most parallel + queue_size
        self._waiting = 0  # jobs "waiting": their prompt being prepared, or queued for a slot
        self._held_lock = threading.Lock()  # guards both counts and every job's state
        self._cache_ram_mib = cache_ram_mib
        self.parallel = max(1, parallel)
        # a thread per job the worker may hold (up to PREPARING_THREADS), so a small prompt does not wait behind a
        # large one's tokenizing (the tokenizer releases the GIL); threads start when first needed
        self._preparer = ThreadPoolExecutor(min(self.parallel + self.queue_size, PREPARING_THREADS),
                                            thread_name_prefix="bigcode-prompt")
        self._enqueue_lock = threading.Lock()  # a prepared job enters the queue before stop()'s end mark, or never
        self._fim_order = fim_order
        self.speculate = speculate  # what a request that does not say gets
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded_event = threading.Event()  # set once loading ended, well or badly
        self.state = "loading"  # "loading" | "ready" | "failed"
        self.error: str | None = None  # why loading failed, for the server's log
        self.public_error: str | None = None  # the same for clients: `hide` took the model's local path out
        self._hide = hide or (lambda message: message)
        self.loaded: LoadedModel | None = None
        self.fim_order = "psm"
        self.running = 0  # jobs in the batch (prefilling or decoding)
        self.prompt_cache: Any = None
        self.counters = ServeCounters(self.parallel)  # for /metrics and /slots

    # -- the app's side ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (it loads the model first)."""
        self._thread = threading.Thread(target=self._main, name="bigcode-engine", daemon=True)
        self._thread.start()

    def check_ready(self) -> None:
        """Raise NotReady unless jobs can be run."""
        if self.state == "loading":
            raise NotReady("the model is still loading")
        if self.state != "ready":
            raise NotReady(f"the model failed to load: {self.public_error}")
        if self._stopping.is_set():
            raise NotReady("the server is shutting down")

    def submit(self, job: Job) -> None:
        """Take a job (its prompt is prepared on a preparing thread, then it is queued), or raise NotReady /
        ServerBusy at once."""
        self.check_ready()
        # counted with the running jobs, not by the queue alone: a job the worker has not yet taken into a
        # free slot (it does between steps) must not make the next request look like one too many
        with self._held_lock:
            if self._held >= self.parallel + self.queue_size:
                raise ServerBusy(f"the server is busy: {self.queue_size} requests are already waiting")
            self._held += 1
            self._waiting += 1
            job.state = "waiting"
        try:
            self._preparer.submit(self._prepare_job, job)
        except RuntimeError:  # stop() shut the preparing threads down since check_ready()
            self._ended(job)
            raise NotReady("the server is shutting down") from None

    def cancel(self, job: Job) -> None:
        """The client left: stop the job at its next token and free its place now, not when the worker gets to it
        (an editor cancels its request at every keystroke and sends the next at once: dead requests must not
        fill the queue). A running job still holds its slot until the next step; a new job waits for it."""
        job.cancel()
        with self._held_lock:
            if job.state in ("waiting", "running"):
                self._leave(job)

    def decode(self, ids: list[int]) -> str:
        """Token ids as text, control tokens spelled out (the tokenizer is thread-safe for this)."""
        assert self.loaded is not None
        return self.loaded.tokenizer.decode(ids, skip_special_tokens=False)

    @property
    def dtype(self) -> str:
        """What --dtype the model runs as, as `bigcode complete --json` names it (Runner.dtype_name)."""
        assert self.loaded is not None
        return self.loaded.runner.dtype_name

    @property
    def started(self) -> bool:
        """Whether start() was called."""
        return self._thread is not None

    @property
    def waiting(self) -> int:
        """Jobs taken and not running: their prompt being prepared, or queued for a slot."""
        return self._waiting

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the running job at its next token, drop queued ones, and end the thread."""
        with self._enqueue_lock:
            self._stopping.set()
        while True:
            try:
                waiting = self._queue.get_nowait()
            except queue.Empty:
                break
            if waiting is not None:
                waiting.job.cancel()
                waiting.job.emit("error", NotReady("the server is shutting down"))
        self._queue.put_nowait(None)
        self._preparer.shutdown(wait=False)  # a job still being prepared is refused when it is ready (_prepare_job)
        if self._thread is not None and self.state != "loading":  # a load cannot be stopped midway: not waited for
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the thread still runs: a load in progress, or a job that did not stop in time."""
        return self._thread is not None and self._thread.is_alive()

    # -- the preparing threads ------------------------------------------------------------------------

    def _prepare_job(self, job: Job) -> None:
        """Tokenize and fit the job's prompt and make its generation, then queue it (or answer its error)."""
        prepared = None
        try:
            if not job.cancelled.is_set():  # a client gone already: nothing to prepare
                prepared = _Prepared(job, *self._decoding(job))
        except Exception as exc:  # noqa: BLE001 - reported to its client; the server lives on
            self._ended(job)  # before the answer: a client that sends its next request at once finds the place free
            self._fail(job, exc)
            return
        with self._enqueue_lock:
            if prepared is not None and not self._stopping.is_set():
                self._queue.put_nowait(prepared)  # (if withdrawn meanwhile, the worker skips it)
                return
        self._ended(job)
        if prepared is not None:
            job.emit("error", NotReady("the server is shutting down"))

    # -- the thread --------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self.loaded = self._load()
            self._prepare(self.loaded)
            self.state = "ready"
        except BaseException as exc:  # noqa: BLE001 - reported through /health and the log, never raised
            self.error = str(exc) if isinstance(exc, BigCodeError) else f"{type(exc).__name__}: {exc}"
            self.public_error = self._hide(self.error)
            self.state = "failed"
            self.loaded_event.set()
            return
        self.loaded_event.set()
        self._serve()

    def _serve(self) -> None:
        """Admit queued jobs into free slots, advance the batch one step, report the jobs that ended."""
        from bigcode_cli.generation.batch import Batch

        assert self.loaded is not None
        batch = Batch(self.loaded.runner)
        running: dict[int, _Running] = {}  # id(decoding) -> its job
        trim_when_idle = False
        ended = False
        while not ended and not self._stopping.is_set():
            while len(batch) < self.parallel:
                try:
                    if len(batch):  # others are running: take only what already waits
                        waiting = self._queue.get_nowait()
                    elif trim_when_idle:  # idle after a large request: only until it is time to give memory back
                        waiting = self._queue.get(timeout=TRIM_AFTER_IDLE_S)
                    else:  # idle: block
                        waiting = self._queue.get()
                except queue.Empty:
                    if not len(batch) and trim_when_idle:
                        release_free_memory()
                        trim_when_idle = False
                    break
                if waiting is None:
                    ended = True
                    break
                trim_when_idle = trim_when_idle or waiting.job.size >= LARGE_REQUEST
                if not self._take(waiting.job):
                    continue
                self._start(waiting, batch, running)
            self._advance(batch, running)
        while len(batch):  # stopping: every job left stops before its next token
            self._advance(batch, running)

    def _advance(self, batch: Any, running: dict[int, _Running]) -> None:
        for decoding in batch.members:
            job = running[id(decoding)].job
            if decoding.prefilling and (job.cancelled.is_set() or self._stopping.is_set()):
                decoding.interrupt()  # gone while its prompt was still being fed: no more chunks for it

        def failed(decoding: Any, exc: Exception) -> None:
            job = running.pop(id(decoding)).job
            self._ended(job)
            self._fail(job, exc)

        finished = batch.advance(failed) if len(batch) else []
        self.running = len(batch)
        for decoding in finished:
            entry = running.pop(id(decoding))
            self._ended(entry.job)
            try:
                self._report(decoding, entry)
            except Exception as exc:  # noqa: BLE001 - a bug in finishing one job: that job fails, the worker lives on
                self._fail(entry.job, exc)
        self._publish(running)

    def _take(self, job: Job) -> bool:
        """Whether a queued job goes into a slot: not if its client left meanwhile (its place is freed)."""
        with self._held_lock:
            if job.cancelled.is_set() or job.state != "waiting":
                if job.state == "waiting":
                    self._leave(job)
                return False
            job.state = "running"
            self._waiting -= 1
            return True

    def _ended(self, job: Job) -> None:
        """A job left the worker: its place (slot or queue) is free for the next request (once: it may have
        been withdrawn already)."""
        with self._held_lock:
            if job.state in ("waiting", "running"):
                self._leave(job)

    def _leave(self, job: Job) -> None:
        """Free the job's place; under the lock."""
        self._held -= 1
        if job.state == "waiting":
            self._waiting -= 1
        job.state = "out"

    def _start(self, waiting: _Prepared, batch: Any, running: dict[int, _Running]) -> None:
        """A prepared job's generation, joined to the batch."""
        job, prompt, decoding = waiting.job, waiting.prompt, waiting.decoding
        queued_ms = (time.perf_counter() - job.queued_at) * 1000
        taken = {entry.slot for entry in running.values()}
        slot = next(i for i in range(self.parallel) if i not in taken)
        running[id(decoding)] = _Running(job, prompt, queued_ms, slot, decoding)
        batch.add(decoding)
        self.running = len(batch)
        self._publish(running)

    def _publish(self, running: dict[int, _Running]) -> None:
        """What each slot is doing now, for /slots."""
        busy: dict[int, Slot] = {}
        for entry in running.values():
            decoding = entry.decoding
            busy[entry.slot] = Slot(entry.slot, "prefill" if decoding.prefilling else "decoding",
                                    len(decoding.prompt_ids), sum(len(s.token_ids) for s in decoding.samples))
        self.counters.publish(busy)

    def _prepare(self, loaded: LoadedModel) -> None:
        from bigcode_cli.generation.prompt_cache import MIB, PromptCache

        self.prompt_cache = PromptCache(loaded.runner, max_bytes=self._cache_ram_mib * MIB)
        if self._fim_order in FIM_ORDERS:
            self.fim_order = self._fim_order
        else:
            # SPM for checkpoints with FIM tokens: typing at the cursor then changes only the prompt's end
            self.fim_order = "spm" if loaded.tokenizer.fim is not None else "psm"

    def _should_stop(self, job: Job) -> Callable[[], bool]:
        started: list[float] = []

        def should_stop() -> bool:
            if job.cancelled.is_set() or self._stopping.is_set() or job.warm_only:
                return True
            if job.max_predict_ms is None:
                return False
            now = time.perf_counter()
            if not started:
                started.append(now)  # first asked right after the prefill: the deadline counts decoding
            return (now - started[0]) * 1000 > job.max_predict_ms

        return should_stop

    def _decoding(self, job: Job) -> tuple[Any, Any]:
        """The job's Prompt and its Decoding, not yet run (on a preparing thread: tokenizing touches no model)."""
        from dataclasses import replace

        from bigcode_cli.generation.completion import start_completion, start_ids, start_text
        from bigcode_cli.serve.prompt import extra_context_ids

        assert self.loaded is not None
        runner, tokenizer = self.loaded.runner, self.loaded.tokenizer
        settings = replace(job.settings, order=job.fim_order or self.fim_order,  # type: ignore[arg-type]
                           speculate=job.speculate or self.speculate)
        cache = self.prompt_cache.partition(job.cache_partition) if job.use_cache else None
        on_text = None if job.warm_only else (lambda index, text: job.emit("text", (index, text)))
        if job.kind in ("fim", "continue"):
            lead = extra_context_ids(tokenizer, job.extra, runner.context_length // 4)
            return start_completion(runner, tokenizer, job.prefix, job.suffix, job.kind, settings, on_text=on_text,
                                    lead_ids=lead, prompt_cache=cache, should_stop=self._should_stop(job))
        if job.kind == "text":
            return start_text(runner, tokenizer, job.prefix, settings, on_text=on_text, prompt_cache=cache,
                              should_stop=self._should_stop(job))
        ids = job.ids or ([tokenizer.eos_id] if tokenizer.eos_id is not None else [])
        if any(not 0 <= i < runner.config.vocab_size for i in ids):
            raise _bad_ids(runner.config.vocab_size)
        return start_ids(runner, tokenizer, ids, settings, on_text=on_text, prompt_cache=cache,
                         should_stop=self._should_stop(job))

    def _fail(self, job: Job, exc: Exception) -> None:
        if isinstance(exc, BigCodeError):
            job.emit("error", exc)
            return
        # a bug: answered as a 500 JSON error, and the worker lives on
        job.emit("error", RuntimeError(f"{type(exc).__name__}: {exc}"))
        self._log(f"error: internal error in a request: {type(exc).__name__}: {exc}")

    def _report(self, decoding: Any, entry: _Running) -> None:
        from bigcode_cli.generation.completion import Completion

        job = entry.job
        generation = decoding.finish()
        self.counters.finished(prompt_tokens=generation.prompt_tokens, cached_tokens=generation.cached_tokens,
                               generated_tokens=generation.new_tokens, draft_tokens=generation.draft_tokens,
                               draft_accepted=generation.draft_accepted)
        gone = " (stopped: client gone)" if job.cancelled.is_set() else ""
        job.emit("done", JobResult(Completion(entry.prompt, generation), entry.queued_ms, generation.prompt_tokens,
                                   generation.cached_tokens))
        self._log(f"{job.kind}: {generation.prompt_tokens} prompt tokens ({generation.cached_tokens} cached), "
                  f"{generation.new_tokens} new, prefill {generation.prefill_s * 1000:.1f} ms, "
                  f"decode {generation.decode_s * 1000:.1f} ms, {generation.draft_accepted}/{generation.draft_tokens} "
                  f"drafted accepted{gone}")


def _bad_ids(vocab_size: int) -> BigCodeError:
    from bigcode_cli.errors import InputError

    return InputError(f"prompt token ids must be in 0..{vocab_size - 1}")
