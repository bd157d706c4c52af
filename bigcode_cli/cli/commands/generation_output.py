"""How generation commands show their results besides the stream (terminal.stream_printer): JSON, samples, diffs.

On a terminal model text goes through `safe_text` first; pipes and files get the exact text.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from bigcode_cli.terminal.safe_text import for_stream, json_for_stream

if TYPE_CHECKING:
    from bigcode_cli.cli.commands.completer import CompletionResult


def completion_records(result: CompletionResult) -> list[dict[str, Any]]:
    """One JSON-ready object per sample (the --json contract), the same for a local run and a server's answer."""
    timings = {
        "load_s": round(result.load_s, 4),
        "prefill_s": round(result.prefill_s, 4),
        "decode_s": round(result.decode_s, 4),
        "tokens_per_s": round(result.tokens_per_s, 2),
        "draft_n": result.draft_tokens,  # llama.cpp's names: drafted tokens, and those accepted
        "draft_n_accepted": result.draft_accepted,
    }
    return [
        {
            "text": sample.text,
            "mode": result.mode,
            "prompt": result.prompt,
            "stop_reason": sample.stop_reason,
            "prompt_tokens": result.prompt_tokens,
            "new_tokens": sample.new_tokens,
            "truncated": result.truncated,
            **({"dtype": result.dtype} if result.dtype else {}),
            "timings": timings,
        }
        for sample in result.samples
    ]


def print_json_lines(records: list[dict[str, Any]]) -> None:
    """One compact JSON object per line on stdout."""
    for record in records:
        sys.stdout.write(json_for_stream(json.dumps(record, ensure_ascii=False), sys.stdout) + "\n")
    sys.stdout.flush()


def print_samples(texts: list[str]) -> None:
    """Several samples on stdout, separated by a line holding only `---`."""
    for i, text in enumerate(texts):
        if i:
            sys.stdout.write("\n---\n")
        sys.stdout.write(for_stream(text, sys.stdout))
    sys.stdout.write("\n")
    sys.stdout.flush()


def unified_diff(path: str, before: str, after: str) -> str:
    """The change as a unified diff, as `diff -u` would print it (exact text: callers make it safe for a terminal)."""
    import difflib

    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))
