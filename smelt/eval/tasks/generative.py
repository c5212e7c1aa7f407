"""Generative tasks: GSM8K (8-shot chain of thought, or zero-shot "let's think step by step"), MATH (normalised
final answer) and HumanEval (pass@k with the unbiased estimator, programs run in the sandbox)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from smelt import datasets
from smelt.eval.generation import cut_at_stop
from smelt.eval.tasks.base import Doc, Task, TaskError, read_jsonl, select_shots

if TYPE_CHECKING:  # pragma: no cover
    from smelt.eval.evaluator import Evaluator


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed as a
    running product so large n does not overflow."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


class GenerativeTask(Task):
    kind = "generate"
    stop_strings: tuple[str, ...] = ()
    max_new_tokens = 256

    def question(self, doc: Doc) -> str:
        return doc.contexts[0]

    def solution(self, doc: Doc) -> str:
        """The worked answer shown after a few-shot question."""
        return doc.answer

    def prompt_text(self, doc: Doc, shots: list[Doc]) -> str:
        parts = [self.question(s) + " " + self.solution(s) for s in shots] + [self.question(doc)]
        return self.fewshot_delimiter.join(parts)

    def prompt_ids(self, ev: "Evaluator", doc: Doc, shots: list[Doc]) -> list[int]:
        sc = ev.scorer
        if ev.chat:
            msgs: list[dict] = []
            for s in shots:
                msgs += [{"role": "user", "content": self.chat_question(s)},
                         {"role": "assistant", "content": self.chat_solution(s)}]
            msgs.append({"role": "user", "content": self.chat_question(doc)})
            return sc.tok.render_chat(msgs, add_generation_prompt=True)[0]
        return sc.prefix() + sc.encode(self.prompt_text(doc, shots))

    def chat_question(self, doc: Doc) -> str:
        return doc.contexts[0]

    def chat_solution(self, doc: Doc) -> str:
        return self.solution(doc)

    def score(self, doc: Doc, output: str) -> tuple[float, str]:
        """(1.0 or 0.0, the extracted answer)."""
        raise NotImplementedError

    def run(self, ev: "Evaluator", k: int, limit: int | None) -> dict[str, Any]:
        docs, pool = ev._docs(self, limit, k)
        if not docs:
            raise TaskError(f"{self.name}: no items to evaluate")
        index = {id(d): j for j, d in enumerate(pool)}
        prompts = [self.prompt_ids(ev, d, select_shots(self, pool, index.get(id(d), i), k, ev.seed))
                   for i, d in enumerate(docs)]
        outputs = _generate(ev, self, prompts, n=1, temperature=float(ev.gen_kwargs.get("temperature") or 0.0))
        acc, examples = [], []
        for doc, outs in zip(docs, outputs):
            ok, extracted = self.score(doc, outs[0])
            acc.append(ok)
            if len(examples) < 3:
                examples.append({"output": outs[0], "extracted": extracted, "target": doc.target, "correct": ok})
        from smelt.eval.evaluator import mean_stderr
        return {"n": len(docs), "acc": sum(acc) / len(acc), "exact_match": sum(acc) / len(acc),
                "acc_stderr": mean_stderr(acc), "random_baseline": 0.0, "examples": examples}


def _generate(ev: "Evaluator", task: GenerativeTask, prompts: list[list[int]], n: int,
              temperature: float) -> list[list[str]]:
    """n decoded outputs per prompt, cut at the task's stop strings; progress counts prompts."""
    from smelt.eval.evaluator import _bar
    sc = ev.scorer
    max_new = int(ev.gen_kwargs.get("max_new_tokens") or task.max_new_tokens)
    stop_tokens = [sc.tok.token_id("<|end|>")] if ev.chat and hasattr(sc.tok, "token_id") else []
    out: list[list[str]] = []
    bar = _bar(len(prompts), task.name, ev.progress)
    for i, p in enumerate(prompts):
        # One prompt per call, its n samples as one batch: equal lengths, so no padding in the KV cache.
        gens = sc.generate([p] * n, max_new, temperature=temperature, stop_tokens=stop_tokens,
                           seed=ev.seed * 100_003 + i, stop_strings=task.stop_strings)
        out.append([cut_at_stop(sc.tok.decode(g), task.stop_strings) for g in gens])
        bar.update(1)
    bar.close()
    return out


# ---- GSM8K ---------------------------------------------------------------------------------------------------------
_NUM = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def _clean_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f == int(f) else str(f)


def extract_gsm8k(text: str) -> str:
    """The final number: after "The answer is" or "####" when present, else the last number in the text."""
    for pat in (r"[Tt]he answer is\s*:?\s*(-?\$?\d[\d,]*(?:\.\d+)?)", r"####\s*(-?\$?\d[\d,]*(?:\.\d+)?)"):
        m = re.findall(pat, text)
        if m:
            return _clean_number(m[-1])
    nums = _NUM.findall(text)
    return _clean_number(nums[-1]) if nums else ""


