"""`smelt tokenize`: documents (txt / jsonl / parquet) → token shards + meta.json. Format: see smelt/shards.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from smelt.shards import SplitWriter, dtype_for_vocab
from smelt.textio import ReadReport, expand_inputs, is_val, iter_documents

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
Every document is stored as <|bos|> tokens <|eos|>.

Output folder: train_00000.bin, ..., val_00000.bin, ... and meta.json (tokens, documents and UTF-8 bytes per
split, so bits-per-byte = nats / (ln 2 × bytes); the tokenizer path and fingerprint; inputs; the val rule; what was
skipped). Val split: with --val-fraction F a document goes to val iff a seeded hash of its content is below F
(deterministic, stable under reordering, duplicates land on the same side); with --val-docs N the first N
documents (in input order) are val.
"""


def _parser() -> argparse.ArgumentParser:
    from smelt.tokenizer import add_input_args

    p = argparse.ArgumentParser(prog="smelt tokenize", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--tokenizer", required=True, help="tokenizer folder from `smelt tokenizer train`")
    p.add_argument("--out", required=True, help="output shard folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--val-fraction", type=float, default=None, help="fraction of documents for val (default 0.1)")
    g.add_argument("--val-docs", type=int, default=None, help="the first N documents are val")
    p.add_argument("--seed", type=int, default=0, help="seed of the val hash (default 0)")
    p.add_argument("--shard-tokens", type=lambda s: int(s.replace("_", "")), default=10_000_000,
                   help="target tokens per shard file (default 10_000_000); documents are never split")
    p.add_argument("--workers", type=int, default=0,
                   help="tokeniser threads (default 0 = all cores)")
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
    old = sorted(out.glob("*.bin")) + sorted(out.glob("*.bin.tmp")) + ([out / "meta.json"] if (out / "meta.json").exists() else [])
    if old and not overwrite:
        raise ValueError(f"{out}: already holds shards or meta.json ({old[0].name}, ...); "
                              f"pass --overwrite to replace them")
    for f in old:
        f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def main(argv: list[str]) -> int:
    from smelt.tokenizer import Tokenizer, text_options

    args = _parser().parse_args(argv)
    if args.val_docs is not None and args.val_docs < 0:
        raise ValueError(f"--val-docs: must be >= 0, got {args.val_docs}")
    val_fraction = 0.1 if args.val_fraction is None and args.val_docs is None else args.val_fraction
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction: must be in [0, 1), got {val_fraction}")
    if args.shard_tokens < 1:
        raise ValueError(f"--shard-tokens: must be >= 1, got {args.shard_tokens}")
    if args.workers:
        # Read by the Rust thread pool when it starts, i.e. before the first encode_batch of this process.
        os.environ["RAYON_NUM_THREADS"] = str(args.workers)

    tok = Tokenizer.load(args.tokenizer)
    opts = text_options(args)
    out = Path(args.out)
    report = ReadReport()
    files = expand_inputs(args.input)  # fail on a missing input before writing anything
    _prepare_out(out, args.overwrite)
    _, dtype = dtype_for_vocab(tok.vocab_size)
    writers = {s: SplitWriter(out, s, tok.vocab_size, tok.fingerprint, args.shard_tokens) for s in ("train", "val")}

    # Encoding goes through tokenizers' Rust batch path, which spreads a batch over all cores with threads.
    # Measured on 2 cores (Gutenberg, 12 MB): Rust batch 6.4 MB/s, Rust batch on 1 thread 3.3 MB/s, a
    # multiprocessing.Pool(2) of single-threaded workers 1.6 MB/s: sending millions of token ids back from worker
    # processes as pickled Python ints costs more than the tokenisation itself.
    from tqdm import tqdm

    compressed = any(f.name.endswith((".gz", ".bz2", ".parquet")) for f in files)
    total = None if compressed else sum(f.stat().st_size for f in files)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenize", disable=not sys.stderr.isatty())
    t0 = time.time()
    index = 0
    for chunk in _chunks(iter_documents(args.input, opts, report)):
        for text, ids in zip(chunk, tok.encode_docs(chunk, dtype)):
            raw = text.encode("utf-8")
            if args.val_docs is not None:
                split = "val" if index < args.val_docs else "train"
            else:
                split = "val" if is_val(raw, val_fraction, args.seed) else "train"
            writers[split].add(ids, len(raw))
            index += 1
            bar.update(len(raw))
    bar.close()
    dt = time.time() - t0
    splits = {s: w.close() for s, w in writers.items()}
    if report.malformed or report.empty or report.unsupported_files:
        print(f"smelt tokenize: {report.summary()}", file=sys.stderr)
    if index == 0:
        raise ValueError(f"no documents found in {args.input}")
    rule = ({"kind": "first_docs", "val_docs": args.val_docs} if args.val_docs is not None else
            {"kind": "content_hash", "fraction": val_fraction, "seed": args.seed,
             "rule": "val iff blake2b-64(utf8 text, key=seed) < fraction * 2**64"})
    meta = {
        "format": "smelt-shards", "version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tokenizer": {"path": str(Path(args.tokenizer).resolve()), "fingerprint": tok.fingerprint,
                      "vocab_size": tok.vocab_size},
        "dtype": dtype.name, "doc_layout": "<|bos|> tokens <|eos|>", "shard_tokens": args.shard_tokens,
        "inputs": list(args.input), "files": report.files, "txt_mode": opts.txt_mode,
        "text_field": opts.text_field, "val_rule": rule, "splits": splits, "read": report.to_dict(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    n_bytes = sum(s["bytes"] for s in splits.values())
    n_tok = sum(s["tokens"] for s in splits.values())
    for s, info in splits.items():
        print(f"{s}: {info['docs']:,} docs, {info['tokens']:,} tokens, {info['bytes']:,} bytes in "
              f"{len(info['shards'])} shard(s)")
    print(f"wrote {out} in {dt:.1f}s ({n_bytes / max(dt, 1e-9) / 1e6:.2f} MB/s, {n_tok / max(dt, 1e-9) / 1e6:.2f} "
          f"M tokens/s, {n_bytes / max(n_tok, 1):.3f} bytes/token incl. BOS/EOS)")
    return 0
