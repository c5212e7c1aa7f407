"""HumanEval: complete a Python function, run its unit tests in the sandbox, report pass@k."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from smelt import datasets
from smelt.eval.sandbox import run_python
from smelt.eval.tasks.base import Doc, TaskError, read_jsonl
from smelt.eval.tasks.generative import GenerativeTask, _generate, pass_at_k

if TYPE_CHECKING:  # pragma: no cover
    from smelt.eval.evaluator import Evaluator


def extract_code(text: str) -> str:
    """A chat model answers in prose around a ```python block; take the block (or the text if there is none)."""
    m = re.findall(r"```(?:python|py)?\n(.*?)(?:```|$)", text, flags=re.S)
    return m[0] if m else text


class HumanEval(GenerativeTask):
    """Zero-shot: the prompt is the function signature and docstring; the completion runs with the task's tests.
    `num_samples` n (default 1, greedy) gives pass@k for every k in (1, 10, 100) with k <= n, by the unbiased
    estimator; with n > 1 the temperature defaults to 0.8."""
    name = "humaneval"
    max_new_tokens = 384
    # Codex's stop sequences: a new top-level statement ends the function body.
    stop_strings = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")

    @staticmethod
    @lru_cache(maxsize=1)
    def _load() -> list[Doc]:
        path = datasets.resolve("humaneval")
        docs = []
        for _, row in read_jsonl(path, ("task_id", "prompt", "test", "entry_point")):
            docs.append(Doc([row["prompt"]], answer=row.get("canonical_solution", ""), target=row["entry_point"],
                            meta={"task_id": row["task_id"], "test": row["test"]}))
        return docs

    def docs(self, limit: int | None = None) -> list[Doc]:
        return self._load()

    def prompt_text(self, doc: Doc, shots: list[Doc]) -> str:
        return doc.contexts[0]

    def chat_question(self, doc: Doc) -> str:
        return f"Complete this Python function. Reply with the whole function in a ```python block.\n\n" \
               f"```python\n{doc.contexts[0]}```"

    def program(self, doc: Doc, completion: str, chat: bool) -> str:
        body = doc.contexts[0] + "\n" + extract_code(completion) if chat else doc.contexts[0] + completion
        return f"{body}\n\n{doc.meta['test']}\n\ncheck({doc.target})\n"

    def run(self, ev: "Evaluator", k: int, limit: int | None) -> dict[str, Any]:
        if k:
            raise TaskError(f"{self.name}: zero-shot only (got --shots {k})")
        docs, _ = ev._docs(self, limit)
        n = int(ev.gen_kwargs.get("num_samples") or 1)
        temp = ev.gen_kwargs.get("temperature")
        temperature = float(temp if temp is not None else (0.8 if n > 1 else 0.0))
        timeout = float(ev.gen_kwargs.get("timeout") or 10.0)
        prompts = [self.prompt_ids(ev, d, []) for d in docs]
        outputs = _generate(ev, self, prompts, n=n, temperature=temperature)
        jobs = [(i, self.program(d, o, ev.chat)) for i, (d, outs) in enumerate(zip(docs, outputs)) for o in outs]
        # Programs are independent processes; a few at a time keeps the CPU busy while one waits on a timeout.
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda job: run_python(job[1], timeout=timeout), jobs))
        passed = [0] * len(docs)
        statuses: dict[str, int] = {}
        for (i, _), r in zip(jobs, results):
            passed[i] += r.passed
            statuses[r.status] = statuses.get(r.status, 0) + 1
        ks = [kk for kk in (1, 10, 100) if kk <= n]
        res: dict[str, Any] = {"n": len(docs), "num_samples": n, "temperature": temperature,
                               "random_baseline": 0.0, "statuses": statuses}
        from smelt.eval.evaluator import mean_stderr
        for kk in ks:
            per = [pass_at_k(n, c, kk) for c in passed]
            res[f"pass@{kk}"] = sum(per) / len(per)
            res[f"pass@{kk}_stderr"] = mean_stderr(per)
        res["acc"], res["acc_stderr"] = res["pass@1"], res["pass@1_stderr"]  # uniform column for reports
        res["examples"] = [{"task_id": d.meta["task_id"], "completion": outputs[i][0], "passed": passed[i]}
                           for i, d in enumerate(docs[:3])]
        return res

    def prompt_format(self) -> dict:
        return {"template": "{prompt}", "stop": list(self.stop_strings),
                "program": "prompt + completion + test + check(entry_point)", "metric": "pass@k (unbiased)"}
