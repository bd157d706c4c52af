"""The bottom toolbar: model, engine, backend, device, dtype, mode, and the last turn's numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bigcode_cli.repl.session import Session

STYLE = {
    "bottom-toolbar": "noreverse bg:#222222 #aaaaaa",
    "bottom-toolbar.label": "#777777",
    "bottom-toolbar.value": "bold #dddddd",
    "bottom-toolbar.stopped": "#ff8800",
}


def toolbar_items(session: Session) -> list[tuple[str, str]]:
    """(label, value) pairs, in the order shown."""
    loaded = session.current
    items: list[tuple[str, str]] = []
    if loaded is None:
        items.append(("model", f"{session.names.get(session.task) or 'default'} (loads on first use)"))
    else:
        runner = loaded.runner
        items += [("model", loaded.name), ("engine", runner.engine), ("attn", runner.backend),
                  ("device", str(runner.device)), ("dtype", runner.dtype_name)]
    items.append(("mode", session.mode))
    last = session.last
    if last is not None:
        if last.new_tokens:
            items.append(("speed", f"{last.tokens_per_s:.1f} tok/s"))
            items.append(("tokens", f"{last.prompt_tokens} in, {last.new_tokens} out"))
        else:
            items.append(("tokens", f"{last.prompt_tokens} in"))
            items.append(("time", f"{last.prefill_s * 1000:.0f} ms"))
    return items


def toolbar(session: Session, width: int | None = None) -> list[tuple[str, str]]:
    """The toolbar as prompt-toolkit formatted text, on as many lines as `width` columns need (default: the
    running app's width); a line breaks between items, never inside one."""
    if width is None:
        from prompt_toolkit.application import get_app

        width = get_app().output.get_size().columns
    pieces = [[("class:bottom-toolbar.label", f" {label} "), ("class:bottom-toolbar.value", value + " ")]
              for label, value in toolbar_items(session)]
    if session.last is not None and session.last.interrupted:
        pieces.append([("class:bottom-toolbar.stopped", " stopped ")])
    fragments: list[tuple[str, str]] = []
    used = 0
    for piece in pieces:
        size = sum(len(text) for _, text in piece)
        if used and used + size > width:
            fragments.append(("", "\n"))
            used = 0
        fragments += piece
        used += size
    return fragments
