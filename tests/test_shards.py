import json
import struct

import numpy as np
import pytest

from smelt.cli import main as cli_main
from smelt.shards import Shard, ShardError, ShardWriter, SplitWriter, TokenLoader, split_shards
from smelt.tokenizer import Tokenizer

FP = "0123456789abcdef"


def _docs(n: int, seed: int = 0, vocab: int = 500, max_len: int = 40) -> list[np.ndarray]:
    """Synthetic documents already wrapped as BOS ... EOS, with ids unique enough to track positions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        body = rng.integers(7, vocab, size=int(rng.integers(1, max_len)))
        out.append(np.r_[0, body, 1].astype(np.int64))
    return out


def _write(folder, docs, split="train", shard_tokens=200, vocab=500):
    w = SplitWriter(folder, split, vocab, FP, shard_tokens)
    for d in docs:
        w.add(d, n_bytes=len(d) * 3)
    return w.close()


def test_write_read_roundtrip(tmp_path):
    docs = _docs(50)
    info = _write(tmp_path, docs)
    assert len(info["shards"]) > 1 and info["docs"] == 50 and info["tokens"] == sum(map(len, docs))
    shards = split_shards(tmp_path, "train")
    got = [s.doc(i) for s in shards for i in range(len(s))]
    assert len(got) == len(docs) and all(np.array_equal(a, b) for a, b in zip(got, docs))
    assert all(s.dtype == np.uint16 and s.fingerprint == FP for s in shards)
    assert sum(s.n_bytes for s in shards) == info["bytes"]


def test_shuffled_writer_is_a_seeded_permutation(tmp_path):
    docs = _docs(50)
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        w = SplitWriter(tmp_path / name, "train", 500, FP, shard_tokens=400, shuffle_seed=seed)
        (tmp_path / name).mkdir()
        for d in docs:
            w.add(d, 1)
        assert w.close()["docs"] == 50
    got = {n: [s.doc(i).tolist() for s in split_shards(tmp_path / n, "train") for i in range(len(s))]
           for n in "abc"}
    assert got["a"] == got["b"] != got["c"]  # deterministic per seed
    assert got["a"] != [d.tolist() for d in docs] and sorted(got["a"]) == sorted(d.tolist() for d in docs)
    # shuffling stays inside a shard: the first shard holds exactly the first documents, reordered
    first = split_shards(tmp_path / "a", "train")[0]
    assert sorted(first.doc(i).tolist() for i in range(len(first))) == sorted(d.tolist() for d in docs[:len(first)])


def test_uint32_for_big_vocab(tmp_path):
    w = ShardWriter(tmp_path / "x.bin", 100_000, FP)
    w.add([0, 70_000, 99_999, 1], 5)
    w.close()
    s = Shard(tmp_path / "x.bin")
    assert s.dtype == np.uint32 and s.doc(0).tolist() == [0, 70_000, 99_999, 1]
    w = ShardWriter(tmp_path / "y.bin", 65_536, FP)
    with pytest.raises(ShardError, match="out of range"):
        w.add([0, 65_536], 1)


@pytest.fixture
def one_shard(tmp_path):
    _write(tmp_path, _docs(5), shard_tokens=10**6)
    return tmp_path / "train_00000.bin"


def test_truncated_shard(one_shard):
    data = one_shard.read_bytes()
    one_shard.write_bytes(data[:-5])
    with pytest.raises(ShardError, match=r"train_00000\.bin: size mismatch"):
        Shard(one_shard)
    one_shard.write_bytes(data[:10])
    with pytest.raises(ShardError, match=r"train_00000\.bin: truncated"):
        Shard(one_shard)


def test_bad_magic(one_shard):
    data = bytearray(one_shard.read_bytes())
    data[:8] = b"NOTSHARD"
    one_shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train_00000\.bin: bad magic"):
        Shard(one_shard)


def test_header_size_mismatch(one_shard):
    data = bytearray(one_shard.read_bytes())
    n_tokens = struct.unpack_from("<Q", data, 24)[0]
    struct.pack_into("<Q", data, 24, n_tokens + 100)  # header claims more tokens than the file holds
    one_shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train_00000\.bin: size mismatch"):
        Shard(one_shard)


def test_bad_index(one_shard):
    s = Shard(one_shard)
    idx_off = one_shard.stat().st_size - 8 * s.n_docs
    data = bytearray(one_shard.read_bytes())
    struct.pack_into("<Q", data, idx_off + 8 * 2, 10**9)
    one_shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train_00000\.bin: document index out of range"):
        Shard(one_shard)


def test_missing_split(tmp_path):
    with pytest.raises(ShardError, match="no 'val' shards"):
        TokenLoader(tmp_path, split="val")


# ---- loader ----------------------------------------------------------------------------------------------------

@pytest.fixture
def corpus(tmp_path):
    docs = _docs(60, max_len=30)
    _write(tmp_path, docs, shard_tokens=300)
    return tmp_path, docs


def _stream(docs):
    return np.concatenate(docs)


def test_sequential_windows_cover_stream(corpus):
    folder, docs = corpus
    loader = TokenLoader(folder, batch_size=4, seq_len=16, seed=3)
    n = loader.tokens
    assert n == sum(map(len, docs)) and loader.bytes == 3 * n
    batches = np.concatenate([loader.next_batch().numpy() for _ in range(n // 64 + 3)])
    assert batches.shape[1] == 17
    # consecutive windows overlap by exactly one token (last target = next input)
    assert np.array_equal(batches[:-1, -1], batches[1:, 0])
    # the first epoch is the shards' tokens in a permuted order: same multiset of tokens
    flat = np.concatenate([batches[:, :-1].reshape(-1)])[:n]
    assert np.array_equal(np.sort(flat), np.sort(_stream(docs)))


def _take(loader, k):
    return [loader.next_batch().numpy().copy() for _ in range(k)]


@pytest.mark.parametrize("packing", ["sequential", "bestfit"])
def test_exact_resume_across_epochs(corpus, packing):
    folder, _ = corpus
    kw = dict(batch_size=3, seq_len=20, seed=7, packing=packing, buffer_docs=8)
    ref = TokenLoader(folder, **kw)
    per_epoch = ref.tokens // (3 * 20) + 1
    expected = _take(ref, 3 * per_epoch)  # several epochs, several shards
    a = TokenLoader(folder, **kw)
    for cut in [1, per_epoch - 1, per_epoch, 2 * per_epoch + 1]:
        a = TokenLoader(folder, **kw)
        _take(a, cut)
        state = json.loads(json.dumps(a.state_dict()))  # must survive JSON
        b = TokenLoader(folder, **kw)
        b.load_state_dict(state)
        got = _take(b, 3 * per_epoch - cut)
        assert all(np.array_equal(x, y) for x, y in zip(got, expected[cut:])), f"diverged after resume at {cut}"
    assert ref.state_dict()["epoch"] >= 2  # the reference run really crossed epoch boundaries


def test_resume_rejects_changed_settings(corpus):
    folder, _ = corpus
    a = TokenLoader(folder, seq_len=16)
    b = TokenLoader(folder, seq_len=32)
    with pytest.raises(ValueError, match="seq_len"):
        b.load_state_dict(a.state_dict())


def test_ranks_disjoint_and_cover(corpus):
    folder, _ = corpus
    one = TokenLoader(folder, batch_size=1, seq_len=8, seed=1)
    single = [tuple(one.next_batch()[0].tolist()) for _ in range(60)]
    ranks = [TokenLoader(folder, batch_size=3, seq_len=8, seed=1, rank=r, world_size=2) for r in range(2)]
    per_rank = [[tuple(row) for _ in range(10) for row in ld.next_batch().tolist()] for ld in ranks]
    # rank r holds windows r, r+2, r+4, ... of the single-rank stream
    assert per_rank[0] == single[0::2] and per_rank[1] == single[1::2]
    assert not set(per_rank[0]) & set(per_rank[1])


def test_bestfit_rows_start_with_bos_and_hold_whole_docs(corpus):
    folder, docs = corpus
    loader = TokenLoader(folder, batch_size=4, seq_len=32, packing="bestfit", buffer_docs=16)
    doc_set = {tuple(d.tolist()) for d in docs}
    for _ in range(10):
        for row in loader.next_batch().numpy():
            assert row[0] == 0  # every row starts at a document start
            starts = list(np.flatnonzero(row == 0)) + [len(row)]
            pieces = [tuple(row[a:b].tolist()) for a, b in zip(starts, starts[1:])]
            # all but the last piece of a row are whole documents; the last may be cropped
            assert all(p in doc_set for p in pieces[:-1])
            assert any(d[:len(pieces[-1])] == pieces[-1] for d in doc_set)


def test_bestfit_ranks_take_disjoint_docs(corpus):
    folder, _ = corpus
    ranks = [TokenLoader(folder, batch_size=2, seq_len=64, packing="bestfit", rank=r, world_size=2,
                         buffer_docs=4) for r in range(2)]
    seen = []
    for ld in ranks:
        rows = np.concatenate([ld.next_batch().numpy() for _ in range(2)])
        seen.append({tuple(r[a:a + 5].tolist()) for r in rows for a in np.flatnonzero(r == 0)})
    assert not seen[0] & seen[1]


def test_long_docs_are_split_not_dropped(tmp_path):
    long_doc = np.r_[0, np.arange(7, 300), 1]
    _write(tmp_path, [long_doc], shard_tokens=10**6)
    loader = TokenLoader(tmp_path, batch_size=1, seq_len=63, packing="bestfit", buffer_docs=1)
    rows = [loader.next_batch()[0].numpy() for _ in range(5)]
    assert np.array_equal(np.concatenate(rows)[:len(long_doc)], long_doc)
    # 295 tokens = 4 full rows + a 39-token piece; the next 64-token piece is cropped into the 25 free slots
    assert len(long_doc) == 295 and loader.cropped_tokens == 64 - 25


# ---- smelt tokenize --------------------------------------------------------------------------------------------

def test_tokenize_cli_end_to_end(tmp_path, capsys):
    texts = [f"Document number {i}: the quick brown fox {'jumps ' * (i % 5)}over the lazy dog." for i in range(40)]
    tok = Tokenizer.train(texts * 3, vocab_size=320)
    tok.save(tmp_path / "tok")
    lines = [json.dumps({"text": t}) for t in texts]
    lines.insert(3, '{"text": broken')
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "shards"
    rc = cli_main(["tokenize", "--input", str(src), "--tokenizer", str(tmp_path / "tok"), "--out", str(out),
                   "--val-docs", "5", "--shard-tokens", "300", "--no-shuffle"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "1 malformed" in err and f"{src}:4: invalid JSON" in err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["read"]["malformed"] == 1 and meta["tokenizer"]["fingerprint"] == tok.fingerprint
    assert meta["vocab_size"] == meta["tokenizer"]["vocab_size"] == 320 and meta["dtype"] == "uint16"
    assert meta["splits"]["val"]["docs"] == 5 and meta["splits"]["train"]["docs"] == 35
    assert meta["splits"]["train"]["bytes"] == sum(len(t.encode()) for t in texts[5:])
    got = [s.doc(i).tolist() for s in split_shards(out, "train") for i in range(len(s))]
    assert got == [tok.encode(t, bos=True, eos=True) for t in texts[5:]]
    assert len(meta["splits"]["train"]["shards"]) > 1
    # refuses to overwrite without --overwrite
    assert cli_main(["tokenize", "--input", str(src), "--tokenizer", str(tmp_path / "tok"), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    loader = TokenLoader(out, split="val", batch_size=2, seq_len=8)
    assert loader.next_batch().shape == (2, 9) and loader.bytes == meta["splits"]["val"]["bytes"]
    # a stray shard that meta.json does not list is refused rather than silently trained on
    (out / "train_00000.bin").rename(out / "train_00099.bin")
    with pytest.raises(ShardError, match="differ from those meta.json lists"):
        TokenLoader(out)


def test_tokenize_txt_paragraphs_and_hash_split(tmp_path):
    tok = Tokenizer.train(["alpha beta gamma"] * 10, vocab_size=270)
    tok.save(tmp_path / "tok")
    src = tmp_path / "a.txt"
    paras = [f"para {i}\nline two\r\n" for i in range(200)]
    src.write_text("\n\n  \n".join(paras), encoding="utf-8", newline="")
    out = tmp_path / "s"
    assert cli_main(["tokenize", "--input", str(src), "--tokenizer", str(tmp_path / "tok"), "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    assert tr["docs"] + va["docs"] == 200 and 5 <= va["docs"] <= 40
    docs = [tok.decode(s.doc(i)[1:-1]) for sp in ("train", "val") for s in split_shards(out, sp) for i in range(len(s))]
    assert sorted(docs) == sorted(p.rstrip("\r\n") for p in paras)


def test_tokenize_config_validation_and_help(tmp_path, capsys):
    from smelt.config import ConfigError
    from smelt.tokenize_cli import TokenizeConfig, tokenize

    with pytest.raises(ConfigError, match="val_fraction"):
        tokenize(TokenizeConfig(inputs=["x"], tokenizer="t", out=str(tmp_path), val_fraction=1.5))
    assert cli_main(["tokenize", "--help"]) == 0
    assert "blank lines" in capsys.readouterr().out


def test_tokenize_without_val(tmp_path, capsys):
    from smelt.tokenize_cli import TokenizeConfig, tokenize

    tok = Tokenizer.train(["alpha beta gamma"] * 10, vocab_size=270)
    tok.save(tmp_path / "tok")
    (tmp_path / "a.txt").write_text("one\n\ntwo\n\nthree\n")
    meta, _ = tokenize(TokenizeConfig(inputs=[str(tmp_path / "a.txt")], tokenizer=str(tmp_path / "tok"),
                                      out=str(tmp_path / "s"), val_fraction=0.0))
    assert list(meta["splits"]) == ["train"] and meta["splits"]["train"]["docs"] == 3
    assert not list((tmp_path / "s").glob("val_*"))


def test_epoch_batches_cover_split_once(corpus):
    folder, _ = corpus
    ld = TokenLoader(folder, batch_size=4, seq_len=10)
    before = ld.state_dict()
    rows = np.concatenate([b.numpy() for b in ld.epoch_batches()])
    assert ld.state_dict() == before  # the training cursor did not move
    assert len(rows) == (ld.tokens - 1) // 10
    ranks = [np.concatenate([b.numpy() for b in TokenLoader(folder, batch_size=4, seq_len=10, rank=r,
                                                             world_size=2).epoch_batches()]) for r in range(2)]
    assert np.array_equal(ranks[0], rows[0::2]) and np.array_equal(ranks[1], rows[1::2])
