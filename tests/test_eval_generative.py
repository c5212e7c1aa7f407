"""Generative tasks: answer extraction, pass@k, and the whole HumanEval / GSM8K path with a scripted model."""

import math

import pytest

from conftest import data_path
from eval_fixtures import tiny_model, tiny_tokenizer
from smelt.eval import evaluate
from smelt.eval.harness import Scorer
from smelt.eval.tasks.code import HumanEval, extract_code
from smelt.eval.tasks.generative import GSM8K, extract_gsm8k, extract_math, normalize_math, pass_at_k


def test_pass_at_k_matches_closed_form():
    for n in range(1, 25):
        for c in range(n + 1):
            for k in range(1, n + 1):
                closed = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12), (n, c, k)
    assert pass_at_k(200, 0, 100) == 0.0 and pass_at_k(200, 200, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 10)


def test_answer_extraction():
    assert extract_gsm8k("so 3 + 4 = 7. The answer is 1,234.") == "1234"
    assert extract_gsm8k("blah #### 42") == "42"
    assert extract_gsm8k("she has $18.00 left") == "18"
    assert extract_gsm8k("no numbers") == ""
    assert extract_math("so the area is $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert extract_math("\\boxed{x^{2}+1}") == "x^{2}+1"
    for a, b in [("\\dfrac{1}{2}", "0.5"), ("\\frac12", "\\frac{1}{2}"), ("x = 3", "3"), ("10\\%", "10"),
                 ("3/4", "\\frac{3}{4}"), ("\\left( 1, 2 \\right)", "(1,2)"), ("5 \\text{ cm}", "5"), (".5", "0.5")]:
        assert normalize_math(a) == normalize_math(b), (a, b)
    assert normalize_math("\\frac{1}{3}") != normalize_math("\\frac{1}{2}")
    assert extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1\n"


def scripted(monkeypatch, answer_for):
    """Replace generation by a function of the decoded prompt, n samples per prompt."""
    def fake(self, prompts, max_new_tokens, temperature=0.0, stop_tokens=None, seed=None, stop_strings=()):
        return [self.tok.encode(answer_for(self.tok.decode(p), j)) for j, p in enumerate(prompts)]
    monkeypatch.setattr(Scorer, "generate", fake)


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(monkeypatch):
    data_path("eval/HumanEval.jsonl.gz")
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_seq_len=1024)
    docs = {d.contexts[0]: d for d in HumanEval().docs()}

    def answer(prompt, j):
        doc = docs[prompt.replace("<|bos|>", "", 1)]
        return doc.answer if j % 2 == 0 else "    return None\n"
    scripted(monkeypatch, answer)
    r = evaluate(model, tok, "humaneval", limit=3, num_samples=4, progress=False)["results"]["humaneval"]
    # 2 of 4 samples pass on every problem
    assert r["pass@1"] == pytest.approx(0.5) and r["num_samples"] == 4
    assert r["statuses"] == {"passed": 6, "failed": 6}
    scripted(monkeypatch, lambda p, j: docs[p.replace("<|bos|>", "", 1)].answer)
    r = evaluate(model, tok, "humaneval", limit=3, progress=False)["results"]["humaneval"]
    assert r["pass@1"] == 1.0 and r["temperature"] == 0.0


def test_gsm8k_exact_match_and_shots_exclude_item(monkeypatch):
    data_path("eval/gsm8k_test.jsonl")
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_seq_len=4096)
    task = GSM8K()
    targets = {d.contexts[0]: d.target for d in task.docs(4)}
    seen = []

    def answer(prompt, j):
        seen.append(prompt)
        question = prompt.rsplit("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0]
        return f" Some work. The answer is {targets[question]}.\n\nQuestion: more"
    scripted(monkeypatch, answer)
    r = evaluate(model, tok, "gsm8k", limit=4, progress=False)["results"]["gsm8k"]
    assert r["acc"] == 1.0 and r["shots"] == 8 and r["n"] == 4
    assert all(p.count("Question: ") == 9 for p in seen)
    for p in seen:  # the evaluated question appears once: as the final question, never among the shots
        q = p.rsplit("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0]
        assert p.count(q) == 1


def test_generation_runs_on_a_real_tiny_model():
    data_path("eval/gsm8k_test.jsonl")
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_seq_len=256)
    sc = Scorer(model, tok)
    outs = sc.generate([tok.encode("The cat"), tok.encode("A dog")], max_new_tokens=5, temperature=0.0)
    assert all(len(o) <= 5 for o in outs)
    again = sc.generate([tok.encode("The cat")], max_new_tokens=5, temperature=0.0)
    assert again[0] == outs[0]  # greedy is deterministic and batch-independent
    r = evaluate(model, tok, "gsm8k_zeroshot_cot", limit=2, max_new_tokens=8, chat=True, progress=False)
    assert r["results"]["gsm8k_zeroshot_cot"]["format"] == "chat"
