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


_DOC_CACHE: dict[tuple, list[Doc]] = {}


def cached_docs(task: Task, path: Path, limit: int | None, parse) -> list[Doc]:
    """Parsed docs, kept per (task type, file, size, mtime, limit): repeated runs in one process (the Python API,
    benchmarks, tests) parse a 10k-item file once. A changed file has a new key, so nothing goes stale."""
    st = Path(path).stat()
    key = (type(task).__name__, str(Path(path).resolve()), st.st_size, st.st_mtime_ns, limit)
    if key not in _DOC_CACHE:
        if len(_DOC_CACHE) > 64:
            _DOC_CACHE.clear()
        _DOC_CACHE[key] = parse()
    return list(_DOC_CACHE[key])


class FoundryMC(Task):
    """llm-foundry `{"query", "choices", "gold"}` files: score `query + " " + choice` for each choice."""

    def __init__(self, name: str, dataset: str | None = None):
        self.name = name
        self.dataset = dataset or name

    def docs(self, limit: int | None = None) -> list[Doc]:
        path = data_file(self.dataset)
        return cached_docs(self, path, limit, lambda: self._parse(path, limit))

    def _parse(self, path: Path, limit: int | None) -> list[Doc]:
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
        return cached_docs(self, path, limit, lambda: self._parse(path, limit))

    def _parse(self, path: Path, limit: int | None) -> list[Doc]:
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
        return cached_docs(self, path, limit, lambda: self._parse(path, limit))

    def _parse(self, path: Path, limit: int | None) -> list[Doc]:
        out: list[Doc] = []
        item: list[str] = []
        with bz2.open(path, "rt", encoding="utf-8") as f:  # streamed: a --limit run stops early
            for lineno, line in enumerate(f, 1):
                item.append(line.rstrip("\n"))
                if len(item) < 6:
                    continue
                label = item[1].strip()
                if label not in ("0", "1", "2", "3"):
                    raise TaskError(f"{path}:{lineno - 4}: malformed row (gold label {label!r} is not 0-3)")
                out.append(Doc([_hellaswag_clean(item[0])], [_hellaswag_clean(e) for e in item[2:]], int(label)))
                item = []
                if limit is not None and len(out) >= limit:
                    return out
        if any(x.strip() for x in item):
            raise TaskError(f"{path}: ends with an incomplete item ({len(item)} of 6 lines)")
        return out

    def prompt_format(self) -> dict:
        return {"template": "{activity_label}: {ctx}{target_delimiter}{ending}", "preprocess": "lm-eval",
                **super().prompt_format()}


_LETTERS = "ABCD"


def _mmlu_subject_name(subject: str) -> str:
    return subject.replace("_", " ")


def _mmlu_subjects(root: str, split: str) -> list[str]:
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset 'mmlu': missing folder {folder} (expected {split}/<subject>_{split}.csv)")
    subjects = sorted(p.name[: -len(f"_{split}.csv")] for p in folder.glob(f"*_{split}.csv"))
    if not subjects:
        raise FileNotFoundError(f"dataset 'mmlu': no *_{split}.csv files in {folder}")
    return subjects


@lru_cache(maxsize=256)
def _mmlu_subject(root: str, split: str, subject: str) -> tuple[Doc, ...]:
    """One subject's rows (read on demand: a one-subject run does not parse all 57 files)."""
    path = Path(root) / split / f"{subject}_{split}.csv"
    if not path.exists():
        return ()
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
    return tuple(docs)


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
        root = self._root()
        known = _mmlu_subjects(root, "test")
        subjects = self.subjects or known
        unknown = [s for s in subjects if s not in known]
        if unknown:
            raise TaskError(f"mmlu: unknown subject(s) {unknown}; known: {known}")
        return [d for s in subjects for d in _mmlu_subject(root, "test", s)[:limit]]

    def fewshot_pool(self, doc: Doc) -> list[Doc]:
        return list(_mmlu_subject(self._root(), "dev", doc.group))

    def description(self, doc: Doc) -> str:
        return f"The following are multiple choice questions (with answers) about {_mmlu_subject_name(doc.group)}."

    def prompt_format(self) -> dict:
        return {"template": "{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:{target_delimiter}{letter}",
                "description": "The following are multiple choice questions (with answers) about {subject}.",
                "fewshot_source": "dev split, in order", "aggregate": "macro average over subjects",
                **super().prompt_format()}
