import json

import pytest
from conftest import data_path

from smelt.cli import main as cli_main
from smelt.textio import is_val
from smelt.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerError

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def f(x):\n    return x * 2\n\n\tindented with a tab\r\nwindows line",
    "Numbers 12345 and 3.14159, emails a@b.c, URLs https://example.com/path?q=1",
    "日本語のテキストと中文文本，还有한국어 텍스트. Émojis 🙂🚀👩‍👩‍👧 and café, naïve, e\u0301.",
    "   leading spaces and trailing   ",
] * 20

TRICKY = [
    "",
    " ",
    "  leading spaces",
    "trailing spaces   ",
    "\r\n\r\n mixed\r\nnewlines\n\r",
    "\ttabs\t\tand\u00a0nbsp\u2028line-sep\u0085nel",
    "emoji 🙂 family 👩‍👩‍👧 flag 🇯🇵 skin 👍🏽",
    "CJK 漢字 かな カナ 한글",
    "combining e\u0301 a\u0300\u0301\u0302 zalgo Z\u0351\u0352\u0353",
    "NUL \x00 and other controls \x01\x7f\x1b[0m",
    "<|bos|> <|end|><|assistant|> not specials",
    "RTL עברית العربية",
    "\U0010ffff private \ue000 use",
    "x" * 500,
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(CORPUS, vocab_size=400, min_frequency=2)


def test_specials_have_fixed_ids(tok):
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_id(s) == i
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
    assert tok.vocab_size == 400
    with pytest.raises(TokenizerError, match="not a special token"):
        tok.token_id("<|nope|>")


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky_unicode(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text, bos=True, eos=True), skip_special=True) == text


def test_token_bytes_add_up(tok):
    tb = tok.token_bytes()
    assert len(tb) == tok.vocab_size and not tb[:len(SPECIAL_TOKENS)].any() and (tb[len(SPECIAL_TOKENS):] > 0).all()
    for text in TRICKY:
        assert sum(tb[i] for i in tok.encode(text, bos=True, eos=True)) == len(text.encode("utf-8"))


def test_special_strings_in_text_are_plain_text(tok):
    ids = tok.encode("<|bos|>hello<|eos|><|end|>")
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))
    assert tok.encode("hi", bos=True, eos=True) == [0, *tok.encode("hi"), 1]


def test_encode_batch_matches_encode(tok):
    assert tok.encode_batch(TRICKY, bos=True) == [tok.encode(t, bos=True) for t in TRICKY]


def test_save_load_identical(tok, tmp_path):
    tok.save(tmp_path / "t")
    tok2 = Tokenizer.load(tmp_path / "t")
    assert Tokenizer.load(tmp_path / "t" / "tokenizer.json").fingerprint == tok.fingerprint
    assert tok2.fingerprint == tok.fingerprint and len(tok.fingerprint) == 16
    assert tok2.vocab_size == tok.vocab_size
    for text in TRICKY + CORPUS[:5]:
        assert tok2.encode(text) == tok.encode(text)
    meta = json.loads((tmp_path / "t" / "smelt_tokenizer.json").read_text())
    assert meta["special_tokens"] == SPECIAL_TOKENS and meta["fingerprint"] == tok.fingerprint


def test_load_errors_name_the_folder(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match=r"empty.*no tokenizer.json"):
        Tokenizer.load(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"bad.*corrupt"):
        Tokenizer.load(tmp_path / "bad")


def test_vocab_too_small():
    with pytest.raises(TokenizerError, match="vocab_size"):
        Tokenizer.train(["abc"], vocab_size=100)


def test_chat_layout_and_mask_pinned(tok):
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello!"}]
    ids, mask = tok.render_chat(msgs)
    S, U, A, E = (tok.token_id(s) for s in ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])
    sys_, usr, asst = tok.encode("Be brief."), tok.encode("Hi?"), tok.encode("Hello!")
    assert ids == [0, S, *sys_, E, U, *usr, E, A, *asst, E]
    assert mask == [0, 0, *[0] * len(sys_), 0, 0, *[0] * len(usr), 0, 0, *[1] * len(asst), 1]
    ids2, mask2 = tok.render_chat(msgs[:2], add_generation_prompt=True)
    assert ids2 == [0, S, *sys_, E, U, *usr, E, A] and mask2 == [0] * len(ids2)
    assert len(ids) == len(mask)
    # The masked tokens decode to exactly the reply plus its end marker.
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Hello!<|end|>"


