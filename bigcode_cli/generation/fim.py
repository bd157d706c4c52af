"""Fill-in-the-middle: where the cursor is, the prompt around it, fitting it to the context, cleaning the result."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from bigcode_cli.choices import FimOrder
from bigcode_cli.errors import InputError, UsageError

if TYPE_CHECKING:
    from bigcode_cli.text.tokenizer import FimTokens, Tokenizer

FILL_MARKER = "<FILL>"
FIM_OVERHEAD = 3  # sentinel tokens in a FIM prompt: prefix, suffix, middle
# what a completion does: fill in the middle between a prefix and a suffix, or continue the prefix
Mode = Literal["fim", "continue"]


class Cursor(NamedTuple):
    """Text before and after the cursor, and whether to infill or continue."""

    prefix: str
    suffix: str
    mode: Mode


class Fitted(NamedTuple):
    """A prefix and suffix cut down to a token budget, and their ids (each text tokenized as `encode` does)."""

    prefix: str
    suffix: str
    truncated: bool
    prefix_ids: list[int]
    suffix_ids: list[int]


# -- the cursor ---------------------------------------------------------------------------------


def parse_at(value: str) -> tuple[int, int]:
    """Parse `--at LINE:COL` (both 1-based)."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", value)
    if match is None:
        raise UsageError(f"--at expects LINE:COL with 1-based numbers, e.g. --at 12:5; got {value!r}")
    return check_at((int(match.group(1)), int(match.group(2))))


def check_at(at: tuple[int, int]) -> tuple[int, int]:
    """The one check of a cursor position as such: LINE and COL start at 1 (a usage error otherwise)."""
    line, column = at
    if line < 1 or column < 1:
        raise UsageError(f"--at LINE and COL start at 1; got {line}:{column}")
    return at


def split_source(text: str, at: tuple[int, int] | None = None) -> Cursor:
    """Split a file at its <FILL> marker or at `at` (LINE, COL); with neither, continue at the end."""
    markers = [m.start() for m in re.finditer(re.escape(FILL_MARKER), text)]
    if len(markers) > 1:
        lines = ", ".join(str(text.count("\n", 0, i) + 1) for i in markers)
        raise InputError(f"found {len(markers)} {FILL_MARKER} markers (lines {lines}); keep exactly one")
    if markers and at is not None:
        raise UsageError(f"the file has a {FILL_MARKER} marker and --at was given; use one or the other")
    if markers:
        return Cursor(text[: markers[0]], text[markers[0] + len(FILL_MARKER):], "fim")
    if at is None:
        return Cursor(text, "", "continue")
    offset = _offset_of(text, at)
    return Cursor(text[:offset], text[offset:], "fim")


def _offset_of(text: str, at: tuple[int, int]) -> int:
    """The character offset of 1-based (line, column); the column may be one past the line's end."""
    line, column = check_at(at)
    rows = text.split("\n")  # a final "" row is the position after a trailing newline
    if line > len(rows):
        count = len(text.splitlines())
        raise InputError(f"--at {line}:{column} is outside the file: it has {count} line{'s' if count != 1 else ''}")
    row = rows[line - 1]
    if line < len(rows):
        row = row.removesuffix("\r")
    if column > len(row) + 1:
        raise InputError(
            f"--at {line}:{column} is past the end of line {line}, which has {len(row)} characters "
            f"(columns 1 to {len(row) + 1})"
        )
    return sum(len(r) + 1 for r in rows[: line - 1]) + column - 1


# -- the prompt ---------------------------------------------------------------------------------


def fim_prompt_ids(tokenizer: Tokenizer, prefix: str, suffix: str, order: FimOrder = "psm") -> list[int]:
    """The FIM prompt as ids: sentinel ids joined with the plain-text encoding of prefix and suffix."""
    fim = tokenizer.require_fim()
    return fim_prompt_from_ids(fim, tokenizer.encode(prefix), tokenizer.encode(suffix), order)


