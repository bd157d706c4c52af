import pytest
from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

from bigcode_cli.errors import InputError, TokenizerError
from bigcode_cli.generation.completion import build_prompt
from bigcode_cli.generation.fim import (
    FIM_OVERHEAD,
    Cursor,
    Fitted,
    clean_completion,
    fim_prompt_ids,
    fit_fim,
    fit_left,
    parse_at,
    splice,
    split_source,
)
from bigcode_cli.text.tokenizer import Tokenizer

SOURCE = "import os\n\ndef main():\n    print('hi')\n"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer.from_dir(save_tokenizer(tmp_path_factory.mktemp("tok"), STARCODER_SPECIALS))


# -- cursor -------------------------------------------------------------------------------------


def test_fill_marker():
    assert split_source("a = <FILL>\nb = 2\n") == Cursor("a = ", "\nb = 2\n", "fim")


def test_no_cursor_continues_at_end():
    assert split_source(SOURCE) == Cursor(SOURCE, "", "continue")
    assert split_source("") == Cursor("", "", "continue")


def test_two_markers_name_their_lines():
    with pytest.raises(InputError, match=r"found 2 <FILL> markers \(lines 2, 4\); keep exactly one"):
        split_source("a\n<FILL>\nb\nc = <FILL>\n")


def test_marker_and_at_conflict():
    with pytest.raises(InputError, match="has a <FILL> marker and --at was given"):
        split_source("x = <FILL>\n", (1, 1))


@pytest.mark.parametrize("at, prefix", [
    ((1, 1), ""),
    ((1, 8), "import "),
    ((1, 10), "import os"),  # one past the end of the line
    ((3, 5), "import os\n\ndef "),
    ((2, 1), "import os\n"),
    ((5, 1), SOURCE),  # after the trailing newline
])
def test_at_positions(at, prefix):
    assert split_source(SOURCE, at) == Cursor(prefix, SOURCE[len(prefix):], "fim")


def test_at_counts_characters_not_bytes():
    assert split_source("s = '日本語'\n", (1, 8)) == Cursor("s = '日本", "語'\n", "fim")


def test_at_with_crlf_line_endings():
    assert split_source("ab\r\ncd\r\n", (1, 3)) == Cursor("ab", "\r\ncd\r\n", "fim")
    with pytest.raises(InputError, match="past the end of line 1, which has 2 characters"):
        split_source("ab\r\ncd\r\n", (1, 4))


def test_at_outside_the_file():
    with pytest.raises(InputError, match=r"--at 9:1 is outside the file: it has 4 lines"):
        split_source(SOURCE, (9, 1))
    with pytest.raises(InputError, match="it has 0 lines"):
        split_source("", (2, 1))
    with pytest.raises(InputError, match=r"--at 1:11 is past the end of line 1, which has 9 characters \(columns 1 to 10\)"):
        split_source(SOURCE, (1, 11))


def test_parse_at():
    assert parse_at("12:5") == (12, 5)
    assert parse_at(" 3 : 1 ") == (3, 1)
    for bad in ("12", "a:b", "1:2:3", "-1:2", "1.5:2", ""):
        with pytest.raises(InputError, match="--at expects LINE:COL"):
            parse_at(bad)
    with pytest.raises(InputError, match="start at 1"):
        parse_at("0:3")


# -- prompt -------------------------------------------------------------------------------------


def test_psm_and_spm_prompts(tokenizer):
    p, s = tokenizer.encode("def f(x):\n    return "), tokenizer.encode("\n\nprint(f(2))\n")
    prefix, middle, suffix = 1, 2, 3
    assert fim_prompt_ids(tokenizer, "def f(x):\n    return ", "\n\nprint(f(2))\n") == [prefix, *p, suffix, *s, middle]
    assert fim_prompt_ids(tokenizer, "def f(x):\n    return ", "\n\nprint(f(2))\n", order="spm") == [
        prefix, suffix, *s, middle, *p]


def test_prompt_text_cannot_inject_sentinels(tokenizer):
    ids = fim_prompt_ids(tokenizer, "a = '<fim_middle>'", "<fim_suffix><|endoftext|>")
    assert [i for i in ids if i in tokenizer.special_ids] == [1, 3, 2]
    assert tokenizer.decode(ids) == "<fim_prefix>a = '<fim_middle>'<fim_suffix><fim_suffix><|endoftext|><fim_middle>"


