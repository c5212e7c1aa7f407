"""What every task shares: documents, few-shot selection, prompt rendering and careful file reading."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


class TaskError(ValueError):
    """Bad task name or malformed task data; the message names the task, or the file and line."""


@dataclass
class Doc:
    """One evaluation item in a uniform shape.

    Multiple choice: `contexts` holds one prompt shared by every choice, or one per choice for partial scoring
    (Winogrande: the choices are different contexts followed by the same `choices[0]` continuation).
    Generative tasks put the question in `contexts[0]` and the reference in `answer`."""
    contexts: list[str]
    choices: list[str] = field(default_factory=list)
    gold: int = 0
    answer: str = ""  # worked solution shown in few-shot examples (generative tasks)
    target: str = ""  # the reference final answer a generation is scored against
    group: str = ""  # sub-task (MMLU subject, MATH category) for per-group scores
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return len(self.contexts) > 1


def read_jsonl(path: Path, required: tuple[str, ...], limit: int | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each row; a row that is not JSON or lacks a required key raises TaskError naming
    the file and line. Iterating the file object (not `splitlines`) keeps U+2028 inside strings intact."""
    import gzip
    opener = gzip.open if str(path).endswith(".gz") else open
    n = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{lineno}: malformed row (not JSON: {e.msg})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path}:{lineno}: malformed row (expected a JSON object)")
            missing = [k for k in required if k not in row]
            if missing:
                raise TaskError(f"{path}:{lineno}: malformed row (missing {missing}; has {sorted(row)})")
            yield lineno, row
            n += 1
            if limit is not None and n >= limit:
                return


class Task:
    """Base task. Subclasses set `kind` ("mc", "lm", "generate", "bpb") and implement `docs`."""
    name: str = ""
    kind: str = "mc"
    default_shots: int = 0
    target_delimiter: str = " "  # between a context and its continuation
    fewshot_delimiter: str = "\n\n"  # between few-shot examples
    max_shots: int | None = None  # cap from the data (MMLU's dev split has 5 rows per subject)
    sample_pool: bool = False  # draw shots from a separate split with the seeded RNG instead of in order

    def docs(self, limit: int | None = None) -> list[Doc]:
        raise NotImplementedError

    def fewshot_pool(self, doc: Doc) -> list[Doc] | None:
        """Examples for `doc` from a separate split, or None to draw from the evaluated docs (never the doc)."""
        return None

    def description(self, doc: Doc) -> str:
        """Text before the few-shot examples (MMLU's subject header)."""
        return ""

    def example(self, doc: Doc) -> str:
        """A solved example as it appears among the shots."""
        ctx = doc.contexts[doc.gold] if doc.partial else doc.contexts[0]
        return ctx + self.target_delimiter + (doc.choices[0] if doc.partial else doc.choices[doc.gold])

    def prompt_format(self) -> dict[str, Any]:
        return {"target_delimiter": self.target_delimiter, "fewshot_delimiter": self.fewshot_delimiter}


def select_shots(task: Task, docs: list[Doc], i: int, k: int, seed: int) -> list[Doc]:
    """k few-shot examples for docs[i], a pure function of (seed, task, i).

    A separate split is used in its published order (MMLU dev, as the paper does) or sampled with the seeded RNG
    (GSM8K train, as lm-eval does). Otherwise
    examples come from the evaluated docs themselves, drawn with a per-item RNG, excluding the item and any exact
    duplicate of it, so no item is ever shown its own answer."""
    if k <= 0:
        return []
    doc = docs[i]
    pool = task.fewshot_pool(doc)
    rng = random.Random(f"{seed}:{task.name}:{i}")
    if pool is not None:
        if task.sample_pool:
            order = rng.sample(range(len(pool)), min(len(pool), k + 8))
            return [pool[j] for j in order if pool[j].contexts != doc.contexts][:k]
        return [d for d in pool if d.contexts != doc.contexts][:k]
    # Rejection sampling over indices: O(k) per item where building the candidate list would be O(len(docs)).
    order = rng.sample(range(len(docs)), min(len(docs), k + 8))
    picked = [j for j in order if j != i and docs[j].contexts != doc.contexts][:k]
    if len(picked) < k:  # many duplicates of the item: fall back to a full scan
        rest = [j for j in range(len(docs)) if j != i and j not in picked and docs[j].contexts != doc.contexts]
        picked += rng.sample(rest, min(k - len(picked), len(rest)))
    return [docs[j] for j in picked]
