"""Model-based filters (perplexity band with a tiny smelt model, hashed n-gram quality classifier, toxicity),
decontamination against the eval sets, and the report (funnel table + PNG)."""

import gzip
import json
import random

import pytest

from conftest import data_path
from smelt.data.base import build_step
from smelt.data.document import Document
from smelt.data.filters.model_based import PerplexityFilter, make_score_fn
from smelt.data.pipeline import load_recipe, run_pipeline
from smelt.data.stats import report

ENGLISH = ("The committee met on Tuesday to discuss the new budget for the public library and agreed to extend "
           "opening hours during the winter months. ")


def test_bits_per_byte_scorer_with_tiny_smelt_model():
    torch = pytest.importorskip("torch")
    from smelt.model import build_model, preset
    model = build_model(preset("debug"))  # untrained, vocab 4096 >= 256: byte ids work without a tokenizer
    score = make_score_fn(model, None, max_tokens=64)
    bpb = score([ENGLISH, "x", "abc" * 50])
    assert len(bpb) == 3 and bpb[0] > 0 and bpb[1] != bpb[1]  # one byte: nothing to predict → NaN
    assert abs(bpb[0] - 12.0) < 1.5  # untrained: ~log2(4096) bits per byte-token
    del torch


def test_perplexity_band_drops_outliers(tmp_path):
    # a fake scorer (bits per byte = share of 'z' characters) shows the percentile band logic
    PerplexityFilter.score_fn = staticmethod(lambda texts: [t.count("z") / len(t) for t in texts])
    try:
        texts = [ENGLISH + "z" * i for i in range(20)]
        inp = tmp_path / "a.jsonl.gz"
        with gzip.open(inp, "wt") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"text": t, "id": str(i)}) + "\n")
        recipe = {"step": [{"type": "perplexity", "low_percentile": 10, "high_percentile": 90}]}
        stats = run_pipeline(recipe, [str(inp)], tmp_path / "out", progress=False)
        s = stats["steps"]["perplexity"]
        assert s["dropped_perplexity_low"] == 2 and s["dropped_perplexity_high"] == 2 and s["kept"] == 16
        assert s["summary"]["high_bpb"] > s["summary"]["low_bpb"]
    finally:
        PerplexityFilter.score_fn = None


def test_quality_classifier_train_save_load(tmp_path):
    rng = random.Random(0)
    good_words = "research study results analysis evidence method data theory shows significant".split()
    bad_words = "click buy free cheap deal now win casino offer bonus".split()
    pos = [" ".join(rng.choice(good_words) for _ in range(40)) for _ in range(60)]
    neg = [" ".join(rng.choice(bad_words) for _ in range(40)) for _ in range(60)]
    for name, texts in (("pos", pos), ("neg", neg)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    path = tmp_path / "q.npz"
    from smelt.data.cli import main
    assert main(["train-quality", "--pos", str(tmp_path / "pos.jsonl"), "--neg", str(tmp_path / "neg.jsonl"),
                 "--out", str(path), "--buckets", str(1 << 14), "--epochs", "3"]) == 0
    step = build_step({"type": "quality_classifier", "model_path": str(path), "threshold": 0.5}, 0)
    step.ensure_setup()
    good = Document("the study results and analysis show significant evidence", "g")
    assert step.process(good) is None and good.metadata["quality_score"] > 0.5
    assert step.process(Document("click now for a free casino bonus offer", "b")) == "low_quality"


def test_toxicity_word_list():
    data_path("lists/badwords_en.txt")
    tox = build_step({"type": "toxicity", "min_hits": 2, "max_fraction": 0.05}, 0)
    tox.ensure_setup()
    assert tox.process(Document(ENGLISH, "a")) is None
    assert tox.process(Document("porn porn porn and more xxx stuff", "b")) == "toxic"


def test_decontamination_against_eval_sets(tmp_path, monkeypatch):
    data_path("eval/gsm8k_test.jsonl")
    monkeypatch.setenv("SMELT_CACHE_DIR", str(tmp_path))
    step = build_step({"type": "decontaminate", "files": ["gsm8k_test.jsonl", "arc_easy.jsonl"]}, 0)
    step.ensure_setup()
    q = json.loads(data_path("eval/gsm8k_test.jsonl").open().readline())["question"]
    assert step.process(Document("Homework help: " + q + " Thanks!", "a")) == "contaminated"
    assert step.process(Document(ENGLISH * 3, "b")) is None
    flag = build_step({"type": "decontaminate", "files": ["gsm8k_test.jsonl"], "mode": "flag"}, 0)
    flag.ensure_setup()
    d = Document(q, "c")
    assert flag.process(d) is None and d.metadata["contaminated"] is True


def test_report_prints_funnel_and_saves_png(tmp_path):
    inp = tmp_path / "a.jsonl.gz"
    with gzip.open(inp, "wt") as f:
        for i in range(10):
            f.write(json.dumps({"text": ENGLISH * (i % 3) + "x", "id": str(i)}) + "\n")
    out = tmp_path / "out"
    run_pipeline({"step": [{"type": "length", "min_chars": 100}, {"type": "exact_dedup"}]}, [str(inp)], out,
                 progress=False)
    text = report(out)
    assert "length" in text and "exact_dedup" in text and "too_short" in text
    assert (out / "funnel.png").stat().st_size > 1000
    from smelt.data.cli import main
    assert main(["report", str(out), "--no-png"]) == 0


def test_default_recipe_is_packaged_and_valid():
    r = load_recipe("fineweb")
    types = [s["type"] for s in r.steps_spec]
    assert types[:3] == ["url", "extract", "language"] and "minhash_dedup" in types


def test_load_scorer_goes_through_load_pretrained(monkeypatch):
    pytest.importorskip("torch")
    import sys
    import types
    from smelt.data.filters.model_based import load_scorer
    from smelt.model import build_model, preset
    calls = []

    def load_pretrained(path):  # stands in for smelt.train.checkpoint.load_pretrained
        calls.append(path)
        return build_model(preset("debug")), None
    fake = types.ModuleType("smelt.train.checkpoint")
    fake.load_pretrained = load_pretrained
    monkeypatch.setitem(sys.modules, "smelt.train.checkpoint", fake)
    if "smelt.train" not in sys.modules:
        monkeypatch.setitem(sys.modules, "smelt.train", types.ModuleType("smelt.train"))
    score = load_scorer("ckpt/step-10", max_tokens=32)
    assert calls == ["ckpt/step-10"] and score([ENGLISH])[0] > 0
