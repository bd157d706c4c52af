"""What `complete`, `generate` and `infill` share: settings from options, loading, running, printing."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Callable

from bigcode_cli.terminal.console import print_notice, stderr_console

if TYPE_CHECKING:
    from bigcode_cli.terminal.model_choice import ModelChoice
    from bigcode_cli.generation.completion import CompletionSettings, Mode


def make_settings(*, max_new_tokens: int, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                  seed: int | None, stop: list[str] | None, num_samples: int, lines: int | None, block: bool,
                  fim_order: str = "psm") -> CompletionSettings:
    """Validated generation settings from command-line options (fim_order: a FimOrder member or its value)."""
    from bigcode_cli.generation.completion import CompletionSettings
    from bigcode_cli.generation.sampling import SamplingParams

    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p,
                              repetition_penalty=repetition_penalty, seed=seed)
    return CompletionSettings(max_new_tokens=max_new_tokens, sampling=sampling, stops=list(stop or []),
                              num_samples=num_samples, lines=lines, block=block,
                              order=getattr(fim_order, "value", fim_order))  # type: ignore[arg-type]


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


def run_completion(*, prefix: str, suffix: str, mode: Mode, settings: CompletionSettings, choice: ModelChoice,
                   json_out: bool, filename: str | None = None, in_place: bool = False, diff: bool = False) -> None:
    """Load the model, complete, and print (stream, JSON, diff) or write the file in place."""
    from bigcode_cli.cli.commands.generation_output import completion_records
    from bigcode_cli.generation.completion import complete
    from bigcode_cli.terminal.stream_printer import StreamPrinter

    started = time.perf_counter()
    console = stderr_console()
    with console.status("loading model", spinner="dots") if console.is_terminal else contextlib.nullcontext():
        loaded = choice.open("causal-lm")
    load_s = time.perf_counter() - started
    if mode == "fim":
        loaded.tokenizer.require_fim()
    streaming = not json_out and not in_place and not diff and settings.num_samples == 1
    printer = StreamPrinter(filename=filename) if streaming else None
    result = complete(loaded.runner, loaded.tokenizer, prefix, suffix, mode, settings,
                      on_text=(lambda _i, text: printer.write(text)) if printer else None, notice=print_notice)
    if printer is not None:
        printer.finish()
    if result.generation.interrupted:
        raise KeyboardInterrupt
    show_result(texts=result.texts, records=lambda: completion_records(result, loaded.tokenizer, load_s,
                                                                             dtype=loaded.runner.dtype_name),
                prefix=prefix, suffix=suffix, json_out=json_out, filename=filename, in_place=in_place, diff=diff,
                streamed=printer is not None)


def show_result(*, texts: list[str], records: Callable[[], list[dict[str, Any]]], prefix: str, suffix: str,
                json_out: bool, filename: str | None, in_place: bool, diff: bool, streamed: bool) -> None:
    """Once a completion is done: print its --json records, its diff or its samples, or write the file in
    place (streamed text is already out). Shared by local runs and `--server` ones."""
    from bigcode_cli.cli.commands.generation_output import print_json_lines, print_samples, unified_diff
    from bigcode_cli.terminal.safe_text import for_stream

    if json_out:
        print_json_lines(records())
    elif in_place or diff:
        from bigcode_cli.generation.fim import splice

        start, inserted, end = splice(prefix, texts[0], suffix)
        before, after = prefix + suffix, start + inserted + end
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
