"""What each slash command does. Handlers take the session and the words after the command name,
change the session through its methods, and raise a BigCodeError for a bad value."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bigcode_cli.choices import (
    ATTENTION_CHOICES,
    DEVICE_CHOICES,
    DTYPE_CHOICES,
    FIM_ORDERS,
    MAX_SEED,
    SPECULATE_CHOICES,
    listed,
)
from bigcode_cli.errors import InputError
from bigcode_cli.repl.slash import SlashRegistry
from bigcode_cli.tasks import MODES

if TYPE_CHECKING:
    from bigcode_cli.repl.session import Session

REGISTRY = SlashRegistry()

_OFF = ("none", "off", "random", "default")
_TRUE = ("on", "true", "yes", "1")
_FALSE = ("off", "false", "no", "0")


# -- values --------------------------------------------------------------------------------------


def _number(kind: Callable[[str], Any], what: str) -> Callable[[str, str], Any]:
    def parse(key: str, value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise InputError(f"{key} takes {what}, got {value!r}") from None

    return parse


def _optional(parse: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    def parse_optional(key: str, value: str) -> Any:
        return None if value.lower() in _OFF else parse(key, value)

    return parse_optional


def _switch(key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InputError(f"{key} takes on or off, got {value!r}")


def _one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(key: str, value: str) -> str:
        if value.lower() not in choices:
            raise InputError(f"{key} takes {listed(choices)}, got {value!r}")
        return value.lower()

    return parse


_int = _number(int, "a whole number")
_float = _number(float, "a number")


def _seed_value(key: str, value: str) -> int:
    seed = _int(key, value)
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"{key} takes a whole number from 0 to {MAX_SEED}, got {value!r}")
    return seed


# /set KEY: (where it lives, parser); "sampling" keys live in settings.sampling
SETTINGS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "temperature": ("sampling", _float),
    "top_k": ("sampling", _int),
    "top_p": ("sampling", _float),
    "repetition_penalty": ("sampling", _float),
    "seed": ("sampling", _optional(_seed_value)),
    "max_new_tokens": ("settings", _int),
    "num_samples": ("settings", _int),
    "lines": ("settings", _optional(_int)),
    "block": ("settings", _switch),
    "order": ("settings", _one_of(FIM_ORDERS)),
    "speculate": ("settings", _one_of(SPECULATE_CHOICES)),
}
_KEY_ALIASES = {"fim_order": "order", "max_tokens": "max_new_tokens", "n": "num_samples"}
_VALUE_HINTS = {"block": ("on", "off"), "order": FIM_ORDERS, "speculate": SPECULATE_CHOICES, "lines": ("none", "1"), "seed": ("none",),
                "temperature": ("0", "0.2", "0.8")}


def settings_key(name: str) -> str:
    """The /set key for a name as typed (top-k, top_k, --top-k ...)."""
    key = name.lstrip("-").replace("-", "_").lower()
    key = _KEY_ALIASES.get(key, key)
    if key not in SETTINGS:
        raise InputError(f"unknown setting {name!r}; /set takes {', '.join(SETTINGS)}")
    return key


def apply_setting(session: Session, key: str, value: Any) -> None:
    """Set one key; the settings dataclasses check the value (nothing changes if it is bad)."""
    where, _ = SETTINGS[key]
    if where == "sampling":
        session.settings = replace(session.settings, sampling=replace(session.settings.sampling, **{key: value}))
    else:
        session.settings = replace(session.settings, **{key: value})


def current_setting(session: Session, key: str) -> Any:
    """The value a /set key has now."""
    where, _ = SETTINGS[key]
    return getattr(session.settings.sampling if where == "sampling" else session.settings, key)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def unescape(text: str) -> str:
    """\\n, \\t and \\\\ in a typed stop string become the characters."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _one(args: list[str], usage: str) -> str:
    if len(args) != 1:
        raise InputError(f"usage: {usage}")
    return args[0]


def _choice(value: str, choices: Iterable[str], what: str) -> str:
    if value.lower() not in choices:
        raise InputError(f"unknown {what} {value!r}; choose {', '.join(choices)}")
    return value.lower()


# -- completions ---------------------------------------------------------------------------------


def _first(options: Iterable[str]) -> Callable[[Any, list[str]], Iterable[str]]:
    return lambda _session, before: options if not before else ()


def _model_names(_session: Any, before: list[str]) -> list[str]:
    if before:
        return []
    from bigcode_cli import store

    names = [row["name"] for row in store.list_models()]
    return sorted(set(names) | set(store.ALIASES))


def _mode_choices(session: Session, before: list[str]) -> Iterable[str]:
    return MODES if not before else _model_names(session, [])


def _set_choices(session: Any, before: list[str]) -> Iterable[str]:
    if not before:
        return SETTINGS
    if len(before) == 1 and before[0] in _VALUE_HINTS:
        return _VALUE_HINTS[before[0]]
    return ()


def _languages(_session: Any, before: list[str]) -> list[str]:
    if before:
        return []
    from pygments.lexers import get_all_lexers

    return sorted({alias for _, aliases, _, _ in get_all_lexers() for alias in aliases[:1]})