def test_chat_bad_role_and_content(tok):
    with pytest.raises(TokenizerError, match=r"messages\[1\]\.role"):
        tok.render_chat([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    with pytest.raises(TokenizerError, match=r"messages\[0\]\.content"):
        tok.render_chat([{"role": "user", "content": None}])


def test_train_tinyshakespeare_compresses(tmp_path):
    text = data_path("pretrain/tinyshakespeare/input.txt").read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    train = [d for d in docs if not is_val(d.encode(), 0.1)]
    val = "\n\n".join(d for d in docs if is_val(d.encode(), 0.1))
    tok = Tokenizer.train(train, vocab_size=1024)
    assert tok.bytes_per_token(val) > 2.0
    assert tok.decode(tok.encode(val)) == val


def test_cli_train_on_dataset_name(tmp_path, capsys):
    data_path("pretrain/tinyshakespeare/input.txt")
    assert cli_main(["tokenizer", "train", "--input", "tinyshakespeare", "--vocab-size", "1024",
                     "--out", str(tmp_path / "tok")]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("held-out")][0]
    assert float(line.split(": ")[-1].split()[0]) > 2.0  # bytes/token on the held-out paragraphs


def test_cli_train_and_eval(tmp_path, capsys):
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(CORPUS), encoding="utf-8")
    out = tmp_path / "tok"
    assert cli_main(["tokenizer", "train", "--input", str(src), "--vocab-size", "300", "--out", str(out),
                     "--val-fraction", "0.3"]) == 0
    assert "bytes/token" in capsys.readouterr().out
    assert Tokenizer.load(out).vocab_size == 300
    assert cli_main(["tokenizer", "eval", "--tokenizer", str(out), "--input", str(src)]) == 0
    assert "bytes/token" in capsys.readouterr().out
    assert cli_main(["tokenizer", "eval", "--tokenizer", str(tmp_path / "nope"), "--input", str(src)]) == 1
    assert "nope" in capsys.readouterr().err


def test_text_modes(tmp_path):
    from smelt.textio import ReadReport, TextOptions, iter_documents

    f = tmp_path / "a.txt"
    f.write_bytes(b"one\r\ntwo\n\n \nthree\n\n\nfour ===\nfive\n")
    assert list(iter_documents([f])) == ["one\r\ntwo", "three", "four ===\nfive"]
    rep = ReadReport()
    assert list(iter_documents([f], TextOptions("lines"), rep)) == ["one", "two", "three", "four ===", "five"]
    assert rep.empty == 4 and rep.docs == 5
    assert list(iter_documents([f], TextOptions("separator", separator="==="))) == ["one\r\ntwo\n\n \nthree\n\n\nfour ",
                                                                                   "\nfive\n"]
    assert list(iter_documents([f], TextOptions("file"))) == [f.read_bytes().decode()]


def test_jsonl_malformed_records_are_counted(tmp_path):
    from smelt.textio import ReadReport, iter_documents

    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "a"}\n[1]\n{"body": "x"}\n\n{"text": 5}\n{"text": ""}\n{"text": "b\u2028c"}\n')
    rep = ReadReport()
    assert list(iter_documents([f], report=rep)) == ["a", "b\u2028c"]
    assert rep.malformed == 3 and rep.empty == 1
    assert [m.split(": ")[0] for m in rep.examples] == [f"{f}:2", f"{f}:3", f"{f}:5"]


def test_parquet_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from smelt.textio import ReadReport, iter_documents

    pq.write_table(pa.table({"text": ["x y", None, "z"]}), tmp_path / "d.parquet")
    rep = ReadReport()
    assert list(iter_documents([tmp_path], report=rep)) == ["x y", "z"]
    assert rep.malformed == 1 and "row 2" in rep.examples[0]


def test_small_corpus_warns_about_vocab():
    with pytest.warns(UserWarning, match="vocab_size"):
        tok = Tokenizer.train(["ab ab ab"], vocab_size=5000)
    assert tok.vocab_size < 5000


def test_doc_separator_escapes():
    from smelt.tokenizer import _unescape

    assert _unescape(r"\n---\n") == "\n---\n" and _unescape(r"a\\nb") == "a\\nb" and _unescape("§é\\t") == "§é\t"
