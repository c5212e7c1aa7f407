"""Parity with lm-evaluation-harness: the same tiny model, the same items, identical prompts → the same accuracy
(and per-item log-likelihoods). lm-eval runs through smelt's adapter, whose log-likelihoods take the plain
one-row-per-request path; `smelt eval` uses the shared-context tree scorer and its own task formatting."""

import os

import pytest

from conftest import data_path
from eval_fixtures import tiny_model, tiny_tokenizer
from smelt.eval import evaluate

lm_eval = pytest.importorskip("lm_eval")

N = 30
TASKS = {
    # llm-foundry multiple choice: one context, several continuations
    "arc_easy": ("eval/arc_easy.jsonl", 'doc_to_text: "{{query}}"\ndoc_to_choice: "{{choices}}"\n'
                 'doc_to_target: "{{gold}}"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n'),
    # Winogrande partial scoring: several contexts, one continuation (lm-eval's "multiple input" form)
    "winogrande": ("eval/winogrande.jsonl", 'doc_to_text: "{{gold}}"\ndoc_to_choice: "{{context_options}}"\n'
                   'doc_to_target: "{{continuation}}"\nmetric_list:\n  - metric: acc\n'),
}


def lm_eval_run(tmp_path, model, tok, names):
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from smelt.eval.lm_eval_adapter import SmeltLM
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    for name in names:
        rel, body = TASKS[name]
        (task_dir / f"{name}.yaml").write_text(
            f"task: parity_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {data_path(rel)}\ntest_split: test\noutput_type: multiple_choice\n"
            f'target_delimiter: " "\n{body}')
    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    lm = SmeltLM(model=model, tokenizer=tok, batch_size=8)
    return simple_evaluate(model=lm, tasks=[f"parity_{n}" for n in names], num_fewshot=0, limit=N,
                           task_manager=tm, log_samples=True, bootstrap_iters=0)


def test_lm_eval_parity(tmp_path):
    for rel, _ in TASKS.values():
        data_path(rel)
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_seq_len=256)
    ours = evaluate(model, tok, list(TASKS), shots=0, limit=N, batch_size=8, progress=False)["results"]
    theirs = lm_eval_run(tmp_path, model, tok, list(TASKS))
    for name in TASKS:
        ref = theirs["results"][f"parity_{name}"]
        assert ours[name]["n"] == N == len(theirs["samples"][f"parity_{name}"])
        assert abs(ours[name]["acc"] - ref["acc,none"]) < 1e-6, (name, ours[name]["acc"], ref["acc,none"])
        if "acc_norm,none" in ref:
            assert abs(ours[name]["acc_norm"] - ref["acc_norm,none"]) < 1e-6
    # Per-item log-likelihoods: lm-eval's plain path vs smelt's tree scorer on smelt's own prompts.
    from smelt.eval.evaluator import Evaluator
    from smelt.eval.harness import Scorer
    from smelt.eval.tasks import get_task
    ev = Evaluator(Scorer(model, tok, batch_size=8), progress=False)
    task = get_task("arc_easy")
    docs = task.docs()[:N]
    samples = sorted(theirs["samples"]["parity_arc_easy"], key=lambda s: s["doc_id"])
    for doc, sample in zip(docs, samples):
        lls = [r.logprob for r in ev.scorer.loglikelihood(ev.mc_requests(task, doc, []))]
        ref = [float(r[0]) for r in sample["filtered_resps"]]
        assert max(abs(a - b) for a, b in zip(lls, ref)) < 1e-4, (lls, ref)
