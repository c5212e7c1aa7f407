"""Verifiable rewards and RL prompt sets.

A reward function takes `(completion, answer, prompt)` (strings; the completion without special tokens) and returns
a float. Built in: `next_digit` (a synthetic task a tiny model can learn), `gsm8k` (exact match of the final
number). Anything else is a user function named `package.module:function` or `path/to/file.py:function`.

Prompt files: jsonl/json records with {"prompt": str|messages, "answer": str} or GSM8K's {"question", "answer"}
(the answer's final number after `####` is the target); preference files give their prompts (for PPO with a
reward model). The name `next-digit` instead of a file generates the
synthetic task: the user says a digit d (0-8), the right reply is d+1.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smelt.posttrain.data import BadRecord, BadRows, Messages, iter_records, split_paths, to_pair

RewardFn = Callable[[str, str, str], float]
SYNTHETIC_TASK = "next-digit"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Prompt:
    messages: Messages
    answer: str
    loc: str


def gsm8k_final(text: str) -> str | None:
    """The final number of a GSM8K-style answer: after the last `####` if present, else the last number."""
    if "####" in text:
        text = text.rsplit("####", 1)[1]
        found = _NUMBER.findall(text)
        return _norm(found[0]) if found else None
    found = _NUMBER.findall(text)
    return _norm(found[-1]) if found else None


def _norm(num: str) -> str:
    num = num.replace(",", "")
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    return num


def gsm8k_reward(completion: str, answer: str, prompt: str = "") -> float:
    """1.0 when the completion's final number equals the reference's, else 0.0."""
    got, want = gsm8k_final(completion), gsm8k_final(answer)
    return float(got is not None and got == want)


def next_digit_reward(completion: str, answer: str, prompt: str = "") -> float:
    """Synthetic task: 1.0 for exactly the right digit; 0.2 for a reply that at least starts with a digit (a
    shaped step a random tiny model can find by chance, so learning starts)."""
    text = completion.strip()
    if text == answer:
        return 1.0
    if text.startswith(answer):
        return 0.6
    return 0.2 if text[:1].isdigit() else 0.0


BUILTIN: dict[str, RewardFn] = {"gsm8k": gsm8k_reward, "next_digit": next_digit_reward}


def load_reward_fn(spec: str) -> RewardFn:
    """A built-in name, `module:function` (importable) or `file.py:function`."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        raise ValueError(f"rl.reward: {spec!r} is neither a built-in ({sorted(BUILTIN)}) nor module:function")
    mod_name, fn_name = spec.rsplit(":", 1)
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.exists():
            raise FileNotFoundError(f"rl.reward: {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise ValueError(f"rl.reward: cannot import {mod_name!r} ({e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"rl.reward: {mod_name} has no function {fn_name!r}")
    return fn


def synthetic_prompts(n: int) -> list[Prompt]:
    return [Prompt([{"role": "user", "content": str(i % 9)}], str(i % 9 + 1), f"{SYNTHETIC_TASK}[{i}]")
            for i in range(n)]


def read_prompts(paths: str, bad: BadRows, limit: int = 0) -> list[Prompt]:
    if paths.strip() == SYNTHETIC_TASK:
        return synthetic_prompts(limit or 9)
    out: list[Prompt] = []
    for path in split_paths(paths):
        for rec, loc in iter_records(path, bad):
            try:
                if "question" in rec and "answer" in rec:
                    final = gsm8k_final(str(rec["answer"]))
                    if final is None:
                        raise BadRecord("no final answer")
                    out.append(Prompt([{"role": "user", "content": str(rec["question"])}], final, loc))
                elif "chosen" in rec or "output_1" in rec:  # a preference record: its prompt, no answer
                    out.append(Prompt(to_pair(rec, loc).prompt, "", loc))
                elif "prompt" in rec:
                    p = rec["prompt"]
                    msgs = [{"role": "user", "content": p}] if isinstance(p, str) else p
                    if not isinstance(msgs, list) or not msgs:
                        raise BadRecord("malformed prompt")
                    out.append(Prompt(msgs, str(rec.get("answer", "")), loc))
                else:
                    raise BadRecord("unknown format")
            except BadRecord as e:
                bad.add(str(e), loc)
            if limit and len(out) >= limit:
                return out
    return out