class GSM8K(GenerativeTask):
    """`cot_shots`: 8-shot chain of thought from the train split (seeded sample); else zero-shot with
    "Let's think step by step." Exact match of the final number."""
    sample_pool = True
    stop_strings = ("\n\nQuestion:", "Question:", "\n\n\n")

    def __init__(self, name: str = "gsm8k", cot_shots: bool = True):
        self.name, self.cot_shots = name, cot_shots
        self.default_shots = 8 if cot_shots else 0

    @staticmethod
    @lru_cache(maxsize=2)
    def _load(dataset: str) -> list[Doc]:
        path = datasets.resolve(dataset)
        out = []
        for lineno, row in read_jsonl(path, ("question", "answer")):
            if "####" not in row["answer"]:
                raise TaskError(f"{path}:{lineno}: malformed row (answer has no '#### <number>')")
            work, final = row["answer"].rsplit("####", 1)
            cot = re.sub(r"<<.*?>>", "", work).strip() + f" The answer is {final.strip()}."
            out.append(Doc([row["question"]], answer=cot, target=_clean_number(final)))
        return out

    def docs(self, limit: int | None = None) -> list[Doc]:
        return self._load("gsm8k")[:limit]

    def fewshot_pool(self, doc: Doc) -> list[Doc]:
        return self._load("gsm8k_train")

    def question(self, doc: Doc) -> str:
        return f"Question: {doc.contexts[0]}\nAnswer:"

    def prompt_text(self, doc: Doc, shots: list[Doc]) -> str:
        text = super().prompt_text(doc, shots)
        return text if self.cot_shots else text + " Let's think step by step."

    def chat_question(self, doc: Doc) -> str:
        return doc.contexts[0] + ("" if self.cot_shots else "\nLet's think step by step.")

    def score(self, doc: Doc, output: str) -> tuple[float, str]:
        got = extract_gsm8k(output)
        return float(got != "" and got == doc.target), got

    def prompt_format(self) -> dict:
        return {"template": "Question: {question}\\nAnswer:" + ("" if self.cot_shots else
                                                                 " Let's think step by step."),
                "shot": "Question: {question}\\nAnswer: {worked solution} The answer is {number}.",
                "fewshot_source": "train split, seeded sample", "metric": "exact match of the final number",
                "stop": list(self.stop_strings), "fewshot_delimiter": self.fewshot_delimiter}


# ---- MATH ----------------------------------------------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        m = re.match(r"\\boxed ([^\s$]+)", text[i:])
        return m.group(1) if m else None
    depth = 0
    for e in range(j, len(text)):
        if text[e] == "{":
            depth += 1
        elif text[e] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:e]
    return None


def _fix_fracs(s: str) -> str:
    # \frac12 → \frac{1}{2}, \frac1{2} → \frac{1}{2}
    parts = s.split("\\frac")
    out = parts[0]
    for p in parts[1:]:
        out += "\\frac"
        if p.startswith("{") or len(p) < 2:
            out += p
            continue
        a, rest = p[0], p[1:]
        if rest.startswith("{"):
            out += "{" + a + "}" + rest
        else:
            out += "{" + a + "}{" + rest[0] + "}" + rest[1:]
    return out


def normalize_math(s: str) -> str:
    """Hendrycks-style answer normalisation so equivalent spellings compare equal (\\dfrac vs \\frac, 0.5 vs .5,
    units, spaces, \\left/\\right, a/b vs \\frac{a}{b}, "x = 3" vs "3")."""
    s = s.strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "").replace("\\\\", "\\").replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "").replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\\(?:text|mbox|mathrm)\{\s*[a-zA-Z ]*\}$", "", s).strip()  # trailing units
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if re.fullmatch(r"[a-zA-Z]\s*=\s*.+", s):
        s = s.split("=", 1)[1]
    s = _fix_fracs(s.replace(" ", ""))
    if s == "0.5":
        s = "\\frac{1}{2}"
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s


def extract_math(text: str) -> str:
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    m = re.findall(r"[Tt]he (?:final )?answer is\s*:?\s*\$?([^\n$]+?)\$?\s*(?:\.|$)", text)
    if m:
        return m[-1]
    dollars = re.findall(r"\$([^$]+)\$", text)
    return dollars[-1] if dollars else text.strip().split("\n")[-1] if text.strip() else ""


class MATH(GenerativeTask):
    """MATH (Hendrycks): 4-shot worked solutions drawn from the same file (seeded, never the item), answer in
    \\boxed{}; correct when the normalised final answer equals the normalised reference."""
    name = "math"
    default_shots = 4
    max_new_tokens = 384
    stop_strings = ("\n\nProblem:", "Problem:")

    @staticmethod
    @lru_cache(maxsize=1)
    def _load() -> list[Doc]:
        path = datasets.resolve("math")
        return [Doc([row["context"]], answer=row.get("chain_of_thought") or f"The answer is ${row['answer']}$.",
                    target=str(row["answer"]), group=str(row.get("category", "")))
                for _, row in read_jsonl(path, ("context", "answer"))]

    def docs(self, limit: int | None = None) -> list[Doc]:
        return self._load()

    def question(self, doc: Doc) -> str:
        return f"Problem:\n{doc.contexts[0]}\n\nSolution:"

    def score(self, doc: Doc, output: str) -> tuple[float, str]:
        got = extract_math(output)
        return float(bool(got) and normalize_math(got) == normalize_math(doc.target)), got

    def prompt_format(self) -> dict:
        return {"template": "Problem:\\n{problem}\\n\\nSolution:", "shot": "... {worked solution with \\boxed{}}",
                "fewshot_source": "same file, seeded, never the item", "metric": "normalised final answer",
                "stop": list(self.stop_strings), "fewshot_delimiter": self.fewshot_delimiter}
