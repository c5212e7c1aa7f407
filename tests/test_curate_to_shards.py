"""The curation output folder is valid input for `smelt tokenize`: curate → tokenizer → shards."""

import json

from smelt.data.pipeline import run_pipeline
from smelt.tokenize_cli import main as tokenize_main
from smelt.tokenizer import Tokenizer
from test_curate_io import SIMPLE, _jsonl_gz, _recipe


def test_curated_output_feeds_tokenize(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    texts = [f"document number {i} says " + " ".join(f"word{j}" for j in range(i + 3)) for i in range(12)]
    _jsonl_gz(inp / "part.jsonl.gz", [json.dumps({"text": t, "id": str(i)}).encode() for i, t in enumerate(texts)])
    out = tmp_path / "curated"
    stats = run_pipeline(_recipe(tmp_path, SIMPLE), [str(inp)], out, workers=1, progress=False)
    assert stats["docs_out"] == 12
    tok = Tokenizer.train(texts * 3, vocab_size=280)
    tok.save(tmp_path / "tok")
    assert tokenize_main(["--input", str(out / "output"), "--tokenizer", str(tmp_path / "tok"),
                          "--out", str(tmp_path / "shards"), "--val-docs", "2"]) == 0
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert meta["splits"]["train"]["docs"] + meta["splits"]["val"]["docs"] == 12
    assert meta["splits"]["train"]["bytes"] + meta["splits"]["val"]["bytes"] == sum(len(t.encode()) for t in texts)