def _help_choices(_session: Any, before: list[str]) -> list[str]:
    return [command.name for command in REGISTRY] if not before else []


# -- the commands --------------------------------------------------------------------------------


@REGISTRY.command("help", "/help [COMMAND]", "Show the commands and keys, or one command.", choices=_help_choices,
                  aliases=("?",))
def _help(session: Session, args: list[str]) -> None:
    session.say(REGISTRY.help_text(args[0] if args else None))


@REGISTRY.command("model", "/model [NAME]", "Switch the current mode's model (a name, alias or directory).",
                  choices=_model_names)
def _model(session: Session, args: list[str]) -> None:
    if not args:
        session.say(session.model_line())
        return
    session.load(session.task, _one(args, "/model NAME"))


@REGISTRY.command("attn", "/attn BACKEND", f"Attention backend: {listed(ATTENTION_CHOICES)} (no reload).",
                  choices=_first(ATTENTION_CHOICES))
def _attn(session: Session, args: list[str]) -> None:
    usage = f"/attn {'|'.join(ATTENTION_CHOICES)}"
    session.set_attention(_choice(_one(args, usage), ATTENTION_CHOICES, "attention backend"))


@REGISTRY.command("device", "/device DEVICE", f"Run on {listed(DEVICE_CHOICES)} (reloads).",
                  choices=_first(DEVICE_CHOICES))
def _device(session: Session, args: list[str]) -> None:
    session.reopen(device=_choice(_one(args, f"/device {'|'.join(DEVICE_CHOICES)}"), DEVICE_CHOICES, "device"))


@REGISTRY.command("dtype", "/dtype DTYPE", f"{listed(DTYPE_CHOICES)} (reloads).",
                  choices=_first(DTYPE_CHOICES))
def _dtype(session: Session, args: list[str]) -> None:
    session.reopen(dtype=_choice(_one(args, f"/dtype {'|'.join(DTYPE_CHOICES)}"), DTYPE_CHOICES, "dtype"))


@REGISTRY.command("set", "/set [KEY VALUE]", "Change a generation setting (/set alone lists them).",
                  choices=_set_choices)
def _set(session: Session, args: list[str]) -> None:
    if not args:
        rows = [f"  {key:<20}{_shown(current_setting(session, key))}" for key in SETTINGS]
        stops = ", ".join(repr(s) for s in session.settings.stops) or "none"
        session.say("\n".join(["Settings:", *rows, f"  {'stop':<20}{stops}"]))
        return
    if len(args) != 2:
        raise InputError(f"usage: /set KEY VALUE, with KEY one of {', '.join(SETTINGS)}")
    key = settings_key(args[0])
    value = SETTINGS[key][1](key, args[1])
    apply_setting(session, key, value)
    session.info(f"{key} = {_shown(current_setting(session, key))}")


@REGISTRY.command("seed", "/seed [N|none]", "Fix the sampling seed (none: a fresh one each turn).",
                  choices=_first(("none",)))
def _seed(session: Session, args: list[str]) -> None:
    if args:
        apply_setting(session, "seed", SETTINGS["seed"][1]("seed", _one(args, "/seed [N|none]")))
    session.info(f"seed = {_shown(session.settings.sampling.seed)}")


@REGISTRY.command("stop", '/stop ["TEXT" ...|--clear]', "Set the stop strings (\\n allowed); alone: list them.",
                  choices=_first(("--clear",)))
def _stop(session: Session, args: list[str]) -> None:
    if args == ["--clear"]:
        session.settings = replace(session.settings, stops=[])
    elif args:
        session.settings = replace(session.settings, stops=[unescape(a) for a in args])
    session.info(f"stop = {', '.join(repr(s) for s in session.settings.stops) or 'none'}")


@REGISTRY.command("mode", "/mode MODE [MODEL]",
                  f"{listed(MODES)} (each needs a model with its head).",
                  choices=_mode_choices)
def _mode(session: Session, args: list[str]) -> None:
    if not args:
        session.say(f"mode: {session.mode}")
        return
    if len(args) > 2:
        raise InputError(f"usage: /mode {'|'.join(MODES)} [MODEL]")
    session.set_mode(args[0].lower(), args[1] if len(args) == 2 else None)


@REGISTRY.command("lang", "/lang [NAME]", "Highlight input and output as this language (a pygments name).",
                  choices=_languages)
def _lang(session: Session, args: list[str]) -> None:
    if args:
        session.set_language(_one(args, "/lang NAME"))
    session.info(f"language: {session.language}")


@REGISTRY.command("clear", "/clear", "Clear the screen.")
def _clear(session: Session, args: list[str]) -> None:
    if session.interactive:
        from prompt_toolkit.shortcuts import clear

        clear()


@REGISTRY.command("save", "/save FILE", "Write the session transcript (.jsonl: JSON Lines, else text).")
def _save(session: Session, args: list[str]) -> None:
    path = _one(args, "/save FILE")
    try:
        count = session.transcript.save(path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    session.info(f"saved {count} turns to {path}")


@REGISTRY.command("quit", "/quit", "Leave (Ctrl-D works too).", aliases=("exit", "q"))
def _quit(session: Session, args: list[str]) -> None:
    session.running = False
