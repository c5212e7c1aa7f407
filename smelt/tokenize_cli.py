"""`smelt tokenize`: documents (txt / jsonl / parquet) → token shards + meta.json. Format: see smelt/shards.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from smelt.config import check, doc
from smelt.shards import SplitWriter, dtype_for_vocab
from smelt.textio import ReadReport, TextOptions, expand_inputs, is_val, iter_documents

HELP = """\
smelt tokenize --input X [--input X ...] --tokenizer DIR --out DIR [options]

Turn documents into token shards for pre-training. Inputs are files, folders (searched recursively) or registered
dataset names such as `tinyshakespeare`:
  .txt / .txt.gz   split into documents on blank lines by default (so one corpus file such as Tiny Shakespeare
                   becomes many paragraph documents); --split-lines: one document per line; --doc-separator SEP:
                   split on SEP; --whole-file: the whole file is one document
  .jsonl(.gz)      one JSON object per line, text in field "text" (--text-field). A malformed line is counted and
                   reported as file:line, and skipped; it never stops the run.
  .parquet         the text column (needs pyarrow)
Every document is stored as <|bos|> tokens <|eos|>, never split across shards; each shard's documents are written
in a seeded random order (--no-shuffle keeps input order).

Output folder: train_00000.bin, ..., val_00000.bin, ... and meta.json (tokens, documents and UTF-8 bytes per
split, so bits-per-byte = nats / (ln 2 × bytes); the tokenizer path and fingerprint; inputs; the val rule; what was
skipped). Val split: with --val-fraction F a document goes to val iff a seeded hash of its content is below F
(deterministic, stable under reordering, duplicates land on the same side); with --val-docs N the first N
documents (in input order) are val.
"""


@dataclass
class TokenizeConfig:
    inputs: list[str] = doc([], "files, folders or dataset names to tokenise")
    tokenizer: str = doc("", "tokenizer folder from `smelt tokenizer train`")
    out: str = doc("", "output shard folder")
    val_fraction: float = doc(0.1, "fraction of documents for val (content hash < fraction); ignored with val_docs")
    val_docs: int | None = doc(None, "if set, the first N documents (input order) are val instead")
    seed: int = doc(0, "seed (key) of the val hash and of the in-shard shuffle")
    shard_tokens: int = doc(10_000_000, "target tokens per shard file; documents are never split across shards")
    workers: int = doc(0, "tokeniser threads (0 = all cores)")
    shuffle: bool = doc(True, "write each shard's documents in a seeded random order (input order if false)")
    txt_mode: Literal["paragraphs", "lines", "separator", "file"] = doc("paragraphs", ".txt: how documents are cut")
    separator: str = doc("", ".txt: the separator for txt_mode = separator")
    text_field: str = doc("text", "jsonl key / parquet column with the text")
    overwrite: bool = doc(False, "replace shards and meta.json already in `out`")

    def validate(self) -> None:
        check(bool(self.inputs), "inputs", "give at least one input")
        check(bool(self.tokenizer), "tokenizer", "a tokenizer folder is required")
        check(bool(self.out), "out", "an output folder is required")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        check(self.val_docs is None or self.val_docs >= 0, "val_docs", f"must be >= 0, got {self.val_docs}")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(self.shard_tokens >= 1, "shard_tokens", f"must be >= 1, got {self.shard_tokens}")
        check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        check(self.txt_mode != "separator" or bool(self.separator), "separator", "empty with txt_mode = separator")


def _parser() -> argparse.ArgumentParser:
    from smelt.tokenizer import add_input_args

    d = TokenizeConfig()
    p = argparse.ArgumentParser(prog="smelt tokenize", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--tokenizer", required=True, help="tokenizer folder from `smelt tokenizer train`")
    p.add_argument("--out", required=True, help="output shard folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"fraction of documents for val (default {d.val_fraction})")
    g.add_argument("--val-docs", type=int, default=None, help="the first N documents are val")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the val hash and the in-shard shuffle (default 0)")
    p.add_argument("--shard-tokens", type=lambda s: int(s.replace("_", "")), default=d.shard_tokens,
                   help="target tokens per shard file (default 10_000_000); documents are never split")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="tokeniser threads (default 0 = all cores; sets RAYON_NUM_THREADS, which the Rust thread "
                        "pool reads once, at the first batch encode of the process)")
    p.add_argument("--no-shuffle", action="store_true",
                   help="keep input order inside shards (default: each shard's documents are shuffled with --seed, "
                        "so consecutive training windows mix documents from across the input)")
    p.add_argument("--overwrite", action="store_true", help="replace shards and meta.json already in --out")
    return p


def _chunks(docs: Iterable[str], max_docs: int = 4096, max_chars: int = 8 << 20) -> Iterator[list[str]]:
    """Group documents so each encode_batch call has enough work to keep every core busy."""
    chunk: list[str] = []
    chars = 0
    for d in docs:
        chunk.append(d)
        chars += len(d)
        if len(chunk) >= max_docs or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _prepare_out(out: Path, overwrite: bool) -> None:
    # Left-over shards of an earlier run would silently join this one's splits, so they are never kept.
    old = sorted(out.glob("*.bin")) + sorted(out.glob("*.bin.tmp")) + sorted(out.glob("meta.json"))
    if old and not overwrite:
        raise ValueError(f"{out}: already holds shards or meta.json ({old[0].name}, ...); "
                         f"pass --overwrite to replace them")
    for f in old:
        f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def main(argv: list[str]) -> int:
    from smelt.tokenizer import text_options

    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help or a usage error: argparse has printed why
        return int(e.code or 0)
    opts = text_options(args)
    cfg = TokenizeConfig(inputs=args.input, tokenizer=args.tokenizer, out=args.out, val_fraction=args.val_fraction,
                         val_docs=args.val_docs, seed=args.seed, shard_tokens=args.shard_tokens,
                         workers=args.workers, shuffle=not args.no_shuffle, txt_mode=opts.txt_mode,
                         separator=opts.separator, text_field=opts.text_field, overwrite=args.overwrite)
    meta, seconds = tokenize(cfg)
    n_bytes = sum(s["bytes"] for s in meta["splits"].values())
    n_tok = sum(s["tokens"] for s in meta["splits"].values())
    for s in ("train", "val"):
        info = meta["splits"].get(s)
        if info is None:
            print(f"{s}: no documents (no shards written)")
            continue
        print(f"{s}: {info['docs']:,} docs, {info['tokens']:,} tokens, {info['bytes']:,} bytes in "
              f"{len(info['shards'])} shard(s)")
    print(f"wrote {cfg.out} in {seconds:.1f}s ({n_bytes / max(seconds, 1e-9) / 1e6:.2f} MB/s, "
          f"{n_tok / max(seconds, 1e-9) / 1e6:.2f} M tokens/s, {n_bytes / max(n_tok, 1):.3f} bytes/token incl. "
          f"BOS/EOS)")
    return 0


def tokenize(cfg: TokenizeConfig) -> tuple[dict[str, Any], float]:
    """Tokenise `cfg.inputs` into shards under `cfg.out`; returns (the meta.json contents, seconds taken)."""
    from smelt.tokenizer import Tokenizer

    cfg.validate()
    if cfg.workers:
        # Read by the Rust thread pool when it starts, i.e. before the first encode_batch of this process.
        os.environ["RAYON_NUM_THREADS"] = str(cfg.workers)

    tok = Tokenizer.load(cfg.tokenizer)
    opts = TextOptions(cfg.txt_mode, cfg.separator, cfg.text_field)
    out = Path(cfg.out)
    report = ReadReport()
    files = expand_inputs(cfg.inputs)  # fail on a missing input before writing anything
    _prepare_out(out, cfg.overwrite)
    _, dtype = dtype_for_vocab(tok.vocab_size)
    writers = {s: SplitWriter(out, s, tok.vocab_size, tok.fingerprint, cfg.shard_tokens,
                              shuffle_seed=cfg.seed if cfg.shuffle else None) for s in ("train", "val")}

    # Encoding goes through tokenizers' Rust batch path, which spreads each batch over all cores with threads.
    # bench/bench_tokenize.py compares it with a multiprocessing.Pool of single-threaded workers on 2 cores:
    # the Rust path costs the least CPU per MB (0.35 CPU-s/MB vs 0.39 for the pool and 0.44 for a per-document
    # loop, Gutenberg paragraphs, 4k vocab) because the pool must pickle every token id back to this process as
    # a Python int; with the cores free the Rust path ran at 6.4 MB/s against 1.6 MB/s for the pool.
    from tqdm import tqdm

    compressed = any(f.name.endswith((".gz", ".bz2", ".parquet")) for f in files)
    total = None if compressed else sum(f.stat().st_size for f in files)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenize", disable=not sys.stderr.isatty())
    t0 = time.time()
    index = 0
    for chunk in _chunks(iter_documents(cfg.inputs, opts, report)):
        for text, ids in zip(chunk, tok.encode_docs(chunk, dtype)):
            raw = text.encode("utf-8")
            if cfg.val_docs is not None:
                split = "val" if index < cfg.val_docs else "train"
            else:
                split = "val" if is_val(raw, cfg.val_fraction, cfg.seed) else "train"
            writers[split].add(ids, len(raw))
            index += 1
            bar.update(len(raw))
    bar.close()
    dt = time.time() - t0
    # A split that got no documents (e.g. val_fraction 0) has no shards and is left out of meta.json, so readers
    # can test `"val" in meta["splits"]` instead of tripping over an empty split.
    splits = {s: info for s, w in writers.items() if (info := w.close())["docs"]}
    if report.malformed or report.empty or report.unsupported_files:
        print(f"smelt tokenize: {report.summary()}", file=sys.stderr)
    if index == 0:
        raise ValueError(f"no documents found in {cfg.inputs}")
    rule = ({"kind": "first_docs", "val_docs": cfg.val_docs} if cfg.val_docs is not None else
            {"kind": "content_hash", "fraction": cfg.val_fraction, "seed": cfg.seed,
             "rule": "val iff blake2b-64(utf8 text, key=seed) < fraction * 2**64"})
    meta = {
        "format": "smelt-shards", "version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tokenizer": {"path": str(Path(cfg.tokenizer).resolve()), "fingerprint": tok.fingerprint,
                      "vocab_size": tok.vocab_size},
        "vocab_size": tok.vocab_size, "dtype": dtype.name, "doc_layout": "<|bos|> tokens <|eos|>", "shard_tokens": cfg.shard_tokens,
        "doc_order": f"shuffled within each shard (seed {cfg.seed})" if cfg.shuffle else "input order",
        "inputs": list(cfg.inputs), "files": report.files, "txt_mode": opts.txt_mode,
        "text_field": opts.text_field, "val_rule": rule, "splits": splits, "read": report.to_dict(),
        "seconds": round(dt, 3),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta, dt
