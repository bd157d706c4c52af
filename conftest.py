"""The documents' console examples as tests (README.md, docs/*.md): see tests/doc_examples.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))

from sybil import Sybil  # noqa: E402

import doc_examples  # noqa: E402

pytest_collect_file = Sybil(parsers=[doc_examples.parse], patterns=["README.md", "docs/*.md"]).pytest()


def pytest_sessionfinish(session, exitstatus):
    doc_examples.close_runner()
