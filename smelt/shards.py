"""Token shards: the on-disk format, its writer and reader, and the resumable training loader `TokenLoader`.

A shard folder (written by `smelt tokenize`, see smelt/tokenize_cli.py) holds `train_00000.bin`, ...,
`val_00000.bin`, ... and `meta.json`. Every document is stored as `<|bos|> tokens <|eos|>`.

Shard file layout (little-endian):

    offset 0   header, 64 bytes: struct "<8sIIIIQQQ16s"
               magic b"SMLTOK\\0\\0" | version u32 (=1) | dtype code u32 (1 = uint16, 2 = uint32) |
               vocab_size u32 | reserved u32 (0) | n_tokens u64 | n_docs u64 | n_bytes u64 (UTF-8 bytes of
               the documents' text, for bits-per-byte) | tokenizer fingerprint (16 ASCII bytes)
    offset 64  tokens: n_tokens × dtype (uint16 iff vocab_size <= 65,536), then zero padding to a multiple of 8
    then       document index: n_docs × uint64, the start offset of each document in the token array
               (strictly increasing, the first is 0, all < n_tokens)

The file size is therefore fully determined by the header; a file whose size differs is truncated or corrupt and
raises `ShardError`. Writers write to `<name>.tmp` and rename when complete, so a crash never leaves a
half-written `.bin`.
"""

from __future__ import annotations

import bisect
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from smelt.config import ConfigError

MAGIC = b"SMLTOK\0\0"
VERSION = 1
HEADER = struct.Struct("<8sIIIIQQQ16s")
HEADER_SIZE = 64
assert HEADER.size <= HEADER_SIZE
DTYPES = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
STATE_VERSION = 1


class ShardError(ValueError):
    """A shard file or folder is missing, truncated or corrupt. The message names the file and the problem."""


def dtype_for_vocab(vocab_size: int) -> tuple[int, np.dtype]:
    return (1, DTYPES[1]) if vocab_size <= 65536 else (2, DTYPES[2])


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


class ShardWriter:
    """Append documents (already wrapped in BOS/EOS) to one shard file; `close()` writes index + header."""

    def __init__(self, path: str | os.PathLike, vocab_size: int, fingerprint: str):
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.fingerprint = fingerprint.encode("ascii")[:16]
        self.code, self.dtype = dtype_for_vocab(vocab_size)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open(self.tmp, "wb")
        self._f.write(b"\0" * HEADER_SIZE)
        self.starts: list[int] = []
        self.n_tokens = 0
        self.n_bytes = 0

    def add(self, ids: np.ndarray | list[int], n_bytes: int) -> None:
        arr = np.asarray(ids)
        if arr.size == 0:
            raise ShardError(f"{self.path}: refusing to write an empty document (it needs at least BOS/EOS)")
        # A stray id would wrap around silently in uint16, so the range is checked on every write.
        lo = 0 if arr.dtype.kind == "u" else int(arr.min())
        hi = int(arr.max())
        if hi >= self.vocab_size or lo < 0:
            bad = hi if hi >= self.vocab_size else lo
            raise ShardError(f"{self.path}: token id {bad} out of range for vocab {self.vocab_size}")
        self.starts.append(self.n_tokens)
        self._f.write(arr.astype(self.dtype, copy=False).tobytes())
        self.n_tokens += arr.size
        self.n_bytes += n_bytes

    def close(self) -> Path:
        tok_bytes = self.n_tokens * self.dtype.itemsize
        self._f.write(b"\0" * (_pad8(tok_bytes) - tok_bytes))
        self._f.write(np.asarray(self.starts, dtype="<u8").tobytes())
        self._f.seek(0)
        self._f.write(HEADER.pack(MAGIC, VERSION, self.code, self.vocab_size, 0, self.n_tokens, len(self.starts),
                                  self.n_bytes, self.fingerprint.ljust(16, b"\0")))
        self._f.close()
        os.replace(self.tmp, self.path)
        return self.path


