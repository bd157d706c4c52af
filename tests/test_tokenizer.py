import random
import subprocess
import sys

import pytest
from tokenizer_files import SANTACODER_SPECIALS, STARCODER_SPECIALS, save_tokenizer

from bigcode_cli.errors import TokenizerError
from bigcode_cli.text.tokenizer import FimTokens, StreamDecoder, Tokenizer

UNICODE_TEXT = "# naïve café 日本語のテキスト 中文注释 😀🎉🚀 ok\nprint('done') 👍🏽 ünïcödé\n"


@pytest.fixture(scope="module")
def starcoder_dir(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("starcoder"), STARCODER_SPECIALS, extra_tokens=["<file_sep>"])


@pytest.fixture(scope="module")
def starcoder(starcoder_dir):
    return Tokenizer.from_dir(starcoder_dir)


def test_starcoder_special_tokens(starcoder):
    assert starcoder.fim == FimTokens(prefix=1, middle=2, suffix=3, pad=4, spelling="starcoder")
    assert starcoder.require_fim() is starcoder.fim
    assert starcoder.eos_id == 0 and starcoder.bos_id == 0
    assert starcoder.pad_id == starcoder.eos_id  # no pad token configured
    file_sep = starcoder.token_to_id("<file_sep>")
    assert starcoder.stop_ids == frozenset({0, 1, 2, 3, 4, file_sep})
    assert starcoder.special_ids == frozenset({0, 1, 2, 3, 4, file_sep})
    assert starcoder.vocab_size == 361
    assert starcoder.id_to_token(1) == "<fim_prefix>"
    assert starcoder.token_to_id("<no such token>") is None


def test_santacoder_spelling(tmp_path):
    tokenizer = Tokenizer.from_dir(save_tokenizer(tmp_path, SANTACODER_SPECIALS))
    assert tokenizer.fim == FimTokens(prefix=1, middle=2, suffix=3, pad=4, spelling="santacoder")
    assert tokenizer.stop_ids == frozenset({0, 1, 2, 3, 4})


def test_without_fim_tokens(tmp_path):
    tokenizer = Tokenizer.from_dir(save_tokenizer(tmp_path / "plain", ["<|endoftext|>"]), name="tiny-plain")
    assert tokenizer.fim is None
    assert tokenizer.stop_ids == frozenset({0})
    with pytest.raises(TokenizerError, match=r"model tiny-plain has no fill-in-the-middle tokens; use `bigcode generate`"):
        tokenizer.require_fim()


def test_config_pad_and_dict_tokens(tmp_path):
    config = {"eos_token": {"content": "<|endoftext|>", "__type": "AddedToken"}, "pad_token": "<fim_pad>"}
    tokenizer = Tokenizer.from_dir(save_tokenizer(tmp_path, STARCODER_SPECIALS, config=config))
    assert tokenizer.eos_id == 0 and tokenizer.pad_id == 4 and tokenizer.bos_id is None


def test_special_token_text_is_encoded_as_plain_text(starcoder):
    text = "x = '<fim_prefix>' + '<|endoftext|>'<fim_middle><file_sep>\n"
    ids = starcoder.encode(text)
    assert not set(ids) & starcoder.special_ids
    assert starcoder.decode(ids) == text


def test_encode_adds_nothing_and_round_trips(starcoder):
    ids = starcoder.encode(UNICODE_TEXT)
    assert starcoder.decode(ids) == UNICODE_TEXT
    assert starcoder.encode("") == []


def test_decode_special_tokens(starcoder):
    ids = [1] + starcoder.encode("a = 1") + [3] + starcoder.encode("\n") + [2]
    assert starcoder.decode(ids) == "<fim_prefix>a = 1<fim_suffix>\n<fim_middle>"
    assert starcoder.decode(ids, skip_special_tokens=True) == "a = 1\n"


