"""`smelt report`: markdown table, bar chart, centred mean and the emergence plot from two model sizes."""

import json

import pytest

from conftest import data_path
from eval_fixtures import tiny_model, tiny_tokenizer
from smelt.cli import main as cli_main
from smelt.eval import evaluate, write_results
from smelt.eval.report import centered, core_score
from smelt.train.checkpoint import save_model_files


def make_run(root, d_model, steps):
    """A run folder as pretraining leaves it: config.toml, checkpoints/step-N (+ state.json), tokenizer/."""
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, d_model=d_model)
    ckpt = root / "checkpoints" / f"step-{steps}"
    save_model_files(ckpt, model)
    (ckpt / "state.json").write_text(json.dumps({"step": steps}))
    (root / "checkpoints" / "latest").write_text(f"step-{steps}\n")
    (root / "config.toml").write_text("[data]\nbatch_size = 4\nseq_len = 64\n\n[train]\ngrad_accum = 2\n")
    tok.save(root / "tokenizer")
    return root


def test_centered_and_core():
    assert centered(0.25, 0.25) == 0.0 and centered(1.0, 0.25) == 1.0
    assert centered(0.625, 0.25) == pytest.approx(0.5)
    core = core_score({"a": {"acc": 0.5, "random_baseline": 0.5}, "b": {"acc": 1.0, "random_baseline": 0.0},
                       "bpb:x": {"bits_per_byte": 2.0}})
    assert core["centered_mean"] == pytest.approx(0.5) and set(core["centered"]) == {"a", "b"}


def test_report_with_emergence_plot(tmp_path, capsys):
    data_path("eval/copa.jsonl")
    files = []
    for d_model, steps in ((32, 10), (64, 20)):
        run = make_run(tmp_path / f"run-d{d_model}", d_model, steps)
        out = tmp_path / f"d{d_model}.json"
        assert cli_main(["eval", "--model", str(run), "--tasks", "copa,winogrande,bpb:wikitext2", "--limit", "4",
                         "--out", str(out), "--quiet"]) == 0
        res = json.loads(out.read_text())
        assert res["model"]["train_tokens"] == steps * 4 * 64 * 2
        assert res["model"]["train_flops"] == 6 * res["model"]["non_embedding_params"] * steps * 512
        files.append(str(out))
    rc = cli_main(["report", *files, "--out", str(tmp_path / "rep")])
    assert rc == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| copa | acc |" in md and "CORE (centred mean)" in md and "bits_per_byte" in md
    assert "run-d32" in md and "run-d64" in md
    for png in ("scores.png", "emergence.png"):
        data = (tmp_path / "rep" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_single_model_has_no_emergence_and_bad_input(tmp_path):
    tok = tiny_tokenizer()
    res = evaluate(tiny_model(tok.vocab_size), tok, f"bpb:{__file__}", limit=2, progress=False)
    f = write_results(res, tmp_path / "r.json")
    assert cli_main(["report", f"mine={f}", "--out", str(tmp_path / "rep")]) == 0
    assert not (tmp_path / "rep" / "emergence.png").exists()
    assert "| mine |" in (tmp_path / "rep" / "report.md").read_text()
    (tmp_path / "bad.json").write_text("{}")
    assert cli_main(["report", str(tmp_path / "bad.json")]) == 1
    assert cli_main(["report", str(tmp_path / "missing.json")]) == 1
