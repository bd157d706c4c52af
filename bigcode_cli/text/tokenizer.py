"""Tokenizer: a checkpoint's tokenizer, its special tokens, and UTF-8 safe streaming decoding."""

from __future__ import annotations

import json
import re
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from bigcode_cli.errors import TokenizerError
from bigcode_cli.text.textfile import check_unicode

if TYPE_CHECKING:
    import tokenizers

# FIM sentinel spellings, in (prefix, middle, suffix, pad) order.
FIM_SPELLINGS: dict[str, tuple[str, str, str, str]] = {
    "starcoder": ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"),
    "santacoder": ("<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"),
}
# Tokens after which a completion is over, besides the configured EOS and the FIM sentinels.
STOP_TOKENS = ("<|endoftext|>", "<file_sep>")
REPLACEMENT_CHAR = "\ufffd"


class FimTokens(NamedTuple):
    """The ids of a checkpoint's fill-in-the-middle sentinels and how they are spelled."""

    prefix: int
    middle: int
    suffix: int
    pad: int | None
    spelling: str


class StreamDecoder:
    """Turns generated ids into text one id at a time, never emitting half a UTF-8 character."""

    # Ids kept as left context after a clean boundary; decoders such as Metaspace need some.
    CONTEXT = 4
    # Window length that triggers trimming back to CONTEXT ids.
    WINDOW = 16

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = 0  # characters of decode(self._ids) already returned

    def push(self, token_id: int) -> str:
        """Add one id and return the text it completes (possibly empty)."""
        self._ids.append(int(token_id))
        text = self._decode(self._ids)
        # Only the last U+FFFD can be a multi-byte character still missing bytes (an incomplete but valid
        # prefix decodes to exactly one): hold that one back. Replacement characters before it are final
        # bytes that no later byte can mend, and UTF-8 decoding never looks back past them.
        held = 1 if text.endswith(REPLACEMENT_CHAR) else 0
        safe = len(text) - held
        out = text[self._emitted:safe] if safe > self._emitted else ""
        self._emitted = max(self._emitted, safe)
        if len(self._ids) > self.WINDOW:
            # The last CONTEXT ids hold every byte of a held character (at most 3 bytes, each id at least
            # one), so their decoding ends the same way; all of it but the held character was emitted.
            self._ids = self._ids[-self.CONTEXT:]
            self._emitted = len(self._decode(self._ids)) - held
        return out

    def flush(self) -> str:
        """Return whatever is held back (incomplete bytes decode to U+FFFD) and reset."""
        text = self._decode(self._ids) if self._ids else ""
        out = text[self._emitted:]
        self._ids = []
        self._emitted = 0
        return out


