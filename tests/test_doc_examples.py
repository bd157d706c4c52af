"""The machinery that runs the documents' console examples (doc_examples.py): parsing, masking, comparing,
marking blocks not run, and regenerating. The examples themselves run as README.md and docs/*.md tests."""

from __future__ import annotations

import doc_examples as docs
import pytest

DOCUMENT = """# A document

<!-- not run: needs the network -->
```sh
curl https://example.com
```

```console
$ printf 'a\\nb\\n'
a
b

$ printf '%s' 'no newline at the end'
no newline at the end
$ printf '{"load_s": 1.5, "score": 0.25}\\n'; exit 3
{"load_s": 0.2, "score": 0.25}
[exit 3]
$ printf 'x\\n' \\
    | tr x y
y
```

```bash
echo unmarked
```
"""


@pytest.fixture(scope="module")
def runner():
    made = docs.Runner()
    yield made
    made.close()


def test_blocks_are_found_with_their_markers():
    found = docs.blocks(DOCUMENT)
    assert [(b.language, b.not_run, b.line) for b in found] == [("sh", "needs the network", 4), ("console", None, 8),
                                                                ("bash", None, 23)]


def test_examples_are_split_at_each_command_with_continued_lines_and_exit_codes():
    block = docs.blocks(DOCUMENT)[1]
    found = docs.examples(DOCUMENT, block)
    assert [(e.command, e.output, e.exit_code, e.line) for e in found] == [
        ("printf 'a\\nb\\n'", "a\nb\n", 0, 9),
        ("printf '%s' 'no newline at the end'", "no newline at the end\n", 0, 13),
        ("printf '{\"load_s\": 1.5, \"score\": 0.25}\\n'; exit 3", '{"load_s": 0.2, "score": 0.25}\n', 3, 15),
        ("printf 'x\\n' \\\n    | tr x y", "y\n", 0, 18),
    ]


def test_an_example_passes_when_only_masked_fields_differ_and_fails_otherwise(runner):
    found = docs.examples(DOCUMENT, docs.blocks(DOCUMENT)[1])
    for example in found:
        assert docs.difference(example, *runner.run(example.command)) is None, example.command
    wrong = found[0]
    wrong.output = "a\nc\n"
    message = docs.difference(wrong, *runner.run(wrong.command))
    assert message is not None and "-c" in message and "+b" in message and "python tests/doc_examples.py" in message
    exit_wrong = found[2]
    exit_wrong.exit_code = 0
    assert docs.difference(exit_wrong, *runner.run(exit_wrong.command)) is not None


def test_examples_run_offline_in_a_fresh_home_from_the_repository_root(runner):
    output, code = runner.run('echo "$BIGCODE_HOME" "$HF_HUB_OFFLINE"; ls; ls "$BIGCODE_HOME" | wc -l')
    home, offline = output.splitlines()[0].split()
    assert code == 0 and offline == "1" and home.startswith(str(runner.root))
    assert "README.md" in output.splitlines() and output.splitlines()[-1] == "0"


def test_paths_timings_and_last_digits_are_masked_but_nothing_else():
    assert docs.masked('{"decode_s": 0.7646, "new_tokens": 6} in /tmp/x/models and /root/.cache/hf in 3.8s') == \
        '{"decode_s": <n>, "new_tokens": 6} in <path> and <path> in <n>s'
    assert docs.same('"score": 0.763043, "p": 3.1e-05', '"score": 0.763042, "p": 3.2e-05')
    assert not docs.same('"score": 0.763043', '"score": 0.7631')  # another dtype moves scores by far more
    assert not docs.same('"new_tokens": 6', '"new_tokens": 7')  # counts are exact


def test_sybil_regions_skip_marked_blocks_and_fail_unmarked_ones():
    from sybil import Document

    regions = list(docs.parse(Document(DOCUMENT, "doc.md")))
    assert len(regions) == 6
    with pytest.raises(pytest.skip.Exception, match="not run, doc.md line 4: needs the network"):
        regions[0].evaluator(type("E", (), {"parsed": regions[0].parsed})())
    assert "```bash block is neither a console example" in regions[-1].evaluator(
        type("E", (), {"parsed": regions[-1].parsed})())


def test_regenerating_writes_what_each_example_prints(tmp_path, runner):
    path = tmp_path / "doc.md"
    path.write_text(DOCUMENT.replace("a\nb\n\n$", "stale\n\n$"), encoding="utf-8")
    assert docs.regenerate(path, runner)
    assert path.read_text(encoding="utf-8") == DOCUMENT.replace('{"load_s": 0.2', '{"load_s": 1.5')
    assert not docs.regenerate(path, runner)
