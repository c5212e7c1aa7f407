"""`smelt eval` end to end on a tiny model: tasks, results.json, few-shot hygiene and bad-input errors."""

import json

import pytest

from conftest import data_path
from eval_fixtures import save_tiny, tiny_model, tiny_tokenizer
from smelt.cli import main as cli_main
from smelt.eval import evaluate
from smelt.eval.tasks import Doc, TaskError, get_task, select_shots
from smelt.eval.tasks.multiple_choice import FoundryMC


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    return tiny_model(tok.vocab_size), tok


def test_cli_writes_results_json(tmp_path, capsys):
    data_path("eval/arc_easy.jsonl")
    model_dir = save_tiny(tmp_path / "model")
    out = tmp_path / "results.json"
    rc = cli_main(["eval", "--model", str(model_dir), "--tasks", "arc_easy,winogrande,lambada", "--limit", "6",
                   "--shots", "1", "--batch-size", "4", "--out", str(out), "--quiet"])
    assert rc == 0
    res = json.loads(out.read_text())
    arc = res["results"]["arc_easy"]
    for key in ("acc", "acc_norm", "acc_stderr", "n", "shots", "seed", "prompt_format", "random_baseline"):
        assert key in arc, key
    assert arc["n"] == 6 and arc["shots"] == 1 and arc["seed"] == 1234
    assert 0.0 <= arc["acc"] <= 1.0
    assert "acc_norm" not in res["results"]["winogrande"]  # partial scoring has no length normalisation
    assert res["model"]["params"] > 0
    assert res["core"]["centered_mean"] is not None
    assert "arc_easy" in capsys.readouterr().out


def test_python_api_matches_cli_and_is_deterministic(tmp_path, tiny):
    data_path("eval/copa.jsonl")
    model, tok = tiny
    a = evaluate(model, tok, "copa,hellaswag", shots=2, limit=5, batch_size=3, progress=False)
    b = evaluate(model, tok, ["copa", "hellaswag"], shots=2, limit=5, batch_size=7, progress=False,
                 share_context=False)
    for t in ("copa", "hellaswag"):
        assert a["results"][t]["acc"] == b["results"][t]["acc"]
        assert a["results"][t]["acc_norm"] == b["results"][t]["acc_norm"]


def test_mmlu_groups_and_shots(tiny):
    data_path("eval/mmlu/test/anatomy_test.csv")
    model, tok = tiny
    r = evaluate(model, tok, "mmlu:anatomy+virology", limit=3, progress=False)["results"]["mmlu:anatomy+virology"]
    assert r["shots"] == 5 and r["n"] == 6
    assert set(r["groups"]) == {"anatomy", "virology"}
    assert r["acc"] == pytest.approx((r["groups"]["anatomy"]["acc"] + r["groups"]["virology"]["acc"]) / 2)


def test_chat_format_and_bpb_file(tmp_path, tiny):
    data_path("eval/piqa.jsonl")
    model, tok = tiny
    text = tmp_path / "t.txt"
    text.write_text("The cat sat on the mat. " * 40)
    r = evaluate(model, tok, "piqa", limit=4, chat=True, progress=False)["results"]
    assert r["piqa"]["format"] == "chat"
    bpb = evaluate(model, tok, f"bpb:{text}", progress=False)["results"][f"bpb:{text}"]
    assert bpb["bytes"] == len(text.read_text().encode()) and bpb["bits_per_byte"] > 0
    assert bpb["tokens"] == len(tok.encode(text.read_text()))  # every token scored once (BOS conditions the first)
    part = evaluate(model, tok, f"bpb:{text}", limit=2, progress=False)["results"][f"bpb:{text}"]
    assert part["tokens"] < bpb["tokens"] and part["bytes"] < bpb["bytes"]  # limit = windows of a single file


def test_fewshot_never_contains_item_and_is_seeded():
    task = FoundryMC("dummy")
    docs = [Doc([f"q{i}"], ["a", "b"], 0) for i in range(30)] + [Doc(["q0"], ["a", "b"], 1)]  # a duplicate of q0
    for i in range(len(docs)):
        shots = select_shots(task, docs, i, 5, seed=1)
        assert len(shots) == 5
        assert all(s.contexts != docs[i].contexts for s in shots)
        assert shots == select_shots(task, docs, i, 5, seed=1)
    assert any(select_shots(task, docs, i, 5, seed=1) != select_shots(task, docs, i, 5, seed=2) for i in range(5))


def test_unknown_task_lists_known(tiny, capsys, tmp_path):
    with pytest.raises(TaskError, match="known tasks: .*arc_easy"):
        get_task("arc_eazy")
    rc = cli_main(["eval", "--model", str(save_tiny(tmp_path / "m")), "--tasks", "nope", "--quiet"])
    assert rc == 1 and "unknown task 'nope'" in capsys.readouterr().err


def test_missing_data_names_dataset_path_and_fix(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("SMELT_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("SMELT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as e:
        get_task("arc_challenge").docs()
    msg = str(e.value)
    assert "arc_challenge" in msg and str(tmp_path / "mirror") in msg and "download" in msg


def test_malformed_row_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n{"query": "q", "choices": ["a"]\n')
    with pytest.raises(TaskError, match=f"{bad}:2: malformed row"):
        FoundryMC("bad", str(bad)).docs()
    bad.write_text('{"query": "q", "choices": ["a", "b"], "gold": 5}\n')
    with pytest.raises(TaskError, match=f"{bad}:1: malformed row"):
        FoundryMC("bad", str(bad)).docs()


def test_model_that_cannot_load_says_why(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = cli_main(["eval", "--model", str(tmp_path / "empty"), "--tasks", "copa", "--quiet"])
    assert rc == 1 and "no model.safetensors" in capsys.readouterr().err