class SplitWriter:
    """Write one split (`train`/`val`) as numbered shards of about `shard_tokens` tokens each.

    Documents never straddle two shards: a shard is closed once it holds >= shard_tokens tokens, so it can exceed
    the target by at most one document. With `shuffle_seed`, each shard's documents are held in memory and written
    in a seeded random order, so consecutive training windows mix documents from across the input instead of
    walking through it in order (the loader then shuffles the shard order per epoch). Memory: one shard.
    """

    def __init__(self, folder: str | os.PathLike, split: str, vocab_size: int, fingerprint: str, shard_tokens: int,
                 shuffle_seed: int | None = None):
        self.folder, self.split = Path(folder), split
        self.vocab_size, self.fingerprint, self.shard_tokens = vocab_size, fingerprint, shard_tokens
        self.shuffle_seed = shuffle_seed
        self.current: ShardWriter | None = None
        self.pending: list[tuple[np.ndarray | list[int], int]] = []  # documents of the shard being shuffled
        self.pending_tokens = 0
        self.shards: list[str] = []
        self.tokens = self.docs = self.bytes = 0

    def add(self, ids: np.ndarray | list[int], n_bytes: int) -> None:
        if self.shuffle_seed is None:
            self._write(ids, n_bytes)
        else:
            self.pending.append((ids, n_bytes))
            self.pending_tokens += len(ids)
            if self.pending_tokens >= self.shard_tokens:
                self._flush_pending()
        self.tokens += len(ids)
        self.docs += 1
        self.bytes += n_bytes

    def _write(self, ids: np.ndarray | list[int], n_bytes: int) -> None:
        if self.current is not None and self.current.n_tokens >= self.shard_tokens:
            self._finish()
        if self.current is None:
            self._open()
        assert self.current is not None
        self.current.add(ids, n_bytes)

    def _open(self) -> None:
        name = f"{self.split}_{len(self.shards):05d}.bin"
        self.current = ShardWriter(self.folder / name, self.vocab_size, self.fingerprint)
        self.shards.append(name)

    def _flush_pending(self) -> None:
        """Write the held documents, shuffled, as one whole shard."""
        if not self.pending:
            return
        # Seeded by (seed, split, shard number): the same inputs always give the same files.
        rng = np.random.default_rng([self.shuffle_seed, self.split == "val", len(self.shards)])
        self._open()
        assert self.current is not None
        for i in rng.permutation(len(self.pending)):
            self.current.add(*self.pending[i])
        self._finish()
        self.pending, self.pending_tokens = [], 0

    def _finish(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def close(self) -> dict[str, Any]:
        self._flush_pending()
        self._finish()
        return {"tokens": self.tokens, "docs": self.docs, "bytes": self.bytes, "shards": self.shards}


class Shard:
    """A shard opened read-only with np.memmap; validates the header, the file size and the document index."""

    def __init__(self, path: str | os.PathLike):
        self.path = p = Path(path)
        if not p.is_file():
            raise ShardError(f"{p}: shard file does not exist")
        size = p.stat().st_size
        if size < HEADER_SIZE:
            raise ShardError(f"{p}: truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
        with open(p, "rb") as f:
            head = f.read(HEADER.size)
        magic, version, code, vocab, _, n_tokens, n_docs, n_bytes, fp = HEADER.unpack(head)
        if magic != MAGIC:
            raise ShardError(f"{p}: bad magic {magic!r} (expected {MAGIC!r}); not a smelt token shard")
        if version != VERSION:
            raise ShardError(f"{p}: unsupported shard version {version} (this smelt reads version {VERSION})")
        if code not in DTYPES:
            raise ShardError(f"{p}: unknown dtype code {code} in header (expected 1 = uint16 or 2 = uint32)")
        self.dtype = DTYPES[code]
        idx_off = HEADER_SIZE + _pad8(n_tokens * self.dtype.itemsize)
        expected = idx_off + n_docs * 8
        if size != expected:
            raise ShardError(f"{p}: size mismatch: the header says {n_tokens:,} tokens and {n_docs:,} documents "
                             f"({expected:,} bytes) but the file has {size:,} bytes; truncated or corrupt")
        self.vocab_size, self.n_tokens, self.n_docs, self.n_bytes = vocab, n_tokens, n_docs, n_bytes
        self.fingerprint = fp.rstrip(b"\0").decode("ascii", "replace")
        self.tokens = (np.memmap(p, self.dtype, "r", offset=HEADER_SIZE, shape=(n_tokens,)) if n_tokens
                       else np.zeros(0, self.dtype))
        starts = np.memmap(p, "<u8", "r", offset=idx_off, shape=(n_docs,)) if n_docs else np.zeros(0, "<u8")
        self.starts = np.asarray(starts, dtype=np.int64)  # small; a signed copy keeps index arithmetic simple
        if n_docs == 0 and n_tokens:
            raise ShardError(f"{p}: {n_tokens:,} tokens but an empty document index")
        if n_docs and (self.starts[0] != 0 or self.starts[-1] >= n_tokens or np.any(np.diff(self.starts) <= 0)):
            bad = int(np.argmax(np.r_[self.starts[0] != 0, np.diff(self.starts) <= 0]))
            raise ShardError(f"{p}: document index out of range or not increasing (entry {bad}: "
                             f"{int(self.starts[bad])}, {n_tokens:,} tokens)")
        self.lengths = np.diff(np.r_[self.starts, n_tokens])

    def doc(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_docs:
            raise IndexError(f"{self.path}: document {i} out of range (0..{self.n_docs - 1})")
        return np.asarray(self.tokens[self.starts[i]:self.starts[i] + self.lengths[i]])

    def __len__(self) -> int:
        return self.n_docs

    def __repr__(self) -> str:
        return f"Shard({self.path.name}: {self.n_tokens:,} tokens, {self.n_docs:,} docs, {self.dtype})"


def split_shards(folder: str | os.PathLike, split: str) -> list[Shard]:
    """Open every `{split}_*.bin` of a shard folder, in name order; they must share one tokenizer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShardError(f"{folder}: shard folder does not exist (create it with `smelt tokenize`)")
    paths = sorted(folder.glob(f"{split}_*.bin"))
    if not paths:
        raise ShardError(f"{folder}: no {split!r} shards ({split}_*.bin)")
    shards = [Shard(p) for p in paths]
    fps = {s.fingerprint for s in shards}
    if len(fps) > 1:
        raise ShardError(f"{folder}: {split} shards come from different tokenizers (fingerprints {sorted(fps)})")
    _check_meta(folder, split, shards)
    return shards


def _check_meta(folder: Path, split: str, shards: list[Shard]) -> None:
    """If meta.json is present, the shard files must be exactly the ones it lists, with its token counts:
    a stray or missing shard (an interrupted copy, leftovers of another run) would silently change the data."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        info = meta["splits"][split]
        listed, tokens = list(info["shards"]), int(info["tokens"])
        fingerprint = meta["tokenizer"]["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ShardError(f"{meta_path}: unreadable or no entry for the {split!r} split ({e!r})") from None
    found = [s.path.name for s in shards]
    if found != listed:
        raise ShardError(f"{folder}: {split} shards on disk {found} differ from those meta.json lists {listed}")
    if sum(s.n_tokens for s in shards) != tokens:
        raise ShardError(f"{folder}: {split} shards hold {sum(s.n_tokens for s in shards):,} tokens but meta.json "
                         f"says {tokens:,}")
    if shards[0].fingerprint != fingerprint:
        raise ShardError(f"{folder}: shards were written with tokenizer {shards[0].fingerprint} but meta.json "
                         f"names {fingerprint}")


class TokenLoader:
    """Endless, exactly resumable batches of token ids from one split of a shard folder.

    `next_batch()` returns a (batch_size, seq_len + 1) int64 tensor: inputs are `[:, :-1]`, targets `[:, 1:]`.

    packing="sequential": the split is one token stream (shards concatenated in a per-epoch order shuffled with
    `seed`), cut into windows of seq_len + 1 tokens taken every seq_len tokens, so each token is a target exactly
    once per epoch and windows run straight on across shard and epoch boundaries (nothing is dropped). Rank r of
    world_size takes windows r, r + world_size, ... : ranks never overlap and together cover the stream.

    packing="bestfit": BOS-aligned best-fit packing (as in nanochat). Each row starts at a document start and is
    filled with whole documents, always the largest one in a buffer of `buffer_docs` that still fits; only when
    none fits is the shortest one cropped to fill the row (the cropped tail is counted in `cropped_tokens`). A
    document longer than a row is first cut into row-sized pieces (only the first starts with BOS) so long books
    are used, not cropped away. Rank r takes documents r, r + world_size, ... of each epoch.

    Resume guarantee: `load_state_dict(state_dict())` on a fresh loader with the same arguments yields exactly the
    batches the original would have produced next. The state is small JSON (the buffer is stored as references).
    There is no mutable RNG to save: the shard order of epoch e is a pure function of (seed, e).
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", batch_size: int = 8, seq_len: int = 256,
                 seed: int = 0, rank: int = 0, world_size: int = 1, packing: str = "sequential",
                 buffer_docs: int = 1000):
        if batch_size < 1 or seq_len < 1:
            raise ConfigError(f"batch_size/seq_len: must be >= 1, got {batch_size}/{seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank: must be in [0, world_size={world_size}), got {rank}")
        if packing not in ("sequential", "bestfit"):
            raise ConfigError(f"packing: {packing!r} is not one of ['sequential', 'bestfit']")
        if seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {seed}")
        if buffer_docs < 1:
            raise ConfigError(f"buffer_docs: must be >= 1, got {buffer_docs}")
        self.path, self.split = Path(path), split
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size, self.packing, self.buffer_docs = rank, world_size, packing, buffer_docs
        self.shards = split_shards(self.path, split)
        self.fingerprint = self.shards[0].fingerprint
        self.vocab_size = self.shards[0].vocab_size
        sizes = np.array([s.n_tokens for s in self.shards], dtype=np.int64)
        self.tokens = int(sizes.sum())
        self.bytes = int(sum(s.n_bytes for s in self.shards))
        self.docs = int(sum(s.n_docs for s in self.shards))
        if self.tokens == 0:
            raise ShardError(f"{self.path}: the {split} split has no tokens")
        if packing == "bestfit" and self.docs < world_size:
            raise ConfigError(f"world_size: {world_size} ranks but only {self.docs} {split} documents to share")
        self._order_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # Sequential cursor: the next window index of this rank (global numbering, step world_size).
        self._window = rank
        # Best-fit cursor: epoch, next document (in-epoch index), offset inside it; the buffer of pieces.
        self._epoch, self._doc, self._offset = 0, rank, 0
        self._buffer: list[tuple[int, int, int, int]] = []  # (length, seq, shard, start), sorted
        self._seq = 0
        self.cropped_tokens = 0

    # ---- epoch order --------------------------------------------------------------------------------------------
    def _order(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shard permutation of an epoch and the cumulative token and document counts in that order."""
        if epoch not in self._order_cache:
            if len(self._order_cache) > 4:
                self._order_cache.clear()
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
            cum_tok = np.cumsum([self.shards[i].n_tokens for i in perm])
            cum_doc = np.cumsum([self.shards[i].n_docs for i in perm])
            self._order_cache[epoch] = (perm, cum_tok, cum_doc)
        return self._order_cache[epoch]

    # ---- sequential -----------------------------------------------------------------------------------------------
    def _locate(self, pos: int) -> tuple[int, int, int]:
        """Global stream position → (epoch, shard index, offset in that shard)."""
        epoch, off = divmod(pos, self.tokens)
        perm, cum, _ = self._order(epoch)
        i = int(np.searchsorted(cum, off, side="right"))
        return epoch, int(perm[i]), off - (int(cum[i - 1]) if i else 0)

    def _read(self, pos: int, n: int, out: np.ndarray) -> None:
        filled = 0
        while filled < n:
            _, s, off = self._locate(pos + filled)
            take = min(n - filled, self.shards[s].n_tokens - off)
            out[filled:filled + take] = self.shards[s].tokens[off:off + take]
            filled += take

    def _sequential_batch(self, out: np.ndarray) -> None:
        for row in out:
            self._read(self._window * self.seq_len, self.seq_len + 1, row)
            self._window += self.world_size

    # ---- best fit -------------------------------------------------------------------------------------------------
    def _next_piece(self) -> tuple[int, int, int]:
        """The next piece (shard, start, length) of this rank's document stream; advances the cursor."""
        cap = self.seq_len + 1
        perm, _, cum_doc = self._order(self._epoch)
        i = int(np.searchsorted(cum_doc, self._doc, side="right"))
        s = int(perm[i])
        d = self._doc - (int(cum_doc[i - 1]) if i else 0)
        shard = self.shards[s]
        start, length = int(shard.starts[d]) + self._offset, int(shard.lengths[d]) - self._offset
        take = min(length, cap)
        if take < length:
            self._offset += take
        else:
            self._offset = 0
            self._doc += self.world_size
            if self._doc >= self.docs:
                self._epoch, self._doc = self._epoch + 1, self.rank
        return s, start, take

    def _bestfit_batch(self, out: np.ndarray) -> None:
        cap = self.seq_len + 1
        buf = self._buffer
        for row in out:
            pos = 0
            while pos < cap:
                while len(buf) < self.buffer_docs:
                    s, start, n = self._next_piece()
                    bisect.insort(buf, (n, self._seq, s, start))
                    self._seq += 1
                remaining = cap - pos
                j = bisect.bisect_right(buf, (remaining, float("inf")))
                if j:  # the largest piece that fits; among equals the oldest
                    j = bisect.bisect_left(buf, (buf[j - 1][0],))
                    n, _, s, start = buf.pop(j)
                else:  # nothing fits: crop the shortest
                    n, _, s, start = buf.pop(0)
                    self.cropped_tokens += n - remaining
                    n = remaining
                row[pos:pos + n] = self.shards[s].tokens[start:start + n]
                pos += n

    # ---- public -----------------------------------------------------------------------------------------------
    def next_batch(self):
        import torch

        out = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        if self.packing == "sequential":
            self._sequential_batch(out)
        else:
            self._bestfit_batch(out)
        return torch.from_numpy(out)

    def __iter__(self):
        while True:
            yield self.next_batch()

    def epoch_batches(self) -> Iterator[Any]:
        """One pass over the split for evaluation, independent of (and not moving) the training cursor.

        Sequential windows of epoch 0, strided by rank, stopping before a window would run past the end of the
        epoch; the last batch may have fewer rows. Every token but the final partial window's is a target exactly
        once across ranks (at most seq_len - 1 tokens per split are left out).
        """
        import torch

        n_windows = (self.tokens - 1) // self.seq_len
        mine = list(range(self.rank, n_windows, self.world_size))
        for i in range(0, len(mine), self.batch_size):
            ks = mine[i:i + self.batch_size]
            out = np.empty((len(ks), self.seq_len + 1), dtype=np.int64)
            for row, k in zip(out, ks):
                self._read(k * self.seq_len, self.seq_len + 1, row)
            yield torch.from_numpy(out)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": STATE_VERSION, "packing": self.packing, "split": self.split, "seq_len": self.seq_len,
            "seed": self.seed, "rank": self.rank, "world_size": self.world_size, "fingerprint": self.fingerprint,
            "split_tokens": self.tokens,
        }
        if self.packing == "sequential":
            epoch, s, off = self._locate(self._window * self.seq_len)
            # epoch/shard/offset are informative; `window` alone determines the stream position.
            state.update(window=self._window, epoch=epoch, shard=self.shards[s].path.name, offset=off)
        else:
            state.update(epoch=self._epoch, doc=self._doc, offset=self._offset, seq=self._seq,
                         buffer_docs=self.buffer_docs, cropped_tokens=self.cropped_tokens,
                         buffer=[list(b) for b in self._buffer])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A resumed run must replay exactly the same tokens, so any setting that changes the stream is an error.
        must_match = ["packing", "split", "seq_len", "seed", "rank", "world_size", "fingerprint", "split_tokens"]
        if self.packing == "bestfit":
            must_match.append("buffer_docs")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state: version {state.get('version')!r}, expected {STATE_VERSION}")
        for key in must_match:
            mine = self.split_tokens if key == "split_tokens" else getattr(self, key)
            if state.get(key) != mine:
                raise ValueError(f"loader state: {key} is {state.get(key)!r} in the saved state but {mine!r} in "
                                 f"this loader ({self.path}); resuming would not replay the same tokens")
        if self.packing == "sequential":
            self._window = int(state["window"])
        else:
            self._epoch, self._doc, self._offset = int(state["epoch"]), int(state["doc"]), int(state["offset"])
            self._seq, self.cropped_tokens = int(state["seq"]), int(state["cropped_tokens"])
            self._buffer = sorted(tuple(int(x) for x in b) for b in state["buffer"])  # type: ignore[misc]

    @property
    def split_tokens(self) -> int:
        return self.tokens


def main(argv: list[str]) -> int:
    """`smelt tokenize`: see smelt/tokenize_cli.py (kept apart so this module stays about the format/loader)."""
    from smelt.tokenize_cli import main as tokenize_main
    return tokenize_main(argv)
