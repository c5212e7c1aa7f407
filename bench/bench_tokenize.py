"""Tokenisation throughput: the Rust batch path `smelt tokenize` uses vs the alternatives, in the same run.

    python bench/bench_tokenize.py [--input gutenberg_train] [--tokenizer DIR] [--rounds 3] [--workers 2]

Methods (each encodes the same paragraph documents; rounds alternate so machine load hits all of them alike):
  loop        Tokenizer.encode one document at a time (the baseline)
  rust-batch  Tokenizer.encode_batch: the Rust thread pool over all cores (what `smelt tokenize` does)
  pool        multiprocessing.Pool(workers), each worker encoding a chunk single-threaded and sending ids back
Prints MB/s of UTF-8 text and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smelt.textio import iter_documents
from smelt.tokenizer import Tokenizer

_WORKER: Tokenizer | None = None


def _init(path: str) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process: the pool is the parallelism
    _WORKER = Tokenizer.load(path)


def _encode_chunk(chunk: list[str]) -> list[list[int]]:
    assert _WORKER is not None
    return _WORKER.encode_batch(chunk)


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time of this process (all threads) plus the given live processes (Linux /proc; 0 for them elsewhere).

    Wall time depends on what else the machine is doing; CPU seconds per MB is the load-independent cost.
    """
    t = os.times()
    total = t.user + t.system
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default="gutenberg_train", help="file or dataset name (default gutenberg_train)")
    p.add_argument("--tokenizer", default="", help="tokenizer folder (default: train a 4096-token one here)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--chunk", type=int, default=2048, help="documents per batch / pool task")
    p.add_argument("--max-mb", type=float, default=12.0, help="use at most this much text (default 12 MB)")
    args = p.parse_args()

    # Paragraphs of the books: realistic document sizes for web-like data and enough of them to batch.
    docs: list[str] = []
    n_bytes = 0
    for text in iter_documents([args.input]):
        for d in text.split("\n\n"):
            if d.strip() and n_bytes < args.max_mb * 1e6:
                docs.append(d)
                n_bytes += len(d.encode("utf-8"))
    tok_dir = args.tokenizer
    if not tok_dir:
        tok_dir = str(Path(tempfile.gettempdir()) / "smelt-bench-tok")
        Tokenizer.train(docs, vocab_size=4096).save(tok_dir)
    tok = Tokenizer.load(tok_dir)
    chunks = [docs[i:i + args.chunk] for i in range(0, len(docs), args.chunk)]
    print(f"{len(docs):,} documents, {n_bytes / 1e6:.1f} MB, {os.cpu_count()} CPUs, workers={args.workers}")

    pool = get_context("spawn").Pool(args.workers, initializer=_init, initargs=(tok_dir,))
    methods = {
        "loop": lambda: [tok.encode(d) for d in docs],
        "rust-batch": lambda: [ids for c in chunks for ids in tok.encode_batch(c)],
        "pool": lambda: [ids for r in pool.imap(_encode_chunk, chunks) for ids in r],
    }
    pids = [p.pid for p in pool._pool]  # type: ignore[attr-defined]
    reference = methods["loop"]()
    times: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            c, t = _cpu_seconds(pids), time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(_cpu_seconds(pids) - c)
            assert out == reference, f"{name} encodes differently"
    pool.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average during the run: {load:.1f} (wall-clock rates drop when other work shares the CPUs)")
    base = statistics.median(times["loop"])
    for name, ts in times.items():
        med = statistics.median(ts)
        cpu_mb = statistics.median(cpu[name]) / (n_bytes / 1e6)
        print(f"{name:>10}: {n_bytes / med / 1e6:6.2f} MB/s  {base / med:5.2f}x vs loop  {cpu_mb:5.2f} CPU-s/MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
