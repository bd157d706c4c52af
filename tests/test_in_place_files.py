"""`complete --in-place` edits the file the user means, or refuses in one line and leaves every file as it was.

The replacement is written beside the real file and renamed over it (atomic), so it must be able to stand
for that file: a symlink's target is what gets edited (the link stays), owner, group and mode are kept, and
a read-only or hard-linked file is refused before the model is loaded.
"""

from __future__ import annotations

import os
import stat

import pytest
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.cli.app import run

SOURCE = "def add(a, b):\n    <FILL>\n\nprint(add(1, 2))\n"
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "ckpt")


def _in_place(capsys, path, lm) -> tuple[int, str, str]:
    code = run(["complete", str(path), "-m", str(lm), "-t", "0", "--max-new-tokens", "4", "--in-place"])
    out, err = capsys.readouterr()
    return code, out, err


def _edited(text: str) -> bool:
    prefix, suffix = SOURCE.split("<FILL>")
    return "<FILL>" not in text and text.startswith(prefix) and text.endswith(suffix)


def test_a_symlink_edits_its_target_and_stays_a_link(capsys, lm, tmp_path):
    real = tmp_path / "src" / "add.py"
    real.parent.mkdir()
    real.write_text(SOURCE)
    link = tmp_path / "add.py"
    link.symlink_to(os.path.join("src", "add.py"))  # relative, as most links are
    code, _, err = _in_place(capsys, link, lm)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == os.path.join("src", "add.py")
    assert _edited(real.read_text())
    assert sorted(p.name for p in real.parent.iterdir()) == ["add.py"]  # no temporary file left


def test_the_mode_is_kept(capsys, lm, tmp_path):
    path = tmp_path / "add.py"
    path.write_text(SOURCE)
    path.chmod(0o751)
    code, _, err = _in_place(capsys, path, lm)
    assert code == 0, err
    assert _edited(path.read_text()) and stat.S_IMODE(path.stat().st_mode) == 0o751


@needs_root
def test_the_owner_and_group_are_kept(capsys, lm, tmp_path):
    path = tmp_path / "add.py"
    path.write_text(SOURCE)
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o640)
    code, _, err = _in_place(capsys, path, lm)
    assert code == 0, err
    info = path.stat()
    assert _edited(path.read_text())
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o640)


def test_a_read_only_file_is_refused_in_one_line(capsys, tmp_path):
    path = tmp_path / "add.py"
    path.write_text(SOURCE)
    path.chmod(0o444)
    before = path.stat()
    code, out, err = _in_place(capsys, path, "no-such-model")  # refused before any model is looked for
    assert (code, out) == (1, "")
    assert err == f"error: {path} is read-only (mode 0444): make it writable to edit it in place, or use --diff\n"
    after = path.stat()
    assert path.read_text() == SOURCE and after.st_ino == before.st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["add.py"]


def test_a_hard_linked_file_is_refused_rather_than_split(capsys, tmp_path):
    path = tmp_path / "add.py"
    path.write_text(SOURCE)
    other = tmp_path / "same.py"
    os.link(path, other)
    code, out, err = _in_place(capsys, path, "no-such-model")
    assert (code, out) == (1, "")
    assert err == (f"error: {path} has 2 hard links, which a replacement would split: use --diff and apply the "
                   "change to it yourself\n")
    assert path.read_text() == other.read_text() == SOURCE
    assert path.stat().st_ino == other.stat().st_ino and path.stat().st_nlink == 2


def test_a_symlink_to_a_read_only_file_is_refused(capsys, tmp_path):
    real = tmp_path / "real.py"
    real.write_text(SOURCE)
    real.chmod(0o444)
    link = tmp_path / "link.py"
    link.symlink_to(real)
    code, _, err = _in_place(capsys, link, "no-such-model")
    assert code == 1 and err.startswith(f"error: {link} is read-only (mode 0444)")
    assert link.is_symlink() and real.read_text() == SOURCE
