"""The Ray executor (optional extra `ray`) gives output identical to the local executor."""

import gzip
import json
import random

import pytest

from smelt.data.pipeline import run_pipeline


def _inputs(tmp_path):
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghij") for _ in range(5)) for _ in range(300)]
    inp = tmp_path / "in"
    inp.mkdir()
    base = [" ".join(rng.choice(vocab) for _ in range(120)) + "." for _ in range(20)]
    for f in range(4):
        with gzip.open(inp / f"p{f}.jsonl.gz", "wt") as fh:
            for i in range(12):
                text = base[(f * 7 + i) % 20]
                if i % 3 == 0:
                    text = " ".join(rng.choice(vocab) for _ in range(i + 2))  # short: dropped by length
                elif i % 3 == 2:
                    text = text.replace(text.split()[5], "changed", 1)  # a near-duplicate
                fh.write(json.dumps({"text": text, "id": f"{f}-{i}", "url": f"http://x.org/{f}/{i}"}) + "\n")
    return inp


RECIPE = {"step": [{"type": "length", "min_words": 10}, {"type": "pii"}, {"type": "exact_dedup"},
                   {"type": "minhash_dedup"}, {"type": "fineweb_quality"}]}


def test_ray_output_identical_to_local(tmp_path):
    ray = pytest.importorskip("ray")
    from smelt.data.ray_executor import ray_map
    inp = _inputs(tmp_path)
    local = run_pipeline(RECIPE, [str(inp)], tmp_path / "local", workers=2, progress=False)
    try:
        remote = run_pipeline(RECIPE, [str(inp)], tmp_path / "ray", workers=2, progress=False,
                              map_fn=ray_map(2, progress=False))
    finally:
        ray.shutdown()
    for sub in ("output", "removed/length", "removed/exact_dedup", "removed/minhash_dedup"):
        a = sorted((tmp_path / "local" / sub).glob("*"))
        b = sorted((tmp_path / "ray" / sub).glob("*"))
        assert [p.name for p in a] == [p.name for p in b] and a
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b)), sub
    def strip(stats):  # timings differ run to run; everything else must match
        out = {}
        for name, st in stats["steps"].items():
            st = {k: v for k, v in st.items() if "time" not in k}
            if "summary" in st:
                st["summary"] = {k: v for k, v in st["summary"].items() if "time" not in k}
            out[name] = st
        return out

    assert strip(local) == strip(remote)
    assert local["docs_out"] == remote["docs_out"] > 0
