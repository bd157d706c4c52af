"""Collect source code found on this machine into the corpus for the bundled models.

Command (from the repository root)::

    /work/venv/bin/python scripts/bundled/corpus.py --fetch   # downloads + collects
    /work/venv/bin/python scripts/bundled/corpus.py           # collects from what is there

``--fetch`` downloads a few Debian source-carrying ``-dev`` packages (Go, Rust, Ruby, Java
sources) with ``apt-get download`` and a few npm packages with ``npm pack`` into
``data/downloads/`` (about 75 MB) and unpacks them; it is skipped for files already present.
Collecting then copies every accepted file into ``data/corpus/<lang>/<source>/<relpath>`` and
writes ``data/corpus/manifest.jsonl`` with one record per file::

    {"path": "python/stdlib/json/decoder.py", "lang": "python", "split": "train",
     "bytes": 12473, "origin": "/root/.pyenv/.../json/decoder.py"}

``path`` is relative to ``data/corpus``. The split is by file and deterministic: a file is held
out when ``sha1(path) % 10000 < 500`` (5 %). Files are de-duplicated by content (first path in
sorted order wins), so an identical copy can never sit on both sides of the split.

Accepted files: UTF-8, no NUL byte, 64 B .. 200 KB, longest line <= 1000 characters and mean
line length <= 100 (drops minified bundles and data tables). Each language is capped, and so is
each group inside it (a top-level Python package, a /usr/include subdirectory, an npm package),
so that one huge package cannot dominate; files are taken in hash order up to the cap, so the
choice does not depend on filesystem order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
DOWNLOADS = DATA / "downloads"
CORPUS = DATA / "corpus"

STDLIB = Path("/root/.pyenv/versions/3.11.7/lib/python3.11")
# The packages of the interpreter that runs this script (the project's virtualenv).
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])

DEB_PACKAGES = [
    # Go
    "golang-github-spf13-cobra-dev", "golang-github-stretchr-testify-dev",
    "golang-golang-x-net-dev", "golang-github-sirupsen-logrus-dev", "golang-gopkg-yaml.v3-dev",
    "golang-github-gorilla-mux-dev", "golang-github-google-go-cmp-dev",
    "golang-github-prometheus-client-golang-dev", "golang-github-urfave-cli-dev",
    "golang-golang-x-sys-dev", "golang-golang-x-tools-dev",
    # Rust
    "librust-serde-dev", "librust-regex-dev", "librust-regex-syntax-dev", "librust-tokio-dev",
    "librust-clap-dev", "librust-syn-dev", "librust-rand-dev", "librust-itertools-dev",
    "librust-anyhow-dev", "librust-serde-json-dev", "librust-hashbrown-dev", "librust-nom-dev",
    "librust-futures-util-dev",
    # Ruby standard library, Java class library sources (src.zip)
    "libruby3.1", "openjdk-17-source",
]
NPM_PACKAGES = [
    "lodash", "typescript", "express", "react", "react-dom", "vue", "axios", "moment", "chalk",
    "commander", "webpack", "eslint", "rxjs", "@angular/core", "three", "d3",
]

EXTENSIONS = {
    ".py": "python",
    ".c": "c", ".h": "c", ".cc": "c", ".cpp": "c", ".cxx": "c", ".hpp": "c", ".hh": "c",
    ".hxx": "c", ".tcc": "c",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".sh": "shell", ".bash": "shell",
    ".go": "go",
    ".rs": "rust",
    ".rb": "ruby",
    ".java": "java",
    ".pl": "perl", ".pm": "perl",
    ".sql": "sql",
}
SHEBANGS = {  # interpreter basename -> language, for extensionless scripts
    "sh": "shell", "bash": "shell", "dash": "shell", "perl": "perl", "ruby": "ruby",
}
# Bytes per language, and per group inside a language.
LANG_CAP = defaultdict(lambda: 12_000_000, {"python": 70_000_000})
GROUP_CAP = defaultdict(lambda: 2_000_000, {"python": 7_000_000})

MIN_BYTES, MAX_BYTES = 64, 200_000
HELDOUT_PER_10000 = 500


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def split_of(path: str) -> str:
    """Deterministic train/heldout split of a corpus-relative path."""
    h = int.from_bytes(hashlib.sha1(path.encode()).digest()[:8], "big")
    return "heldout" if h % 10000 < HELDOUT_PER_10000 else "train"


def fetch() -> None:
    """Download and unpack the Debian and npm packages into data/downloads/."""
    deb_dir, npm_dir, ext_dir = DOWNLOADS / "deb", DOWNLOADS / "npm", DOWNLOADS / "extracted"
    for d in (deb_dir, npm_dir, ext_dir):
        d.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_")[0] for p in deb_dir.glob("*.deb")}
    missing = [p for p in DEB_PACKAGES if p not in have]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=deb_dir, check=True)
    have_npm = {p.name for p in npm_dir.glob("*.tgz")}
    wanted = [p for p in NPM_PACKAGES
              if not any(n.startswith(p.lstrip("@").replace("/", "-") + "-") for n in have_npm)]
    if wanted:
        subprocess.run(["npm", "pack", "--silent", *wanted], cwd=npm_dir, check=True)
    for deb in sorted(deb_dir.glob("*.deb")):
        dest = ext_dir / "deb" / deb.name.split("_")[0]
        if not dest.exists():
            dest.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    for src_zip in sorted((ext_dir / "deb").glob("openjdk-*/usr/lib/jvm/*/lib/src.zip")):
        dest = ext_dir / "jdk-src"
        if not dest.exists():
            with zipfile.ZipFile(src_zip) as z:
                members = [m for m in z.namelist() if m.endswith(".java")]
                z.extractall(dest, members)
    for tgz in sorted(npm_dir.glob("*.tgz")):
        dest = ext_dir / "npm" / tgz.name[: -len(".tgz")]
        if not dest.exists():
            with tarfile.open(tgz) as t:
                t.extractall(dest, filter="data")


def shebang_lang(path: Path) -> str | None:
    """Language of an extensionless script from its #! line, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("latin-1").split()
    if not words:
        return None
    interp = os.path.basename(words[0])
    if interp == "env" and len(words) > 1:
        interp = os.path.basename(words[1])
    return SHEBANGS.get(interp)


