"""Reading user text strictly (one rule for what is text) and writing files back atomically.

The rule, for every command that reads user bytes (`complete`'s files and stdin, `classify`/`tag`
records): text is UTF-8 with no NUL byte anywhere. A NUL byte means binary data (no source file
holds one, and `-0` input uses NUL as the record separator), whatever its position.
A string that arrived already decoded (a JSON `"\\ud800"`, an argument in bytes that are not UTF-8)
is text when it is valid Unicode: no lone surrogate, which has no UTF-8 and no token.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from pathlib import Path

from bigcode_cli.errors import InputError


class NotTextError(InputError):
    """Bytes that are not text by the module's rule: `nul` when a NUL byte is the reason, else the
    1-based `line` of the first byte that is not UTF-8."""

    def __init__(self, message: str, *, nul: bool, line: int = 0) -> None:
        super().__init__(message)
        self.nul = nul
        self.line = line


def decode_utf8(data: bytes) -> str:
    """The text in `data`, or NotTextError: text is UTF-8 with no NUL byte anywhere."""
    if b"\x00" in data:
        raise NotTextError("binary data: it contains NUL bytes", nul=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise NotTextError(f"not valid UTF-8 (bad byte at line {line})", nul=False, line=line) from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(text: str, name: str = "the text") -> str:
    """`text` itself, or an InputError naming `name` when it holds a lone surrogate (it is not Unicode text)."""
    if text.isascii():
        return text
    found = _SURROGATE.search(text)
    if found is not None:
        raise InputError(f"{name} is not valid Unicode: a lone surrogate (U+{ord(found.group()):04X}) at "
                         f"character {found.start()}; send text that UTF-8 can encode")
    return text


def decode_text(data: bytes, name: str) -> str:
    """The text of the input called `name`, or an InputError that names it and says what to do."""
    try:
        return decode_utf8(data)
    except NotTextError as exc:
        if exc.nul:
            raise InputError(f"{name} looks like a binary file (it contains NUL bytes); give a text file") from None
        raise InputError(f"{name} is not valid UTF-8 (bad byte at line {exc.line}); convert it to UTF-8 first") from None


def read_file(path: str, name: str | None = None, *, hint: str = "give a file", regular_only: bool = False,
              limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """The bytes of the file at `path` and its status (from the open file, so they describe what was read),
    or an InputError that names it (`name`, default the path) for every way that can fail. `regular_only`
    refuses pipes and devices; `limit` refuses a file larger than that many bytes."""
    name = name or path
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if regular_only and not stat.S_ISREG(info.st_mode):
                raise InputError(f"{name}: not a regular file")
            data = handle.read() if limit is None else handle.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a directory; {hint}") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
    if limit is not None and len(data) > limit:
        raise InputError(f"{name} is larger than {limit} bytes")
    return data, info


def read_text(path: str) -> str:
    """The text of a file, or of stdin for `-`, with one-line errors for every way that can fail."""
    if path == "-":
        try:
            data = sys.stdin.buffer.read()
        except (OSError, ValueError, AttributeError):
            raise InputError("cannot read standard input (it is closed)") from None
        return decode_text(data, "standard input")
    data, _ = read_file(path)
    return decode_text(data, path)


def in_place_target(path: str) -> tuple[Path, os.stat_result]:
    """The file an in-place edit of `path` replaces (a symlink's target) and its status; InputError when a
    replacement could not stand for it: not a regular file, read-only, hard-linked (a new file would split
    the links), or an owner or group this user cannot give the new file."""
    target = Path(os.path.realpath(path))
    try:
        info = target.stat()
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path} is not a regular file: --in-place edits regular files only")
    if not mode & 0o222 or not os.access(target, os.W_OK):
        raise InputError(f"{path} is read-only (mode {mode:04o}): make it writable to edit it in place, or use --diff")
    if info.st_nlink > 1:
        raise InputError(f"{path} has {info.st_nlink} hard links, which a replacement would split: "
                         "use --diff and apply the change to it yourself")
    me = os.geteuid()
    if me != 0 and (info.st_uid != me or info.st_gid not in (os.getegid(), *os.getgroups())):
        raise InputError(f"{path} belongs to uid {info.st_uid} group {info.st_gid}, which a replacement written "
                         f"by uid {me} could not keep: edit it as its owner, or use --diff")
    return target, info


def write_atomically(path: str, text: str) -> None:
    """Replace a file's content all at once: a temp file beside it, then a rename.

    The file replaced is the one the user means (a symlink's target; the link stays), and the new one keeps
    its owner, group and mode; `in_place_target` refuses what a replacement cannot stand for.
    """
    target, info = in_place_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".bigcode", dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(handle.fileno(), info.st_uid, info.st_gid)
            os.fchmod(handle.fileno(), stat.S_IMODE(info.st_mode))  # after chown, which clears set-id bits
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
