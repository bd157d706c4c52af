"""The REPL's state and one turn at a time: models loaded once per task, the settings /set changes,
and running code through the completion, classification and tagging services.

A turn never ends the session: a user mistake is one `error:` line, a bug is one line too
(BIGCODE_DEBUG=1 adds the traceback), Ctrl-C stops the turn and keeps what was produced.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, TextIO

from bigcode_cli.errors import BackendError, BigCodeError, InputError
from bigcode_cli.repl.actions import REGISTRY
from bigcode_cli.repl.transcript import Transcript, Turn
from bigcode_cli.terminal.console import colour_wanted, debug_enabled, print_error, print_notice, stderr_console
from bigcode_cli.terminal.model_choice import ModelChoice
from bigcode_cli.terminal.safe_text import for_stream, is_terminal, safe_text
from bigcode_cli.terminal.stream_printer import StreamPrinter, lexer_for
from bigcode_cli.tasks import MODES, TASKS  # mode -> the task its model is opened for

if TYPE_CHECKING:
    from rich.text import Text

    from bigcode_cli.generation.completion import CompletionSettings
    from bigcode_cli.store.loader import LoadedModel



@dataclass
class TurnStats:
    """What the toolbar shows about the last turn."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    tokens_per_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    interrupted: bool = False


class Session:
    """One REPL session: its models, settings, mode and transcript."""

    def __init__(self, settings: CompletionSettings, *, model: str | None = None,
                 options: ModelChoice | None = None, mode: str = "complete", language: str = "python",
                 out: TextIO | None = None, interactive: bool = True,
                 opener: Callable[..., LoadedModel] | None = None) -> None:
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; choose {', '.join(MODES)}")
        self.settings = settings
        self.options = options or ModelChoice(model)  # how every model is opened; /attn, /device, /dtype change it
        self.mode = mode
        self.language = ""
        self.set_language(language)
        self.out = out or sys.stdout
        self.interactive = interactive
        self.colour = interactive and colour_wanted(self.out)
        self.terminal = self.colour or is_terminal(self.out)  # model text is made safe on a terminal
        self.names: dict[str, str | None] = {MODES[mode]: model}  # task -> the name asked for (None = default)
        self.loaded: dict[str, LoadedModel] = {}
        self.last: TurnStats | None = None
        self.transcript = Transcript()
        self.commands = REGISTRY
        self.running = True
        self.stopped_by_user = False  # the last turn was stopped with Ctrl-C
        self._opener = opener

    # -- models ------------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        """The task the current mode needs a model for."""
        return MODES[self.mode]

    @property
    def current(self) -> LoadedModel | None:
        """The loaded model of the current mode, if any."""
        return self.loaded.get(self.task)

    def model_for(self, task: str) -> LoadedModel:
        """The task's model, opened on first use."""
        return self.loaded.get(task) or self.load(task, self.names.get(task))

    def _open(self, task: str, name: str | None, options: ModelChoice) -> LoadedModel:
        if self._opener is not None:
            opener = self._opener
        else:
            from bigcode_cli.store.loader import open_model as opener
        console = stderr_console()
        label = name or "the default model"
        spinner = console.status(f"loading {label}", spinner="dots") if console.is_terminal else None
        with spinner or contextlib.nullcontext():
            return opener(name, task, **options.how())

    def load(self, task: str, name: str | None) -> LoadedModel:
        """Open `name` for `task` and make it the task's model; the previous one stays if this fails."""
        started = time.perf_counter()
        loaded = self._open(task, name, self.options)
        self.loaded[task] = loaded
        self.names[task] = name
        self.info(f"loaded {loaded.name} ({describe(loaded)}) in {time.perf_counter() - started:.1f}s")
        return loaded

    def reopen(self, **changes: Any) -> None:
        """Change how models are opened (device, dtype, ...) and reload every loaded model; all or nothing."""
        options = replace(self.options, **changes)
        fresh = {task: self._open(task, self.names.get(task), options) for task in self.loaded}
        self.options = options
        self.loaded.update(fresh)
        for loaded in fresh.values():
            self.info(f"reloaded {loaded.name} ({describe(loaded)})")

    def set_attention(self, name: str) -> None:
        """Switch the attention backend of every loaded model (native: in place; transformers: reload)."""
        if any(m.runner.engine != "native" for m in self.loaded.values()):
            self.reopen(attn=name)
            return
        before = {task: m.runner.backend for task, m in self.loaded.items()}
        try:
            for loaded in self.loaded.values():
                loaded.runner.set_backend(name)
        except BackendError:
            for task, backend in before.items():
                with contextlib.suppress(BackendError):
                    self.loaded[task].runner.set_backend(backend)
            raise
        self.options = replace(self.options, attn=name)
        backends = sorted({m.runner.backend for m in self.loaded.values()})
        self.info(f"attention: {', '.join(backends) if backends else name}")

    def set_mode(self, mode: str, model: str | None = None) -> None:
        """Switch the mode, opening its task's model now (so a problem shows at once and the mode stays)."""
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; choose {', '.join(MODES)}")
        task = MODES[mode]
        if model is not None or task not in self.loaded:
            try:
                self.load(task, model if model is not None else self.names.get(task))
            except BigCodeError as exc:
                raise type(exc)(f"{exc} (stayed in {self.mode} mode; /mode {mode} MODEL picks a model)") from None
        self.mode = mode
        self.info(f"mode: {mode}")

    def set_language(self, name: str) -> None:
        """The language input and output are highlighted as."""
        from pygments.util import ClassNotFound

        try:
            lexer_for(name)
        except ClassNotFound:
            raise InputError(f"no highlighting for language {name!r}; try python, javascript, c, rust or go") from None
        self.language = name

    # -- turns -------------------------------------------------------------------------------------

    def handle(self, text: str) -> bool:
        """Run one turn (slash commands, or code in the current mode); False when it failed or was stopped."""
        self.stopped_by_user = False
        lines = [line.strip() for line in text.strip().splitlines()]
        if not lines:
            return True
        if len(lines) > 1 and all(line.startswith("/") for line in lines if line):
            results = [self.handle(line) for line in lines if line and self.running]  # each its own turn
            return all(results)
        try:
            if lines[0].startswith("/"):
                if len(lines) > 1:
                    raise InputError("a turn that starts with a slash command holds only slash commands; "
                                     "put a blank line before the code")
                self.transcript.add(Turn("command", lines[0]))
                self.commands.run(self, lines[0])
            else:
                self.run_code(text)
            return not self.stopped_by_user
        except BigCodeError as exc:
            if debug_enabled():
                traceback.print_exc()
            print_error(str(exc))
        except KeyboardInterrupt:
            self.stopped_by_user = True
            self.info("interrupted")
        except Exception as exc:  # a bug: one line, and the session goes on
            if debug_enabled():
                traceback.print_exc()
            print_error(f"internal error: {type(exc).__name__}: {exc} (BIGCODE_DEBUG=1 shows the traceback)")
        return False

    def run_code(self, text: str) -> None:
        """Code through the current mode's service."""
        if self.mode in ("complete", "infill"):
            self._complete(text)
        elif self.mode == "classify":
            self._classify(text)
        else:
            self._tag(text)

    def _complete(self, text: str) -> None:
        from bigcode_cli.generation.completion import complete
        from bigcode_cli.generation.fim import FILL_MARKER, split_source

        loaded = self.model_for("causal-lm")
        cursor = split_source(text)
        if self.mode == "infill" and cursor.mode != "fim":
            raise InputError(f"infill mode fills in at a {FILL_MARKER} marker: put {FILL_MARKER} where the code "
                             "should go (or /mode complete)")
        if cursor.mode == "fim":
            loaded.tokenizer.require_fim()
        streaming = self.settings.num_samples == 1
        printer = StreamPrinter(self.out, terminal=self.terminal, colour=self.colour, language=self.language,
                                end_line=True)
        if streaming and self.interactive:
            printer.start(cursor.prefix.rpartition("\n")[2])
        try:
            result = complete(loaded.runner, loaded.tokenizer, cursor.prefix, cursor.suffix, cursor.mode,
                              self.settings, on_text=(lambda _i, piece: printer.write(piece)) if streaming else None,
                              notice=print_notice)
        finally:
            printer.finish()
        if not streaming:
            for i, sample in enumerate(result.texts):
                if i:
                    printer.write("---\n")
                printer.write(sample)
                printer.finish()
        generation = result.generation
        self.last = TurnStats(generation.prompt_tokens, generation.new_tokens, generation.tokens_per_s,
                              generation.prefill_s, generation.decode_s, generation.interrupted)
        mode = "infill" if cursor.mode == "fim" else "complete"
        self.transcript.add(Turn(mode, cursor.prefix, result.texts[0] if result.texts else "", cursor.suffix,
                                 asdict(self.last), generation.interrupted))
        if generation.interrupted:
            self.stopped_by_user = True
            self.info(f"stopped after {generation.new_tokens} tokens")

    def _score(self, task: str, text: str, *, offsets: bool) -> tuple[LoadedModel, Any]:
        """One snippet through the batching service that `classify` and `tag` use."""
        from bigcode_cli.pipelines.batching import Batcher

        loaded = self.model_for(task)
        started = time.perf_counter()
        scored = Batcher(loaded.runner, loaded.tokenizer, batch_size=1, offsets=offsets).run([text])[0]
        self.last = TurnStats(prompt_tokens=len(scored.encoded.ids), prefill_s=time.perf_counter() - started)
        if scored.encoded.truncated:
            print_notice(f"the input is longer than the model's context: scored its first {len(scored.encoded.ids)} "
                         f"of {scored.encoded.tokens} tokens")
        return loaded, scored

    def _classify(self, text: str) -> None:
        from bigcode_cli.pipelines.classification import predict, problem_type

        loaded, scored = self._score("sequence-classification", text, offsets=False)
        config = loaded.runner.config
        prediction = predict(scored.logits, config.labels(), problem_type(config), top_k=5)
        shown = prediction.labels if prediction.labels is not None else [prediction.label or "-"]
        others = ", ".join(f"{label} {score:.3f}" for label, score in prediction.scores.items())
        result = f"{','.join(shown) or '-'}\t{prediction.score:.4f}\t({others})"
        self._print_result(result)
        self.transcript.add(Turn("classify", text, result, stats=asdict(self.last)))

    def _tag(self, text: str) -> None:
        from bigcode_cli.pipelines.tagging import spans_from_tokens, token_predictions

        loaded, scored = self._score("token-classification", text, offsets=True)
        predictions = token_predictions(scored.logits, loaded.runner.config.labels())
        spans = spans_from_tokens(text, scored.encoded.offsets or [], predictions, aggregate="word")
        rows = [f"{s.label}\t{s.start}-{s.end}\t{s.score:.3f}\t{s.text!r}" for s in spans]
        result = "\n".join(rows) if rows else "(no tagged spans)"
        if self.colour and spans:
            self._print_rich(marked(text, spans))
        self._print_result(result)
        self.transcript.add(Turn("tag", text, result, stats=asdict(self.last)))

    def _print_result(self, text: str) -> None:
        self.out.write((safe_text(text) if self.terminal else text) + "\n")
        self.out.flush()

    def _print_rich(self, text: Text) -> None:
        """Styled text on the session's output (a terminal: only called with colour on)."""
        from rich.console import Console

        Console(file=self.out, force_terminal=True, highlight=False, soft_wrap=True).print(text)
        self.out.flush()

    # -- messages ----------------------------------------------------------------------------------

    def info(self, message: str) -> None:
        """A status line on stderr (never markup; model names and labels in it made safe on a terminal)."""
        stderr_console().print(for_stream(message, sys.stderr), style="dim", markup=False, highlight=False,
                               soft_wrap=True)

    def say(self, message: str) -> None:
        """An answer to a command (help, settings) on stderr, so that stdout holds only model results."""
        stderr_console().print(for_stream(message, sys.stderr), markup=False, highlight=False, soft_wrap=True)

    def model_line(self) -> str:
        """What /model shows: the current mode's model, how it runs and where it comes from."""
        loaded = self.current
        if loaded is None:
            return f"{self.names.get(self.task) or 'the default model'} (not loaded yet)"
        return f"{loaded.name} ({describe(loaded)}) from {loaded.resolved.path}"


def describe(loaded: LoadedModel) -> str:
    """engine/backend, device, dtype of a loaded model, and what runs its decode steps (why not the C kernel)."""
    runner = loaded.runner
    decode = f", decode: {runner.decode_summary}" if TASKS[runner.task].generative else ""
    return f"{runner.engine}/{runner.backend}, {runner.device}, {runner.dtype_name}{decode}"


def marked(text: str, spans: list[Any]) -> Text:
    """The code (made safe) with tagged spans in reverse video and their label after them, dimmed."""
    from rich.text import Text

    shown, at = Text(), 0
    for span in spans:
        shown.append(safe_text(text[at:span.start]))
        shown.append(safe_text(text[span.start:span.end]), style="reverse")
        shown.append(f"[{safe_text(span.label)}]", style="dim")
        at = span.end
    shown.append(safe_text(text[at:]).rstrip("\n"))
    return shown
