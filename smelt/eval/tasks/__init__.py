"""Task registry: a task name → a Task object. `get_task` raises TaskError listing the known names."""

from __future__ import annotations

from typing import Callable

from smelt.eval.tasks.base import Doc, Task, TaskError, select_shots

_FOUNDRY_MC = ["arc_easy", "arc_challenge", "piqa", "copa", "boolq", "commonsense_qa", "siqa"]
# Corpora with a short name for bits-per-byte; any registered dataset or file path works as `bpb:<name|path>`.
BPB_ALIASES = {"wikitext2": "wikitext2_valid", "tinyshakespeare": "tinyshakespeare", "gutenberg": "gutenberg_val"}


def _factories() -> dict[str, Callable[[], Task]]:
    from smelt.eval.tasks import generative as g
    from smelt.eval.tasks.code import HumanEval
    from smelt.eval.tasks import multiple_choice as mc
    from smelt.eval.tasks.lm import BitsPerByte
    f: dict[str, Callable[[], Task]] = {n: (lambda n=n: mc.FoundryMC(n)) for n in _FOUNDRY_MC}
    f.update({
        "hellaswag": mc.HellaSwag,
        "winogrande": mc.Winogrande,
        "lambada": mc.Lambada,
        "mmlu": mc.MMLU,
        "gsm8k": lambda: g.GSM8K("gsm8k", cot_shots=True),
        "gsm8k_zeroshot_cot": lambda: g.GSM8K("gsm8k_zeroshot_cot", cot_shots=False),
        "math": g.MATH,
        "humaneval": HumanEval,
    })
    f.update({f"bpb:{alias}": (lambda d=d, a=alias: BitsPerByte(f"bpb:{a}", d)) for alias, d in BPB_ALIASES.items()})
    return f


def known_tasks() -> list[str]:
    return sorted(_factories()) + ["mmlu:<subject>", "bpb:<registered corpus or text file>"]


def get_task(name: str) -> Task:
    f = _factories()
    if name in f:
        return f[name]()
    if name.startswith("mmlu:"):
        from smelt.eval.tasks.multiple_choice import MMLU
        return MMLU(name, subjects=[s for s in name[5:].split("+") if s])
    if name.startswith(("bpb:", "ppl:")):
        from smelt.eval.tasks.lm import BitsPerByte
        return BitsPerByte(name, name[4:])
    raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")


__all__ = ["Doc", "Task", "TaskError", "get_task", "known_tasks", "select_shots"]
