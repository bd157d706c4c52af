"""What `complete`, `generate` and `infill` share: settings from options, the local completer, and the one
way a finished completion is shown (stream, JSON, samples, diff) or written into its file."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from bigcode_cli.terminal.console import print_notice, stderr_console

if TYPE_CHECKING:
    from bigcode_cli.cli.commands.completer import CompletionRequest, CompletionResult, Completer, OnText
    from bigcode_cli.generation.completion import CompletionSettings
    from bigcode_cli.terminal.model_choice import ModelChoice


def make_settings(*, max_new_tokens: int, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                  seed: int | None, stop: list[str] | None, num_samples: int, lines: int | None, block: bool,
                  fim_order: str = "psm", speculate: str | None = None) -> CompletionSettings:
    """Validated generation settings from command-line options (fim_order, speculate: Enum members or values;
    speculate None: the default)."""
    from bigcode_cli.generation.completion import CompletionSettings
    from bigcode_cli.generation.sampling import SamplingParams

    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p,
                              repetition_penalty=repetition_penalty, seed=seed)
    return CompletionSettings(max_new_tokens=max_new_tokens, sampling=sampling, stops=list(stop or []),
                              num_samples=num_samples, lines=lines, block=block,
                              order=getattr(fim_order, "value", fim_order),  # type: ignore[arg-type]
                              **({"speculate": getattr(speculate, "value", speculate)} if speculate else {}))


def check_output_flags(*, json_out: bool, in_place: bool = False, diff: bool = False, num_samples: int = 1,
                       path: str | None = None) -> None:
    """Refuse option combinations that cannot both be honoured."""
    from bigcode_cli.errors import UsageError

    if in_place and diff:
        raise UsageError("--in-place and --diff exclude each other: --diff shows the change, --in-place makes it")
    if json_out and (in_place or diff):
        raise UsageError("--json cannot be combined with --in-place or --diff")
    if (in_place or diff) and num_samples > 1:
        raise UsageError("--in-place and --diff take one completion; drop -n/--num-samples")
    if in_place and path == "-":
        raise UsageError("--in-place needs a file, not standard input")


def completer_for(server: str | None, choice: ModelChoice) -> Completer:
    """A running server's completer with --server (or $BIGCODE_SERVER), else the model chosen by the options."""
    from bigcode_cli.cli.commands.server_client import RemoteCompleter, server_url

    url = server_url(server)
    return RemoteCompleter(url) if url is not None else LocalCompleter(choice)


class LocalCompleter:
    """Completes with a model loaded here (the Completer of a run without --server)."""

    def __init__(self, choice: ModelChoice) -> None:
        self.choice = choice

    def complete(self, request: CompletionRequest, on_text: OnText | None) -> CompletionResult:
        """Load the model, then complete (a note on stderr when the input had to be cut to fit)."""
        from bigcode_cli.cli.commands.completer import CompletionResult, Sample
        from bigcode_cli.generation.completion import complete

        started = time.perf_counter()
        console = stderr_console()
        with console.status("loading model", spinner="dots") if console.is_terminal else contextlib.nullcontext():
            loaded = self.choice.open("causal-lm")
        load_s = time.perf_counter() - started
        if request.mode == "fim":
            loaded.tokenizer.require_fim()
        result = complete(loaded.runner, loaded.tokenizer, request.prefix, request.suffix, request.mode,
                          request.settings, on_text=(lambda _i, text: on_text(text)) if on_text else None,
                          notice=print_notice)
        generation = result.generation
        return CompletionResult(
            samples=[Sample(s.text, s.stop_reason, len(s.token_ids)) for s in generation.samples],
            mode=result.prompt.mode, prompt=loaded.tokenizer.decode(result.prompt.ids, skip_special_tokens=False),
            prompt_tokens=generation.prompt_tokens, truncated=result.prompt.truncated,
            dtype=loaded.runner.dtype_name, load_s=load_s, prefill_s=generation.prefill_s,
            decode_s=generation.decode_s, tokens_per_s=generation.tokens_per_s, interrupted=generation.interrupted,
            draft_tokens=generation.draft_tokens, draft_accepted=generation.draft_accepted)


def run_completion(completer: Completer, request: CompletionRequest, *, json_out: bool, filename: str | None = None,
                   in_place: bool = False, diff: bool = False) -> None:
    """Complete with `completer` (local or a server), streaming the text when nothing else is asked for, then
    show the result (--json records, samples, a diff) or write it into the file (--in-place)."""
    from bigcode_cli.terminal.stream_printer import StreamPrinter

    streaming = not json_out and not in_place and not diff and request.settings.num_samples == 1
    printer = StreamPrinter(filename=filename) if streaming else None
    result = completer.complete(request, printer.write if printer else None)
    if printer is not None:
        printer.finish()
    if result.interrupted:
        raise KeyboardInterrupt
    if result.notice:
        print_notice(result.notice)
    _show(result, request, json_out=json_out, filename=filename, in_place=in_place, diff=diff,
          streamed=printer is not None)


def _show(result: CompletionResult, request: CompletionRequest, *, json_out: bool, filename: str | None,
          in_place: bool, diff: bool, streamed: bool) -> None:
    from bigcode_cli.cli.commands.generation_output import (
        completion_records,
        print_json_lines,
        print_samples,
        unified_diff,
    )
    from bigcode_cli.terminal.safe_text import for_stream

    texts = result.texts
    if json_out:
        print_json_lines(completion_records(result))
    elif in_place or diff:
        from bigcode_cli.generation.fim import splice_in_file_endings

        start, inserted, end = splice_in_file_endings(request.prefix, texts[0], request.suffix)
        before, after = request.prefix + request.suffix, start + inserted + end
        if diff:
            import sys

            sys.stdout.write(for_stream(unified_diff(filename or "-", before, after), sys.stdout))
            sys.stdout.flush()
        else:
            from bigcode_cli.text.textfile import write_atomically

            write_atomically(filename or "-", after)
            added = inserted.count("\n") + (1 if inserted else 0)
            stderr_console().print(f"wrote {filename}: inserted {len(inserted)} characters "
                                   f"({added} line{'' if added == 1 else 's'})",
                                   markup=False)
    elif not streamed:
        print_samples(texts)
    if not (json_out or in_place) and not any(texts):
        import sys

        from bigcode_cli.terminal.safe_text import is_terminal

        if is_terminal(sys.stdout):  # an empty line on a terminal looks like a hang or a bug; a pipe gets nothing
            print_notice("the model produced nothing here (it ended the completion at once)")
