"""Log-likelihood tasks: llm-foundry multiple choice, HellaSwag, MMLU, Winogrande (partial scoring), LAMBADA.

Prompts follow lm-evaluation-harness where it defines the task (HellaSwag preprocessing, MMLU's subject header and
"Answer:" format, the single-space target delimiter, acc_norm by the character length of the choice) so scores
are comparable with published numbers and the lm-eval parity test can use identical prompts.
"""

from __future__ import annotations

import bz2
import csv
import re
from functools import lru_cache
from pathlib import Path

from smelt import datasets
from smelt.eval.tasks.base import Doc, Task, TaskError, read_jsonl


def data_file(dataset: str) -> Path:
    """Resolve a registered dataset; the FileNotFoundError names the dataset, where it looked and how to get it."""
    return datasets.resolve(dataset)


class FoundryMC(Task):
    """llm-foundry `{"query", "choices", "gold"}` files: score `query + " " + choice` for each choice."""

    def __init__(self, name: str, dataset: str | None = None):
        self.name = name
        self.dataset = dataset or name

    def docs(self, limit: int | None = None) -> list[Doc]:
        path = data_file(self.dataset)
        out = []
        for lineno, row in read_jsonl(path, ("query", "choices", "gold"), limit):
            ch, gold = row["choices"], row["gold"]
            if not isinstance(ch, list) or len(ch) < 2 or not isinstance(gold, int) or not 0 <= gold < len(ch):
                raise TaskError(f"{path}:{lineno}: malformed row (need >= 2 choices and 0 <= gold < len(choices))")
            out.append(Doc([row["query"]], [str(c) for c in ch], gold))
        return out

    def prompt_format(self) -> dict:
        return {"template": "{query}{target_delimiter}{choice}", **super().prompt_format()}


class Winogrande(Task):
    """Partial scoring: the same continuation after each context option; the better-predicted option wins."""
    name = "winogrande"

    def __init__(self, name: str = "winogrande", dataset: str = "winogrande"):
        self.name, self.dataset = name, dataset

    def docs(self, limit: int | None = None) -> list[Doc]:
        path = data_file(self.dataset)
        out = []
        for lineno, row in read_jsonl(path, ("context_options", "continuation", "gold"), limit):
            opts, gold = row["context_options"], row["gold"]
            if not isinstance(opts, list) or len(opts) < 2 or not isinstance(gold, int) or not 0 <= gold < len(opts):
                raise TaskError(f"{path}:{lineno}: malformed row (need >= 2 context_options and a valid gold)")
            out.append(Doc([str(o) for o in opts], [row["continuation"]], gold))
        return out

    def prompt_format(self) -> dict:
        return {"template": "{context_option}{target_delimiter}{continuation}", "scoring": "partial",
                **super().prompt_format()}


class Lambada(Task):
    """Last-word prediction: correct when greedy decoding reproduces the whole final word."""
    kind = "lm"

    def __init__(self, name: str = "lambada", dataset: str = "lambada_openai"):
        self.name, self.dataset = name, dataset

    def docs(self, limit: int | None = None) -> list[Doc]:
        path = data_file(self.dataset)
        return [Doc([row["context"]], [row["continuation"].strip()], 0)
                for _, row in read_jsonl(path, ("context", "continuation"), limit)]

    def prompt_format(self) -> dict:
        return {"template": "{context}{target_delimiter}{word}", "metric": "greedy exact match of the last word",
                **super().prompt_format()}


def _hellaswag_clean(text: str) -> str:
    # lm-eval's preprocessing: WikiHow headers become sentence breaks, bracketed artifacts go, double spaces too.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


class HellaSwag(Task):
    name = "hellaswag"
    dataset = "hellaswag"

    def docs(self, limit: int | None = None) -> list[Doc]:
        path = data_file(self.dataset)
        with bz2.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % 6:
            raise TaskError(f"{path}: {len(lines)} lines is not a multiple of 6 (ctx, label, 4 endings per item)")
        out = []
        for start in range(0, len(lines), 6):
            label = lines[start + 1].strip()
            if label not in ("0", "1", "2", "3"):
                raise TaskError(f"{path}:{start + 2}: malformed row (gold label {label!r} is not 0-3)")
            ctx = _hellaswag_clean(lines[start])
            out.append(Doc([ctx], [_hellaswag_clean(e) for e in lines[start + 2:start + 6]], int(label)))
            if limit is not None and len(out) >= limit:
                break
        return out

    def prompt_format(self) -> dict:
        return {"template": "{activity_label}: {ctx}{target_delimiter}{ending}", "preprocess": "lm-eval",
                **super().prompt_format()}


_LETTERS = "ABCD"


def _mmlu_subject_name(subject: str) -> str:
    return subject.replace("_", " ")


@lru_cache(maxsize=4)
def _mmlu_split(root: str, split: str) -> dict[str, list[Doc]]:
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset 'mmlu': missing folder {folder} (expected {split}/<subject>_{split}.csv)")
    out: dict[str, list[Doc]] = {}
    for path in sorted(folder.glob(f"*_{split}.csv")):
        subject = path.name[: -len(f"_{split}.csv")]
        docs = []
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != ["question", "choice0", "choice1", "choice2", "choice3", "answer"]:
                raise TaskError(f"{path}:1: unexpected header {header}")
            for row in reader:
                line = reader.line_num
                if len(row) != 6 or row[5].strip() not in ("0", "1", "2", "3"):
                    raise TaskError(f"{path}:{line}: malformed row (need 6 fields and answer 0-3, got {row[:1]}...)")
                q, choices = row[0].strip(), [c.strip() for c in row[1:5]]
                body = q + "".join(f"\n{_LETTERS[j]}. {c}" for j, c in enumerate(choices)) + "\nAnswer:"
                docs.append(Doc([body], list(_LETTERS), int(row[5]), group=subject))
        out[subject] = docs
    if not out:
        raise FileNotFoundError(f"dataset 'mmlu': no *_{split}.csv files in {folder}")
    return out


class MMLU(Task):
    """57 subjects; 5-shot from each subject's dev split in order (as in the original paper and lm-eval)."""
    default_shots = 5
    max_shots = 5

    def __init__(self, name: str = "mmlu", subjects: list[str] | None = None):
        self.name = name
        self.subjects = subjects

    def _root(self) -> str:
        return str(data_file("mmlu"))

    def docs(self, limit: int | None = None) -> list[Doc]:
        """Items of every subject; `limit` applies per subject so a quick run still covers all of them."""
        test = _mmlu_split(self._root(), "test")
        subjects = self.subjects or sorted(test)
        unknown = [s for s in subjects if s not in test]
        if unknown:
            raise TaskError(f"mmlu: unknown subject(s) {unknown}; known: {sorted(test)}")
        return [d for s in subjects for d in test[s][:limit]]

    def fewshot_pool(self, doc: Doc) -> list[Doc]:
        return _mmlu_split(self._root(), "dev").get(doc.group, [])

    def description(self, doc: Doc) -> str:
        return f"The following are multiple choice questions (with answers) about {_mmlu_subject_name(doc.group)}."

    def prompt_format(self) -> dict:
        return {"template": "{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:{target_delimiter}{letter}",
                "description": "The following are multiple choice questions (with answers) about {subject}.",
                "fewshot_source": "dev split, in order", "aggregate": "macro average over subjects",
                **super().prompt_format()}