def stream(tokenizer, ids, **kwargs):
    decoder = tokenizer.stream_decoder(**kwargs)
    pieces = [decoder.push(i) for i in ids]
    return pieces, decoder.flush()


def test_stream_never_emits_partial_characters(starcoder):
    ids = starcoder.encode(UNICODE_TEXT * 3)
    # the tiny vocabulary splits multi-byte characters across tokens
    assert any("\ufffd" in starcoder.decode([i]) for i in ids)
    pieces, tail = stream(starcoder, ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) + tail == UNICODE_TEXT * 3
    assert tail == ""


def test_stream_matches_decode_on_random_ids(starcoder):
    rng = random.Random(0)
    for skip in (False, True):
        for _ in range(200):
            ids = [rng.randrange(starcoder.vocab_size) for _ in range(rng.randrange(1, 60))]
            pieces, tail = stream(starcoder, ids, skip_special_tokens=skip)
            assert "".join(pieces) + tail == starcoder.decode(ids, skip_special_tokens=skip)


def test_stream_with_special_tokens(starcoder):
    ids = starcoder.encode("def f():") + [0] + starcoder.encode("日本")
    pieces, tail = stream(starcoder, ids)
    assert "".join(pieces) + tail == "def f():<|endoftext|>日本"


def test_stream_decoding_is_incremental(starcoder):
    seen: list[int] = []

    def decode(ids):
        seen.append(len(ids))
        return starcoder.decode(ids)

    decoder = StreamDecoder(decode)
    ids = starcoder.encode(UNICODE_TEXT * 20)
    text = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert text == UNICODE_TEXT * 20
    assert len(ids) > 500 and max(seen) <= StreamDecoder.WINDOW + 8


def test_missing_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TokenizerError, match="has no tokenizer: .* neither tokenizer.json nor vocab.json"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(TokenizerError, match="not a directory"):
        Tokenizer.from_dir(tmp_path / "nope")


def test_corrupt_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read .*tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    save_tokenizer(tmp_path, STARCODER_SPECIALS)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="tokenizer_config.json is not a JSON object"):
        Tokenizer.from_dir(tmp_path)


def test_vocab_and_merges_fall_back_to_transformers(tmp_path, starcoder):
    legacy = Tokenizer.from_dir(save_tokenizer(tmp_path, STARCODER_SPECIALS, legacy=True))
    assert (tmp_path / "vocab.json").is_file() and not (tmp_path / "tokenizer.json").exists()
    assert legacy.fim == starcoder.fim
    assert legacy.eos_id == 0
    text = UNICODE_TEXT + "<fim_prefix>"
    assert legacy.encode(text) == starcoder.encode(text)
    assert not set(legacy.encode(text)) & legacy.special_ids