def walk(root: Path, skip_dirs: set[str] = frozenset()):
    """Yield regular files under root in sorted order, pruning skip_dirs by name."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and d != "__pycache__")
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield p


def candidates():
    """Yield (lang, group, corpus_relpath, origin) for every candidate file on the machine."""
    # Python: stdlib (without its tests and site-packages) and the venv's packages.
    for p in walk(STDLIB, {"site-packages", "test", "tests", "idle_test"}):
        if p.suffix == ".py":
            rel = p.relative_to(STDLIB)
            group = rel.parts[0] if len(rel.parts) > 1 else "_top"
            yield "python", "stdlib/" + group, f"python/stdlib/{rel}", p
    for p in walk(SITE_PACKAGES, {"tests", "test", "testing"}):
        rel = p.relative_to(SITE_PACKAGES)
        if p.suffix == ".py" and not rel.parts[0].startswith(("_", "__editable")) \
                and ".dist-info" not in rel.parts[0]:
            yield "python", "site/" + rel.parts[0], f"python/site-packages/{rel}", p
    # C / C++ headers.
    for p in walk(Path("/usr/include")):
        lang = EXTENSIONS.get(p.suffix)
        if lang == "c":
            rel = p.relative_to("/usr/include")
            group = rel.parts[0] if len(rel.parts) > 1 else "_top"
            yield "c", "include/" + group, f"c/include/{rel}", p
    # Downloaded packages: every language by extension (Python excluded: it has its own sources).
    ext = DOWNLOADS / "extracted"
    for kind in ("deb", "npm"):
        base = ext / kind
        if not base.is_dir():
            continue
        for pkg in sorted(base.iterdir()):
            for p in walk(pkg, {"test", "tests", "testdata", "__tests__"}):
                lang = EXTENSIONS.get(p.suffix)
                if lang is None or lang == "python" or p.name.endswith((".min.js", ".d.ts.map")):
                    continue
                rel = p.relative_to(base)
                yield lang, f"{kind}/{pkg.name}", f"{lang}/{kind}/{rel}", p
    jdk = ext / "jdk-src"
    if jdk.is_dir():
        for p in walk(jdk):
            if p.suffix == ".java":
                rel = p.relative_to(jdk)
                group = "/".join(rel.parts[:2])
                yield "java", f"jdk/{group}", f"java/jdk/{rel}", p
    # System scripts: shell, Perl, Ruby, SQL by extension or #! line.
    system_roots = [Path("/usr/bin"), Path("/usr/sbin"), Path("/etc"), Path("/var/lib/dpkg/info"),
                    Path("/usr/share"), Path("/usr/lib")]
    skip = {"python3", "python3.11", "python2.7", "site-packages", "dist-packages", "jvm",
            "node_modules", "doc", "locale", "man", "i18n"}
    for root in system_roots:
        for p in walk(root, skip):
            lang = EXTENSIONS.get(p.suffix)
            if lang not in (None, "shell", "perl", "ruby", "sql"):
                continue
            if lang is None and (not p.suffix or root.name == "info"):
                lang = shebang_lang(p)
            if lang is None:
                continue
            rel = p.relative_to("/")
            group = "/".join(rel.parts[:3])
            yield lang, f"system/{group}", f"{lang}/system/{rel}", p


def accept(data: bytes) -> bool:
    """Whether file content looks like hand-written source text."""
    if not MIN_BYTES <= len(data) <= MAX_BYTES or b"\0" in data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    lines = text.splitlines() or [""]
    return max(map(len, lines)) <= 1000 and len(text) / len(lines) <= 100


def collect() -> None:
    """Select, copy and split the corpus; write the manifest."""
    by_group: dict[tuple[str, str], list[tuple[str, Path]]] = defaultdict(list)
    for lang, group, rel, origin in candidates():
        by_group[lang, group].append((rel, origin))
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir(parents=True)
    seen: set[bytes] = set()
    lang_bytes: dict[str, int] = defaultdict(int)
    records = []
    # Groups of one language are visited round-robin so the language cap is shared fairly.
    groups_by_lang: dict[str, list[list[tuple[str, Path]]]] = defaultdict(list)
    for (lang, _group), files in sorted(by_group.items()):
        files.sort(key=lambda rf: hashlib.sha1(rf[0].encode()).digest())
        groups_by_lang[lang].append(files)
    for lang, groups in sorted(groups_by_lang.items()):
        group_bytes = [0] * len(groups)
        cursors = [0] * len(groups)
        active = list(range(len(groups)))
        while active and lang_bytes[lang] < LANG_CAP[lang]:
            still = []
            for gi in active:
                files = groups[gi]
                if cursors[gi] >= len(files) or group_bytes[gi] >= GROUP_CAP[lang]:
                    continue
                rel, origin = files[cursors[gi]]
                cursors[gi] += 1
                still.append(gi)
                try:
                    data = origin.read_bytes()
                except OSError:
                    continue
                digest = hashlib.sha1(data).digest()
                if digest in seen or not accept(data):
                    continue
                seen.add(digest)
                dest = CORPUS / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                group_bytes[gi] += len(data)
                lang_bytes[lang] += len(data)
                records.append({"path": rel, "lang": lang, "split": split_of(rel),
                                "bytes": len(data), "origin": str(origin)})
                if lang_bytes[lang] >= LANG_CAP[lang]:
                    break
            active = still
    records.sort(key=lambda r: r["path"])
    with open(CORPUS / "manifest.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    summary: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        summary[r["lang"]][r["split"] + "_files"] += 1
        summary[r["lang"]][r["split"] + "_bytes"] += r["bytes"]
    log(f"{'lang':12} {'train files':>11} {'train MB':>9} {'heldout files':>13} {'heldout MB':>10}")
    for lang, s in sorted(summary.items()):
        log(f"{lang:12} {s['train_files']:11} {s['train_bytes'] / 1e6:9.2f} "
            f"{s['heldout_files']:13} {s['heldout_bytes'] / 1e6:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fetch", action="store_true", help="download and unpack packages first")
    args = parser.parse_args()
    if args.fetch:
        fetch()
    collect()


if __name__ == "__main__":
    main()