def test_prompt_needs_fim_tokens_and_known_order(tokenizer, tmp_path):
    plain = Tokenizer.from_dir(save_tokenizer(tmp_path, ["<|endoftext|>"]), name="plain")
    with pytest.raises(TokenizerError, match="model plain has no fill-in-the-middle tokens"):
        fim_prompt_ids(plain, "a", "b")
    with pytest.raises(InputError, match="unknown FIM order 'mps'"):
        fim_prompt_ids(tokenizer, "a", "b", order="mps")


# -- fitting ------------------------------------------------------------------------------------


def numbered(n, start=0):
    return "".join(f"value_{i} = compute({i}, 'text')\n" for i in range(start, start + n))


def test_fit_fim_keeps_what_fits(tokenizer):
    a, b = tokenizer.encode("a = 1\n"), tokenizer.encode("b = 2\n")
    assert fit_fim(tokenizer, "a = 1\n", "b = 2\n", 100) == Fitted("a = 1\n", "b = 2\n", False, a, b)


class CountingTokenizer:
    """A tokenizer that counts its encode calls and the characters they were given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.encodes, self.encoded_chars = tokenizer, 0, 0

    def encode(self, text):
        self.encodes += 1
        self.encoded_chars += len(text)
        return self.tokenizer.encode(text)

    def require_fim(self):
        return self.tokenizer.require_fim()


@pytest.mark.parametrize("budget", [10_000, 200])
def test_a_fim_prompt_has_the_ids_of_its_kept_text_and_a_window_that_fits_is_tokenized_once(tokenizer, budget):
    prefix, suffix = numbered(60) + "    x = ", "\n" + numbered(60, 100)
    counting = CountingTokenizer(tokenizer)
    prompt = build_prompt(counting, prefix, suffix, "fim", context=budget + 16 + FIM_OVERHEAD, max_new_tokens=16,
                          order="spm")
    assert prompt.ids == fim_prompt_ids(tokenizer, prompt.prefix, prompt.suffix, "spm")
    assert prompt.truncated == (budget == 200)
    if not prompt.truncated:  # counted and put in the prompt from one tokenization of each side
        assert (counting.encodes, counting.encoded_chars) == (2, len(prefix) + len(suffix))


def test_fit_fim_cuts_whole_lines_far_from_cursor(tokenizer):
    prefix, suffix = numbered(60) + "    x = ", "\n" + numbered(60, 100)
    count = lambda t: len(tokenizer.encode(t))  # noqa: E731
    budget = 200
    fitted = fit_fim(tokenizer, prefix, suffix, budget)
    assert fitted.truncated
    assert prefix.endswith(fitted.prefix) and suffix.startswith(fitted.suffix)
    assert fitted.prefix.startswith("value_") and fitted.prefix.endswith("    x = ")
    assert fitted.suffix.endswith("\n")
    used_p, used_s = count(fitted.prefix), count(fitted.suffix)
    assert used_p + used_s <= budget
    line = count(numbered(1, 30))
    assert budget * 3 // 4 - line < used_p <= budget * 3 // 4
    assert budget - used_p - line < used_s  # no whole extra suffix line would have fit


def test_fit_fim_gives_unused_share_to_the_other_side(tokenizer):
    prefix = numbered(80)
    line = len(tokenizer.encode(numbered(1, 50)))
    fitted = fit_fim(tokenizer, prefix, "\n", 150)
    assert 150 - 1 - line < len(tokenizer.encode(fitted.prefix)) <= 149 and fitted.suffix == "\n"
    # the prefix was cut again for the share the suffix left: the ids are those of the text finally kept
    assert (fitted.prefix_ids, fitted.suffix_ids) == (tokenizer.encode(fitted.prefix), tokenizer.encode("\n"))
    fitted = fit_fim(tokenizer, "x = ", numbered(80), 150)
    assert fitted.prefix == "x = " and 150 - 2 - line < len(tokenizer.encode(fitted.suffix)) <= 148


def test_fit_fim_cuts_inside_the_cursor_line_only_when_it_must(tokenizer):
    prefix = "a = 1\n" + "z = " + " + ".join(f"v{i}" for i in range(200))
    fitted = fit_fim(tokenizer, prefix, "", 40)
    assert prefix.endswith(fitted.prefix) and "\n" not in fitted.prefix
    assert 35 <= len(tokenizer.encode(fitted.prefix)) <= 40
    assert fit_fim(tokenizer, prefix, "tail\n", 0) == Fitted("", "", True, [], [])


def test_fit_left():
    assert fit_left([1, 2, 3], 5) == ([1, 2, 3], False)
    assert fit_left([1, 2, 3, 4], 2) == ([3, 4], True)
    assert fit_left([1, 2], 0) == ([], True)


# -- cleaning -----------------------------------------------------------------------------------


def test_clean_drops_a_tail_that_repeats_the_suffix():
    prefix, suffix = "def f(x):\n", "    return y\n\nprint(f(1))\n"
    completion = "    y = x * 2\n    return y\n\nprint(f"
    assert clean_completion(completion, suffix, prefix=prefix, block=False) == "    y = x * 2\n"


def test_clean_repeat_needs_the_whole_tail():
    # the inner "}" is code; only the final "}" repeats the suffix (which keeps its own line)
    completion = "  if (a) {\n    b();\n  }\n  return c;\n}"
    out = clean_completion(completion, "}\n", prefix="function f() {\n", block=False)
    assert out == "  if (a) {\n    b();\n  }\n  return c;\n"


def test_clean_repeat_of_the_whole_completion_leaves_nothing():
    assert clean_completion("    return y\n", "    return y\n", prefix="def f():\n") == ""


def test_clean_keeps_code_that_only_looks_like_the_suffix_start():
    assert clean_completion("return y + 1", "return y\n", prefix="x = 1\n", block=False) == "return y + 1"


def test_block_stops_at_dedent():
    prefix = "def f(x):\n    "
    completion = "y = x + 1\n    return y\n\n\ndef g():\n    pass\n"
    assert clean_completion(completion, "\n", prefix=prefix) == "y = x + 1\n    return y"


def test_block_opened_by_the_cursor_line_ends_at_its_level():
    prefix = "def f(x):"
    completion = "\n    if x:\n        return 1\n    return 2\n\ndef g():\n    pass"
    assert clean_completion(completion, "\n", prefix=prefix) == "\n    if x:\n        return 1\n    return 2"
    prefix = "def f(x):\n    if x:"
    assert clean_completion("\n        return 1\n    return 2\n", "\n", prefix=prefix) == "\n        return 1"


def test_block_keeps_closers_and_continuations():
    prefix = "    if (a) {"
    completion = "\n        b();\n    } else {\n        c();\n    }\n    d();\n"
    assert clean_completion(completion, "\n", prefix=prefix) == "\n        b();\n    } else {\n        c();\n    }"
    prefix = "try:"
    completion = "\n    run()\nexcept ValueError:\n    pass\nendpoint = 1\n"
    assert clean_completion(completion, "\n", prefix=prefix) == "\n    run()\nexcept ValueError:\n    pass"


def test_block_off_keeps_everything():
    completion = "y = 1\n\ndef g():\n    pass\n"
    assert clean_completion(completion, "", prefix="def f():\n    ", block=False) == completion


def test_completion_that_ends_inside_the_block_is_untouched():
    assert clean_completion("return x\n", "\n", prefix="def f(x):\n    ") == "return x\n"


def test_mid_line_keeps_first_line_and_drops_duplicated_line_end():
    prefix, suffix = "print(", ")\nx = 1\n"
    assert clean_completion("'hi')\nx = 1\n", suffix, prefix=prefix) == "'hi'"
    # the model relied on the suffix to close the call: nothing to drop
    assert clean_completion("f(x)", suffix, prefix="g(") == "f(x)"
    assert clean_completion("a, b\nmore\n", suffix, prefix=prefix) == "a, b"
    assert clean_completion("a)\nmore\n", suffix, prefix=prefix, block=False) == "a\nmore\n"


def test_lines_limit():
    completion = "a = 1\nb = 2\nc = 3\n"
    assert clean_completion(completion, "", prefix="", lines=1, block=False) == "a = 1"
    assert clean_completion(completion, "", prefix="", lines=2, block=False) == "a = 1\nb = 2"
    assert clean_completion(completion, "", prefix="", lines=5, block=False) == completion
    # an empty first line (the cursor was at the end of a line) does not count
    assert clean_completion("\n    return 1\n    pass\n", "\n", prefix="def f():", lines=1) == "\n    return 1"
    with pytest.raises(InputError, match="--lines must be at least 1"):
        clean_completion("a", "", lines=0)


def test_cut_before_code_on_the_cursor_line_restores_its_line():
    # cursor in the indentation before `return y`: inserted whole lines, the code keeps its own line
    prefix, suffix = "def f(x):\n    ", "return y\n"
    assert clean_completion("y = x\n    return y\n", suffix, prefix=prefix) == "y = x\n    "
    assert clean_completion("y = x\nz = 1\n", suffix, prefix=prefix, lines=1) == "y = x\n    "


def test_fit_fim_cuts_a_long_first_suffix_line(tokenizer):
    suffix = " + ".join(f"v{i}" for i in range(200)) + "\nnext = 1\n"
    fitted = fit_fim(tokenizer, "x = ", suffix, 40)
    assert fitted.prefix == "x = " and suffix.startswith(fitted.suffix) and "\n" not in fitted.suffix
    assert 30 <= len(tokenizer.encode(fitted.suffix)) <= 40 - len(tokenizer.encode("x = "))


def test_min_indent_ends_the_completion_before_a_shallower_line():
    completion = "x = 1\n    y = 2\n\n  z = 3\n    w = 4\n"
    # the first line is never judged; the blank line is not "shallower"; "  z" (2 < 4) ends it
    assert clean_completion(completion, "", block=False, min_indent=4) == "x = 1\n    y = 2"
    assert clean_completion(completion, "", block=False, min_indent=2) == completion
    assert clean_completion("a\n\tb\n", "", block=False, min_indent=1) == "a\n\tb\n"  # a tab counts one
    # a last line without its newline is still being written: not judged yet
    assert clean_completion("a\n    b\nc", "", block=False, min_indent=4) == "a\n    b\nc"


FIB = 'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    <FILL>\n\n\ndef main() -> None:\n'


def test_splice_a_completion_of_its_own_lines_leaves_no_blank_or_space_only_line():
    prefix, suffix = FIB.split("<FILL>")
    joined = "".join(splice(prefix, "\n    return __name__\n", suffix))
    assert joined == 'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    return __name__\n' \
                     '\n\ndef main() -> None:\n'


@pytest.mark.parametrize("prefix, completion, suffix", [
    ("def f():\n    ", "return 1", "\n"),  # on the cursor line: as it is
    ("    x = ", "\n1\n", "\n"),  # code before the cursor
    ("def f():\n    ", "\n    y = 2\n", "return y\n"),  # code after the cursor keeps its indentation
])
def test_splice_leaves_other_joins_alone(prefix, completion, suffix):
    assert splice(prefix, completion, suffix) == (prefix, completion, suffix)


def test_splice_in_a_crlf_file_inserts_crlf_lines():
    from bigcode_cli.generation.fim import splice_in_file_endings

    prefix, suffix = FIB.replace("\n", "\r\n").split("<FILL>")
    joined = "".join(splice_in_file_endings(prefix, "\n    return __name__\n", suffix))
    assert joined == "".join(splice(*FIB.split("<FILL>")[:1], "\n    return __name__\n", FIB.split("<FILL>")[1])).replace(
        "\n", "\r\n")
    assert "".join(splice_in_file_endings("a = 1\r\nb = ", "2\r\nc = 3", "\r\n")) == "a = 1\r\nb = 2\r\nc = 3\r\n"
    # a completion cut after a \r (a stop string at \n), and a cursor between a line's \r and \n
    assert "".join(splice_in_file_endings("x = 1\r\nb = ", "1\r", "\r\nz = 3\r\n")) == "x = 1\r\nb = 1\r\nz = 3\r\n"
    assert "".join(splice_in_file_endings("a = 1\r", "  # one\nb = 2", "\nc = 3\r\n")) == "a = 1  # one\r\nb = 2\r\nc = 3\r\n"
    # a file of LF lines, or of mixed ones, is joined as it is
    assert splice_in_file_endings("a\n", "b\n", "c\r\n") == splice("a\n", "b\n", "c\r\n")
    assert splice_in_file_endings(*FIB.split("<FILL>")[:1], "x\n", FIB.split("<FILL>")[1]) == splice(
        *FIB.split("<FILL>")[:1], "x\n", FIB.split("<FILL>")[1])


def test_splice_at_the_end_of_the_file_keeps_the_final_newline():
    assert splice("def f():\n    ", "\n    return 1\n", "") == ("def f():\n", "    return 1\n", "")


def test_fitting_a_long_text_takes_memory_linear_in_its_length(tokenizer):
    # a 4 MB prompt for an 8192-token context is cut to ~0.25M characters a side before fitting; every tail of
    # that, made at once to be searched, was half a GB (each fitting request, on a server's preparing threads)
    import tracemalloc

    prefix = numbered(4000) + "    x = "
    suffix = "\n" + numbered(4000, 5000)
    budget = len(tokenizer.encode(prefix)) // 3
    tracemalloc.start()
    try:
        fitted = fit_fim(tokenizer, prefix, suffix, budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fitted.truncated and prefix.endswith(fitted.prefix) and suffix.startswith(fitted.suffix)
    assert peak < 40 * (len(prefix) + len(suffix)), f"{peak / 1e6:.0f} MB to fit {len(prefix) + len(suffix)} characters"