def test_tokenizer_json_path_does_not_import_transformers(starcoder_dir):
    code = (
        "import sys\n"
        "from bigcode_cli.text.tokenizer import Tokenizer\n"
        f"t = Tokenizer.from_dir({str(starcoder_dir)!r})\n"
        "t.decode(t.encode('x = 1'))\n"
        "assert t.fim is not None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_encode_and_decode_match_transformers(starcoder_dir, starcoder):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(starcoder_dir))
    text = UNICODE_TEXT + "def f(x):\n\treturn x  # <fim_prefix> <|endoftext|>\n"
    ids = starcoder.encode(text)
    assert ids == reference(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert starcoder.decode(ids + [0]) == reference.decode(ids + [0], skip_special_tokens=False)


def _byte_token_ids(tokenizer, values):
    """Ids of the byte-level tokens of raw bytes (GPT-2's byte-to-character table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [tokenizer.token_to_id(table[v]) for v in values]


def test_stream_releases_invalid_bytes_as_they_come(starcoder):
    """Bytes that can never form a character are released at once, not held until the end."""
    lone = _byte_token_ids(starcoder, [0x80])[0]  # a continuation byte with no lead byte
    assert starcoder.decode([lone]) == "\ufffd"
    seen: list[int] = []

    def decode(ids):
        seen.append(len(ids))
        return starcoder.decode(ids)

    decoder = StreamDecoder(decode)
    ids = [lone] * 200 + starcoder.encode("ok")
    pieces = [decoder.push(i) for i in ids]
    tail = decoder.flush()
    assert "".join(pieces) + tail == starcoder.decode(ids)
    assert pieces[1] == "\ufffd"  # the first one is released as soon as the next byte arrives
    assert max(seen) <= StreamDecoder.WINDOW + 1


def test_stream_holds_only_a_character_still_being_completed(starcoder):
    euro = _byte_token_ids(starcoder, [0x80, 0xE2, 0x82, 0xAC])  # a lone byte, then the three bytes of €
    decoder = starcoder.stream_decoder()
    assert [decoder.push(i) for i in euro] == ["", "\ufffd", "", "€"]
    assert decoder.flush() == ""


@pytest.mark.parametrize("text", ["\ud800", "x = 'caf\udce9'", "a\udfffb"])
def test_text_with_a_lone_surrogate_is_an_input_error(starcoder, text):
    # JSON can spell "\ud800" and Python reads argument bytes that are not UTF-8 as surrogates; the
    # tokenizers library raises a TypeError for them, so every caller would report an internal error
    from bigcode_cli.errors import InputError

    for encode in (starcoder.encode, starcoder.encode_with_special_tokens, starcoder.encode_with_offsets):
        with pytest.raises(InputError, match=r"not valid Unicode: a lone surrogate \(U\+D[89A-F][0-9A-F]{2}\)"):
            encode(text)
    assert starcoder.encode("caf\u00e9 \U0001f600") == starcoder.encode("café 😀")  # real non-ASCII text is fine


@pytest.mark.parametrize("text", ["", "\n", "  ", "def f(x):\n    return x\n", "caf\u00e9 \U0001f600 \u00a0\t\r\n",
                                  "<fim_prefix>x<|endoftext|>", "x = 1\n" * 400])
def test_encode_gives_the_ids_of_tokenizers_own_encode(starcoder, text):
    # encode takes tokenizers' encode_batch_fast (sooner, the GIL released): the ids must be those of the same
    # backend's plain encode, special spellings included (read as plain text, never as control tokens)
    backend = starcoder._backend
    assert starcoder.encode(text) == backend.encode(text, add_special_tokens=False).ids
    assert starcoder.encode(text) == starcoder.encode_with_offsets(text)[0]
    if "<fim_prefix>" in text:
        assert starcoder.fim.prefix not in starcoder.encode(text)


def test_a_long_text_is_tokenized_while_other_threads_run(starcoder, starcoder_dir):
    # a server tokenizes a multi-MB prompt on one thread while its event loop and its model's thread go on:
    # tokenizers' plain encode held the GIL, leaving them 6-10% of their pace for the second it took
    import threading
    import time

    def pace(seconds: float) -> float:
        """Loop turns per second of this thread, alone."""
        turns, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            turns += 1
        return turns / seconds

    text = "".join(f"entry_{i} = build({i}, 'long text')\n" for i in range(12000))  # not yet in any BPE cache
    alone = pace(0.3)
    done, ids, took = threading.Event(), [], []

    def tokenize() -> None:
        started = time.perf_counter()
        ids.append(starcoder.encode(text))
        took.append(time.perf_counter() - started)
        done.set()

    worker = threading.Thread(target=tokenize)
    worker.start()
    turns = 0
    while not done.is_set():
        turns += 1
    worker.join()
    import tokenizers

    plain = tokenizers.Tokenizer.from_file(str(starcoder_dir / "tokenizer.json"))
    assert ids[0] == plain.encode(text, add_special_tokens=False).ids  # the same ids as tokenizers' own encode
    assert turns / took[0] > 0.4 * alone, f"this thread ran at {turns / took[0] / alone:.0%} of its pace meanwhile"