def _token_content(value: Any) -> str | None:
    """The text of a special-token entry that is either a string or an AddedToken-like dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is not a JSON object")
    return data


class Tokenizer:
    """A checkpoint's tokenizer (backed by the `tokenizers` library) and the special ids generation needs."""

    def __init__(self, backend: tokenizers.Tokenizer, special_tokens: dict[str, Any] | None = None,
                 name: str = "this model") -> None:
        self._backend = backend
        self.name = name
        config = special_tokens or {}
        self.eos_id = self._configured_id(config.get("eos_token"))
        if self.eos_id is None:
            self.eos_id = backend.token_to_id("<|endoftext|>")
        self.bos_id = self._configured_id(config.get("bos_token"))
        pad = self._configured_id(config.get("pad_token"))
        self.pad_id = pad if pad is not None else self.eos_id
        self.fim = self._find_fim()

        control: set[str] = {tok.content for tok in backend.get_added_tokens_decoder().values() if tok.special}
        for key in ("eos_token", "bos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
            content = _token_content(config.get(key))
            if content is not None:
                control.add(content)
        for extra in config.get("additional_special_tokens") or []:
            content = _token_content(extra)
            if content is not None:
                control.add(content)
        for spelling in FIM_SPELLINGS.values():
            control.update(spelling)
        control.update(STOP_TOKENS)
        control = {tok for tok in control if backend.token_to_id(tok) is not None}
        self._mark_special(control)
        self.control_tokens: frozenset[str] = frozenset(control)
        self.special_ids: frozenset[int] = frozenset(self._ids_of(control))

        stops = {tok for tok in STOP_TOKENS if backend.token_to_id(tok) is not None}
        if self.fim is not None:
            stops.update(tok for tok in FIM_SPELLINGS[self.fim.spelling] if backend.token_to_id(tok) is not None)
        stop_ids = set(self._ids_of(stops))
        if self.eos_id is not None:
            stop_ids.add(self.eos_id)
        self.stop_ids: frozenset[int] = frozenset(stop_ids)

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], name: str | None = None) -> Tokenizer:
        """Load the tokenizer saved in a checkpoint directory."""
        directory = Path(path)
        label = name or directory.name or str(directory)
        if not directory.is_dir():
            raise TokenizerError(f"cannot load a tokenizer from {directory}: not a directory")
        special = _read_json(directory / "special_tokens_map.json")
        special.update(_read_json(directory / "tokenizer_config.json"))
        tokenizer_json = directory / "tokenizer.json"
        if tokenizer_json.is_file():
            from tokenizers import Tokenizer as Backend

            try:
                backend = Backend.from_file(str(tokenizer_json))
            except Exception as exc:  # the Rust side raises plain Exception for any parse error
                raise TokenizerError(f"cannot read {tokenizer_json}: {exc}") from None
        elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            backend = _backend_from_transformers(directory)
        else:
            raise TokenizerError(
                f"model {label} has no tokenizer: {directory} holds neither tokenizer.json nor "
                "vocab.json + merges.txt; copy the tokenizer files of the model it was trained from into it"
            )
        return cls(backend, special, name=label)

    # -- text <-> ids ------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as plain text: no special tokens added, special-token spellings not matched."""
        # tokenizers' encode_batch_fast gives encode's ids without the character offsets, sooner (measured by
        # benchmarks/tokenize_speed.py), and lets other threads run meanwhile where encode holds the GIL
        # throughout: a server's event loop and its model's thread go on while a prompt is tokenized
        return self._backend.encode_batch_fast([check_unicode(text)], add_special_tokens=False)[0].ids

    def encode_with_special_tokens(self, text: str) -> list[int]:
        """Ids of `text` with the spellings of control tokens (<fim_prefix>, <|endoftext|>...) read as those tokens.

        For prompts a client wrote on purpose in the model's own format; file contents go through `encode`.
        """
        if not self.control_tokens:
            return self.encode(text)
        pattern = "(" + "|".join(re.escape(t) for t in sorted(self.control_tokens, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for i, piece in enumerate(re.split(pattern, text)):
            if i % 2:
                ids.append(self._backend.token_to_id(piece))
            elif piece:
                ids.extend(self.encode(piece))
        return ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of `text` (exactly as `encode`) and each token's (start, end) character span in `text`."""
        encoding = self._backend.encode(check_unicode(text), add_special_tokens=False)
        return encoding.ids, [tuple(span) for span in encoding.offsets]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids`, special tokens spelled out unless skipped."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, skip_special_tokens: bool = False) -> StreamDecoder:
        """A decoder for ids arriving one at a time; pushes + flush equal decode(all ids)."""
        return StreamDecoder(lambda ids: self._backend.decode(ids, skip_special_tokens=skip_special_tokens))

    def token_to_id(self, token: str) -> int | None:
        """The id of a token string, or None when the vocabulary lacks it."""
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The token string of an id, or None when it is out of range."""
        return self._backend.id_to_token(int(token_id))

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added tokens included."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def require_fim(self) -> FimTokens:
        """The FIM sentinels, or a TokenizerError when the checkpoint was not trained for infilling."""
        if self.fim is None:
            raise TokenizerError(
                f"model {self.name} has no fill-in-the-middle tokens; use `bigcode generate` to continue "
                "text, or pick a FIM-trained model such as starcoder or santacoder"
            )
        return self.fim

    # -- helpers -----------------------------------------------------------------------------------

    def _configured_id(self, value: Any) -> int | None:
        """The id of a configured special token (string or dict), None when unset or unknown."""
        content = _token_content(value)
        return None if content is None else self._backend.token_to_id(content)

    def _find_fim(self) -> FimTokens | None:
        """The FIM sentinels in whichever spelling the vocabulary has."""
        for spelling, (prefix, middle, suffix, pad) in FIM_SPELLINGS.items():
            ids = [self._backend.token_to_id(tok) for tok in (prefix, middle, suffix)]
            if all(i is not None for i in ids):
                return FimTokens(ids[0], ids[1], ids[2], self._backend.token_to_id(pad), spelling)
        return None

    def _ids_of(self, tokens: Iterable[str]) -> list[int]:
        """Ids of tokens known to be in the vocabulary."""
        return [i for i in (self._backend.token_to_id(tok) for tok in tokens) if i is not None]

    def _mark_special(self, tokens: set[str]) -> None:
        """Register control tokens as special and stop matching special tokens inside encoded text."""
        from tokenizers import AddedToken

        # Re-adding an existing token as special only flips its flag; the id stays the same.
        added = self._backend.get_added_tokens_decoder()
        already = {tok.content for tok in added.values() if tok.special}
        missing = sorted(tokens - already)
        if missing:
            self._backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in missing])
        # With this flag the added-vocabulary pass skips special tokens, so a file that contains the
        # text "<fim_prefix>" is tokenized like any other text and cannot inject a sentinel.
        self._backend.encode_special_tokens = True


def _backend_from_transformers(directory: Path) -> tokenizers.Tokenizer:
    """A `tokenizers` backend for a checkpoint that ships only vocab.json + merges.txt."""
    try:
        from transformers import AutoTokenizer
    except ImportError:  # pragma: no cover - transformers is a dependency
        raise TokenizerError(f"{directory} has only vocab.json + merges.txt; install transformers to read it") from None
    config = _read_json(directory / "tokenizer_config.json")
    attempts: list[dict[str, Any]] = [{}]
    if "tokenizer_class" not in config:
        # GPTBigCode checkpoints use GPT-2's byte-level BPE; transformers 5 maps gpt_bigcode to a
        # backend that needs tokenizer.json, so name the tokenizer type explicitly.
        attempts.append({"tokenizer_type": "gpt2"})
    error: Exception | None = None
    for kwargs in attempts:
        try:
            hf = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False, **kwargs)
        except Exception as exc:  # transformers raises ValueError, OSError, KeyError... for bad files
            error = exc
            continue
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is not None:
            return backend
        error = TypeError(f"{type(hf).__name__} is not a fast tokenizer")
    raise TokenizerError(f"cannot load the tokenizer in {directory}: {error}")