def fim_prompt_from_ids(fim: FimTokens, prefix_ids: Sequence[int], suffix_ids: Sequence[int],
                        order: FimOrder = "psm") -> list[int]:
    """The FIM prompt from the ids of prefix and suffix: the sentinels in `order`'s places."""
    if order == "psm":
        return [fim.prefix, *prefix_ids, fim.suffix, *suffix_ids, fim.middle]
    if order == "spm":
        # SPM as StarCoder/SantaCoder were trained: "variant 2" of Bavarian et al. 2022 (arXiv:2207.14255),
        # <prefix><suffix>{suffix}<middle>{prefix}, see bigcode-project/Megatron-LM,
        # megatron/data/gpt_dataset.py, permute(): [prefix_tok_id, suffix_tok_id] + suffix + [middle_tok_id] + prefix.
        return [fim.prefix, fim.suffix, *suffix_ids, fim.middle, *prefix_ids]
    raise UsageError(f"unknown FIM order {order!r}; use psm or spm")


# -- fitting the context ------------------------------------------------------------------------


def fit_left(ids: Sequence[int], budget: int) -> tuple[list[int], bool]:
    """Keep the last `budget` ids (continue mode); also say whether any were dropped."""
    budget = max(budget, 0)
    if len(ids) <= budget:
        return list(ids), False
    return list(ids[len(ids) - budget:]) if budget else [], True


