"""Curation throughput: smelt vs datatrove on the same documents, in one run, one process each.

    python bench/bench_curate.py [--pages 400]

1. Extracts the shared web pages once (smelt's trafilatura step) so both sides see identical text.
2. Heuristic chain (Gopher repetition → Gopher quality → C4 → FineWeb quality): docs/s per worker for each,
   the ratio, and how many keep/drop decisions agree.
3. MinHash dedup (5-grams, 14x8): smelt's signatures + union-find vs datatrove's four-stage pipeline
   (signatures → buckets → clusters → filter) run with its local executor; docs/s and documents removed.

Needs the `curate` and `curate-test` extras and SMELT_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHAIN = ["gopher_repetition", "gopher_quality", "c4", "fineweb_quality"]


def extract(pages: int) -> list[dict]:
    from smelt.data.base import build_step
    from smelt.data.readers import InputUnit, read_unit
    root = Path(os.environ.get("SMELT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    tar = root / "web" / "trafilatura_html.tar.gz"
    ext = build_step({"type": "extract", "timeout_s": 0}, 0)
    ext.ensure_setup()
    out = []
    t0 = time.perf_counter()
    for d in read_unit(InputUnit(str(tar), 0, pages), []):
        if ext.process(d) is None:
            out.append({"text": d.text, "id": d.id})
    dt = time.perf_counter() - t0
    print(f"extraction (trafilatura via smelt): {pages} pages → {len(out)} docs in {dt:.1f}s "
          f"({pages / dt:.1f} pages/s)")
    return out


def bench_filters(docs: list[dict]) -> None:
    from datatrove.data import Document as DTDoc
    from datatrove.pipeline import filters as F

    from smelt.data.base import build_step
    from smelt.data.document import Document
    steps = [build_step({"type": t}, i) for i, t in enumerate(CHAIN)]
    for s in steps:
        s.ensure_setup()
    dt_chain = [F.GopherRepetitionFilter(), F.GopherQualityFilter(), F.C4QualityFilter(), F.FineWebQualityFilter()]
    dt_chain[0].filter(DTDoc(text="warm up the spaCy tokenizer.", id="w"))

    t0 = time.perf_counter()
    ours = []
    for d in docs:
        doc = Document(d["text"], d["id"], {})
        ours.append(all(s.process(doc) is None for s in steps))
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = []
    for d in docs:
        doc = DTDoc(text=d["text"], id=d["id"], metadata={})
        theirs.append(all(f.filter(doc) is True for f in dt_chain))
    t_theirs = time.perf_counter() - t0
    agree = sum(a == b for a, b in zip(ours, theirs)) / len(docs)
    print(f"\nheuristic filter chain ({len(docs)} docs, 1 worker each)")
    print(f"  {'':10} {'docs/s':>10} {'kept':>6}")
    print(f"  {'smelt':10} {len(docs) / t_ours:>10.1f} {sum(ours):>6}")
    print(f"  {'datatrove':10} {len(docs) / t_theirs:>10.1f} {sum(theirs):>6}")
    print(f"  ratio smelt/datatrove: {t_theirs / t_ours:.2f}x   identical keep/drop decisions: {100 * agree:.2f}%")


def bench_minhash(docs: list[dict], tmp: Path) -> None:
    import numpy as np

    from smelt.data.dedup.minhash import MinHasher, cluster
    t0 = time.perf_counter()
    h = MinHasher(5, 14, 8, seed=1)
    roots = cluster(np.stack([h.bands(d["text"]) for d in docs]))
    t_ours = time.perf_counter() - t0
    removed_ours = sum(r != i for i, r in enumerate(roots))

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    inp = tmp / "in"
    inp.mkdir()
    with gzip.open(inp / "docs.jsonl.gz", "wt") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)
    stages = [
        [JsonlReader(str(inp)), MinhashDedupSignature(output_folder=str(tmp / "sigs"), config=cfg)],
        [MinhashDedupBuckets(input_folder=str(tmp / "sigs"), output_folder=str(tmp / "buckets"), config=cfg)],
        [MinhashDedupCluster(input_folder=str(tmp / "buckets"), output_folder=str(tmp / "remove"), config=cfg)],
        [JsonlReader(str(inp)), MinhashDedupFilter(input_folder=str(tmp / "remove")),
         JsonlWriter(str(tmp / "out"))],
    ]
    t0 = time.perf_counter()
    for i, pipe in enumerate(stages):
        # the bucket stage needs one task per band (run one after another: workers=1)
        LocalPipelineExecutor(pipeline=pipe, tasks=cfg.num_buckets if i == 1 else 1, workers=1,
                              logging_dir=str(tmp / f"logs{i}"), skip_completed=False).run()
    t_theirs = time.perf_counter() - t0
    kept_theirs = sum(1 for f in (tmp / "out").glob("*") for _ in gzip.open(f, "rt"))
    print(f"\nMinHash dedup, 5-grams 14x8 ({len(docs)} docs, 1 worker each)")
    print(f"  {'':10} {'docs/s':>10} {'removed':>8}")
    print(f"  {'smelt':10} {len(docs) / t_ours:>10.1f} {removed_ours:>8}")
    print(f"  {'datatrove':10} {len(docs) / t_theirs:>10.1f} {len(docs) - kept_theirs:>8}")
    print(f"  ratio smelt/datatrove: {t_theirs / t_ours:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=400, help="web pages to use (the tar has 1,033)")
    a = ap.parse_args()
    try:
        import datatrove  # noqa: F401
    except ImportError:
        raise SystemExit("datatrove is not installed: pip install -e '.[curate,curate-test]'")
    import logging
    logging.disable(logging.WARNING)
    from loguru import logger
    logger.remove()  # datatrove logs every stage; keep the table readable
    docs = extract(a.pages)
    bench_filters(docs)
    with tempfile.TemporaryDirectory() as tmp:
        bench_minhash(docs, Path(tmp))


if __name__ == "__main__":
    main()