def fit_fim(tokenizer: Tokenizer, prefix: str, suffix: str, budget_tokens: int) -> Fitted:
    """Cut prefix and suffix to `budget_tokens` tokens in all, keeping the text nearest the cursor.

    Whole lines go from the start of the prefix and the end of the suffix; the prefix gets about 3/4
    of the budget and a share one side does not need goes to the other. Only when the cursor's own
    line does not fit is it cut mid-line.
    """

    def count(text: str) -> int:
        return len(tokenizer.encode(text))

    budget = max(budget_tokens, 0)
    prefix_ids, suffix_ids = tokenizer.encode(prefix), tokenizer.encode(suffix)
    prefix_need, suffix_need = len(prefix_ids), len(suffix_ids)
    if prefix_need + suffix_need <= budget:  # the usual case: tokenized once, for the count and the prompt
        return Fitted(prefix, suffix, False, prefix_ids, suffix_ids)
    prefix_budget = min(prefix_need, max(budget * 3 // 4, budget - suffix_need))
    kept_prefix = _keep_end(prefix, prefix_budget, count)
    kept_suffix = _keep_start(suffix, budget - count(kept_prefix), count)
    # the suffix, cut at a line end, may leave part of its share unused
    spare = budget - count(kept_suffix)
    if kept_prefix != prefix and spare > prefix_budget:
        kept_prefix = _keep_end(prefix, spare, count)
    return Fitted(kept_prefix, kept_suffix, True, tokenizer.encode(kept_prefix), tokenizer.encode(kept_suffix))


def _first_fitting(n: int, candidate: Callable[[int], str], budget: int, count: Callable[[str], int]) -> int | None:
    """Index of the first of `n` candidates within budget; candidate(i) runs from longest to shortest and is
    made only when counted (all of a long text's tails at once would take memory quadratic in its length)."""
    low, high = 0, n
    while low < high:
        mid = (low + high) // 2
        if count(candidate(mid)) <= budget:
            high = mid
        else:
            low = mid + 1
    return low if low < n else None


def _keep_end(text: str, budget: int, count: Callable[[str], int]) -> str:
    """The longest tail of `text` within budget that starts at a line start (mid-line only if it must)."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    found = _first_fitting(len(starts), lambda i: text[starts[i]:], budget, count)
    if found is not None:
        return text[starts[found]:]
    last = starts[-1]
    found = _first_fitting(len(text) + 1 - last, lambda i: text[last + i:], budget, count)
    return text[last + found:] if found is not None else ""


def _keep_start(text: str, budget: int, count: Callable[[str], int]) -> str:
    """The longest head of `text` within budget that ends at a line end (mid-line only if it must)."""
    ends = sorted({m.end() for m in re.finditer("\n", text)} | {len(text)}, reverse=True)
    found = _first_fitting(len(ends), lambda i: text[: ends[i]], budget, count)
    if found is not None:
        return text[: ends[found]]
    first = ends[-1]
    found = _first_fitting(first + 1, lambda i: text[: first - i], budget, count)
    return text[: first - found] if found is not None else ""


# -- cleaning the completion --------------------------------------------------------------------


def check_lines(lines: int | None) -> None:
    """The one check of --lines: None (no limit) or at least 1."""
    if lines is not None and lines < 1:
        raise UsageError(f"--lines must be at least 1, got {lines}")

# A line at the block's own level that closes it or continues it (`} else {`, `except E:`).
_CLOSER_OR_CONTINUATION = re.compile(r"[})\]]|(?:end|else|elif|except|finally|catch)\b")
_OPENERS = (":", "{", "(", "[")


def clean_completion(text: str, suffix: str, *, prefix: str = "", lines: int | None = None,
                     block: bool = True, min_indent: int = 0) -> str:
    """Trim a FIM completion the way editors' completion tools do.

    Rules, in order ("cursor line" = the text before the cursor on its line + the completion's first line):
    1. Mid-line cursor (code both before and after the cursor on its line): if the model ended that
       line itself (emitted a newline) and the line ends with the code that follows the cursor, that
       duplicate is dropped; with block=True only the completion's first line is kept.
    2. Suffix repeat: the completion is cut at the first line from which its remaining non-blank lines
       repeat the suffix's first non-blank lines (compared stripped; a last line without a newline may
       be a prefix of its suffix line). The cursor's own line counts only when the cursor starts it.
    3. Block (block=True), for indentation-structured code: with L0 the cursor line's indentation,
       a completion whose next line is indented deeper opened a block; it ends at the first non-blank
       line indented <= L0, except that a line at L0 starting with a closer (}, ), ], end) or a
       continuation keyword (else, elif, except, finally, catch) is kept, and the block goes on if
       that line ends with an opener (:, {, (, [). A completion that opened nothing is cut at the
       first line indented < L0. Blank cursor lines take the first non-blank completion line as theirs.
    4. lines=N keeps at most N lines, the newline ending the N-th excluded; an empty first line (the
       completion starts with a newline) does not count.
    5. min_indent=N (llama.cpp's `n_indent`): the completion ends before its first non-blank line,
       after the first, that is indented by fewer than N spaces or tabs (each counts one).
    After a cut at a line boundary (rules 2-4, cursor not mid-line), trailing whitespace and blank
    lines are dropped; if code followed the cursor on its line, a newline and the cursor line's
    indentation are added back so that code keeps its own line.
    """
    check_lines(lines)
    head = prefix[prefix.rfind("\n") + 1:]
    rest = suffix.split("\n", 1)[0]
    if head.strip() and rest.strip():
        return _clean_mid_line(text, rest, block)

    cut = False
    repeat_at = _suffix_repeat_at(text, suffix, allow_first=not head.strip())
    if repeat_at is not None:
        text, cut = text[:repeat_at], True
    if block:
        block_at = _block_end_at(text, head)
        if block_at is not None:
            text, cut = text[:block_at], True
    if lines is not None:
        rows = text.split("\n")
        keep = lines + (1 if len(rows) > 1 and rows[0] == "" else 0)
        if len(rows) > keep:
            text, cut = "\n".join(rows[:keep]), True
    if min_indent > 0:
        shallow_at = _shallow_line_at(text, min_indent)
        if shallow_at is not None:
            text, cut = text[:shallow_at], True
    if cut:
        text = text.rstrip()
        if text and rest.strip():
            text += "\n" + head
    return text


def splice(prefix: str, completion: str, suffix: str) -> tuple[str, str, str]:
    """The text before the cursor, the completion and the text after it, joined the way an editor leaves a
    file: `prefix + inserted + suffix` of what this returns.

    On a cursor line blank but for the cursor (a `<FILL>` alone on its line), a completion that starts
    with a newline replaces the line's indentation with its own (no line of only spaces stays behind),
    and one that ends with a newline ends the cursor line with it (no extra blank line). Anything else is
    joined as it is.
    """
    head = prefix[prefix.rfind("\n") + 1:]
    rest = suffix.split("\n", 1)[0]
    if head.strip() or rest.strip():
        return prefix, completion, suffix
    if completion.startswith("\n"):
        prefix, completion = prefix[:len(prefix) - len(head)], completion[1:]
    if completion.endswith("\n") and "\n" in suffix:
        completion, suffix = completion[:-1], suffix[len(rest):]
    return prefix, completion, suffix


def splice_in_file_endings(prefix: str, completion: str, suffix: str) -> tuple[str, str, str]:
    """`splice`, with the inserted text in the file's own line endings: in a file whose every line ends in
    \r\n (a Windows file), the completion's lines do too, and the joins see whole lines."""
    whole = prefix + suffix
    if "\r\n" not in whole or whole.count("\n") != whole.count("\r\n"):
        return splice(prefix, completion, suffix)
    if prefix.endswith("\r"):  # a cursor between a line's \r and its \n: the whole ending goes after it
        prefix, suffix = prefix[:-1], "\r" + suffix
    completion = completion.replace("\r\n", "\n")
    if completion.endswith("\r"):  # the \r of a \r\n whose \n a stop string cut off, with it
        completion = completion[:-1]
    parts = splice(prefix.replace("\r\n", "\n"), completion, suffix.replace("\r\n", "\n"))
    return tuple(part.replace("\n", "\r\n") for part in parts)  # type: ignore[return-value]


def _shallow_line_at(text: str, min_indent: int) -> int | None:
    """Rule 5: where the first complete non-blank line after the first one, indented less than `min_indent`, starts."""
    at = text.find("\n") + 1
    while at:
        end = text.find("\n", at)
        if end < 0:
            return None  # a line still being written: judged once it is complete
        line = text[at:end]
        if line.strip() and len(line) - len(line.lstrip(" \t")) < min_indent:
            return at
        at = end + 1
    return None


def _clean_mid_line(text: str, rest: str, block: bool) -> str:
    """Rule 1: a completion inserted inside a line."""
    first, newline, after = text.partition("\n")
    tail = rest.strip()
    if newline and first.rstrip().endswith(tail):
        first = first.rstrip()[: -len(tail)]
    return first if block or not newline else first + newline + after


def _suffix_repeat_at(text: str, suffix: str, allow_first: bool) -> int | None:
    """Rule 2: where the completion starts repeating the suffix, if it does."""
    wanted = [row.strip() for row in suffix.split("\n") if row.strip()]
    if not wanted:
        return None
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    for start in starts if allow_first else starts[1:]:
        tail = text[start:]
        rows = [row.strip() for row in tail.split("\n") if row.strip()]
        if not rows or len(rows) > len(wanted):
            continue
        complete = tail.rstrip(" \t").endswith("\n")
        *whole, last = rows
        if whole == wanted[: len(whole)] and (
            last == wanted[len(whole)] or (not complete and wanted[len(whole)].startswith(last))
        ):
            return start
    return None


def _indent(row: str) -> int:
    """Width of a line's leading whitespace, tabs expanded."""
    expanded = row.expandtabs(8)
    return len(expanded) - len(expanded.lstrip())


def _block_end_at(text: str, head: str) -> int | None:
    """Rule 3: the offset of the first line past the end of the cursor's block, if any."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    rows = text.split("\n")
    rows[0] = head + rows[0]
    anchor = next((i for i, row in enumerate(rows) if row.strip()), None)
    if anchor is None:
        return None
    level = _indent(rows[anchor])
    opened: bool | None = None
    closed = False
    for i in range(anchor + 1, len(rows)):
        row = rows[i]
        if not row.strip():
            continue
        indent, code = _indent(row), row.strip()
        if opened is None:
            opened = indent > level
        if closed:
            if indent <= level:
                return starts[i]
        elif not opened:
            if indent < level:
                return starts[i]
        elif indent < level:
            return starts[i]
        elif indent == level:
            if not _CLOSER_OR_CONTINUATION.match(code):
                return starts[i]
            closed = not code.endswith(_OPENERS)
    return None
