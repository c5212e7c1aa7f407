"""Post-training data: readers for chat / instruction / preference / prompt files, tokenisation with the chat
template, packing, and the batch sources the training loop pulls from.

Formats (one record per jsonl line, or a JSON list; `.gz` is read transparently):
  chat        {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
  completion  {"prompt": str, "completion": str}
  ShareGPT    {"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}
  self-instr. {"instruction": str, "instances": [{"input": str, "output": str}, ...]}  (one example per instance)
  alpaca      {"instruction": str, "input"?: str, "output": str}
  GSM8K       {"question": str, "answer": str}
  preference  {"prompt"?: str|messages, "chosen": str|messages, "rejected": str|messages};
              HH-RLHF's full "\\n\\nHuman: ... \\n\\nAssistant: ..." dialogues; AlpacaEval annotations
              {"instruction", "output_1", "output_2", "preference": "1"|"2"|"0"}
Bad records (invalid JSON, unknown format, no assistant turn, too long, identical chosen/rejected, no preference)
are counted in a `BadRows` report with file:line, never dropped silently.
"""

from __future__ import annotations

import bisect
import gzip
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smelt.objectives import IGNORE

Messages = list[dict[str, str]]


@dataclass
class BadRows:
    """Counts of skipped records by reason, with the first few locations of each (file:line)."""
    counts: Counter = field(default_factory=Counter)
    where: dict[str, list[str]] = field(default_factory=dict)
    keep: int = 5

    def add(self, reason: str, loc: str) -> None:
        self.counts[reason] += 1
        locs = self.where.setdefault(reason, [])
        if len(locs) < self.keep:
            locs.append(loc)

    @property
    def total(self) -> int:
        """Records dropped (reasons ending in "(kept)" were repaired and used, so they do not count)."""
        return sum(n for reason, n in self.counts.items() if not reason.endswith("(kept)"))

    def summary(self) -> str:
        if not self.counts:
            return "no bad records"
        out = []
        for kept in (False, True):
            parts = [f"{n} {reason} (e.g. {', '.join(self.where[reason])})" for reason, n in self.counts.most_common()
                     if reason.endswith("(kept)") == kept]
            if parts:
                head = "kept after repair" if kept else f"skipped {self.total} records"
                out.append(f"{head}: " + "; ".join(parts))
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": self.where}


class BadRecord(ValueError):
    """A record that cannot be used; the message is the reason counted in BadRows."""


def split_paths(spec: str | list[str]) -> list[Path]:
    """Comma-separated files; each may also be a registered dataset name (`hh_rlhf_harmless`, `gsm8k_train`)."""
    from smelt.datasets import resolve
    items = spec if isinstance(spec, list) else [s for s in spec.split(",") if s.strip()]
    return [resolve(s.strip()) for s in items]


def iter_records(path: Path, bad: BadRows) -> Iterator[tuple[dict, str]]:
    """(record, "file:line") for a .jsonl[.gz] or a .json list file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    opener = gzip.open if path.suffix == ".gz" else open
    stem = path.name[:-3] if path.suffix == ".gz" else path.name
    with opener(path, "rt", encoding="utf-8") as f:
        if stem.endswith(".json"):
            try:
                items = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON ({e})") from None
            if not isinstance(items, list):
                raise ValueError(f"{path}: expected a JSON list of records")
            for i, rec in enumerate(items):
                loc = f"{path}[{i}]"
                if isinstance(rec, dict):
                    yield rec, loc
                else:
                    bad.add("not an object", loc)
            return
        # Iterate the file's own line breaks ("\n"): records may contain U+2028/U+0085 inside strings.
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            loc = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad.add("invalid JSON", loc)
                continue
            if isinstance(rec, dict):
                yield rec, loc
            else:
                bad.add("not an object", loc)


_ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
             "chatgpt": "assistant", "system": "system"}
_CALC = re.compile(r"<<[^>]*>>")


def _check_messages(msgs: Any) -> Messages:
    if not isinstance(msgs, list) or not msgs:
        raise BadRecord("empty conversation")
    out = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise BadRecord("malformed message")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise BadRecord("no assistant turn")
    return out


def to_conversations(rec: dict) -> list[Messages]:
    """One record → one or more conversations (self-instruct records hold several instances)."""
    if "messages" in rec:
        return [_check_messages(rec["messages"])]
    if "conversations" in rec:
        turns = rec["conversations"]
        if not isinstance(turns, list):
            raise BadRecord("malformed message")
        msgs = []
        for t in turns:
            role = _ROLE_MAP.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
            if role is None or not isinstance(t.get("value"), str):
                raise BadRecord("malformed message")
            msgs.append({"role": role, "content": t["value"]})
        return [_check_messages(msgs)]
    if "prompt" in rec and "completion" in rec:
        prompt = rec["prompt"]
        head = _check_prompt(prompt)
        return [_check_messages(head + [{"role": "assistant", "content": str(rec["completion"])}])]
    if "instruction" in rec and "instances" in rec:
        out = []
        for inst in rec["instances"] or []:
            user = rec["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
            out.append(_check_messages([{"role": "user", "content": user},
                                        {"role": "assistant", "content": inst.get("output", "")}]))
        if not out:
            raise BadRecord("no assistant turn")
        return out
    if "instruction" in rec and "output" in rec:
        user = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
        return [_check_messages([{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}])]
    if "question" in rec and "answer" in rec:
        # GSM8K's <<48/2=24>> calculator annotations are tool-call markup, not text a chat model should imitate.
        return [_check_messages([{"role": "user", "content": rec["question"]},
                                 {"role": "assistant", "content": _CALC.sub("", rec["answer"])}])]
    raise BadRecord("unknown format")


def _check_prompt(prompt: Any) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        return [m for m in prompt]
    raise BadRecord("malformed prompt")


def read_conversations(paths: str | list[str], bad: BadRows, limit: int = 0) -> list[tuple[Messages, str]]:
    out: list[tuple[Messages, str]] = []
    for path in split_paths(paths):
        for rec, loc in iter_records(path, bad):
            try:
                out.extend((c, loc) for c in to_conversations(rec))
            except BadRecord as e:
                bad.add(str(e), loc)
            if limit and len(out) >= limit:
                return out[:limit]
    return out


# ------------------------------------------------------------------------------------------------ preferences
@dataclass
class Pair:
    prompt: Messages
    chosen: str
    rejected: str
    loc: str


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh(text: str) -> Messages:
    """HH-RLHF "\\n\\nHuman: ... \\n\\nAssistant: ..." → messages."""
    parts = _HH_TURN.split(text)
    msgs = []
    for i in range(1, len(parts) - 1, 2):
        msgs.append({"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1]})
    return msgs


def _split_final(conv: Messages) -> tuple[Messages, str]:
    if not conv or conv[-1]["role"] != "assistant":
        raise BadRecord("no assistant turn")
    return conv[:-1], conv[-1]["content"]


def to_pair(rec: dict, loc: str) -> Pair:
    if "output_1" in rec and "output_2" in rec:
        pref = str(rec.get("preference", "")).strip()
        if pref.startswith("1"):
            c, r = rec["output_1"], rec["output_2"]
        elif pref.startswith("2"):
            c, r = rec["output_2"], rec["output_1"]
        else:
            raise BadRecord("no preference")
        prompt = [{"role": "user", "content": rec["instruction"]}]
    elif "chosen" in rec and "rejected" in rec:
        ch, rj = rec["chosen"], rec["rejected"]
        if "prompt" in rec:
            prompt = _check_prompt(rec["prompt"])
            c = ch if isinstance(ch, str) else _split_final(ch)[1]
            r = rj if isinstance(rj, str) else _split_final(rj)[1]
        elif isinstance(ch, list) and isinstance(rj, list):
            prompt, c = _split_final(ch)
            _, r = _split_final(rj)
        elif isinstance(ch, str) and isinstance(rj, str) and "\n\nAssistant:" in ch:
            cm, rm = parse_hh(ch), parse_hh(rj)
            prompt, c = _split_final(cm)
            _, r = _split_final(rm)
        else:
            raise BadRecord("unknown format")
    else:
        raise BadRecord("unknown format")
    if not isinstance(c, str) or not isinstance(r, str):
        raise BadRecord("malformed completion")
    if c.strip() == r.strip():
        raise BadRecord("identical chosen/rejected")
    if not c.strip() or not r.strip():
        raise BadRecord("empty completion")
    return Pair(prompt, c, r, loc)


def read_pairs(paths: str | list[str], bad: BadRows, limit: int = 0) -> list[Pair]:
    out: list[Pair] = []
    for path in split_paths(paths):
        for rec, loc in iter_records(path, bad):
            try:
                out.append(to_pair(rec, loc))
            except BadRecord as e:
                bad.add(str(e), loc)
            if limit and len(out) >= limit:
                return out
    return out


def holdout(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded (train, val) split; the val part is at least one item when fraction > 0 and there are ≥ 2."""
    if fraction <= 0 or len(items) < 2:
        return items, []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(items) * fraction))
    val_idx = set(order[:n_val])
    return [x for i, x in enumerate(items) if i not in val_idx], [x for i, x in enumerate(items) if i in val_idx]


# ------------------------------------------------------------------------------------------------ SFT tensors
def encode_conversations(tok, convs: list[tuple[Messages, str]], max_tokens: int,
                         bad: BadRows) -> list[tuple[list[int], list[int]]]:
    """(ids, mask) per conversation via the tokenizer's chat template; longer than `max_tokens` is reported."""
    out = []
    for msgs, loc in convs:
        ids, mask = tok.render_chat(msgs)
        if len(ids) > max_tokens:
            bad.add(f"too long (> {max_tokens} tokens)", loc)
            continue
        out.append((ids, mask))
    return out


def pack_rows(examples: list[tuple[list[int], list[int]]], row_len: int, pad_id: int,
              packing: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole examples into rows of `row_len` tokens (best-fit decreasing; no example is ever cut), padding the rest.
    Returns (ids, mask, segments) as (rows, row_len) tensors: mask marks tokens that are loss targets, segments
    numbers the examples of a row 1, 2, ... (0 = padding) so attention can be kept inside each example. The loss
    never crosses examples anyway: each starts with a BOS whose mask is 0."""
    rows: list[tuple[list[int], list[int]]] = []
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0])) if packing else range(len(examples))
    # (room left, row) kept sorted, so the best fit (the tightest row that still has room) is one bisect away.
    free: list[tuple[int, int]] = []
    rows_seg: list[list[int]] = []
    seg_of: list[int] = []
    for i in order:
        ids, mask = examples[i]
        assert len(ids) <= row_len, "callers drop over-long examples first"
        j = bisect.bisect_left(free, (len(ids), -1)) if packing else len(free)
        if j < len(free):
            room, slot = free.pop(j)
        else:
            rows.append(([], []))
            rows_seg.append([])
            seg_of.append(0)
            room, slot = row_len, len(rows) - 1
        rows[slot][0].extend(ids)
        rows[slot][1].extend(mask)
        seg_of[slot] += 1
        rows_seg[slot].extend([seg_of[slot]] * len(ids))
        if packing and room - len(ids) > 0:
            bisect.insort(free, (room - len(ids), slot))
    ids_t = torch.full((len(rows), row_len), pad_id, dtype=torch.long)
    mask_t = torch.zeros((len(rows), row_len), dtype=torch.bool)
    seg_t = torch.zeros((len(rows), row_len), dtype=torch.long)
    for r, (ids, mask) in enumerate(rows):
        ids_t[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask_t[r, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
        seg_t[r, :len(ids)] = torch.tensor(rows_seg[r], dtype=torch.long)
    return ids_t, mask_t, seg_t


def lm_batch(ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Rows of T+1 tokens → CausalLM's dict batch; targets outside the mask are IGNORE. With `segments`, the
    batch also carries the inputs' document ids so attention can stay inside each packed example."""
    targets = torch.where(mask[:, 1:], ids[:, 1:], torch.full_like(ids[:, 1:], IGNORE))
    batch = {"inputs": ids[:, :-1], "targets": targets}
    if segments is not None:
        batch["segments"] = segments[:, :-1]
    return batch


class RowSource:
    """Serves fixed tensors (rows of any per-row fields) in seeded, per-epoch shuffled batches; the state is
    (epoch, position) so a resumed run continues with exactly the batches it would have seen."""

    def __init__(self, fields: dict[str, torch.Tensor], batch_size: int, seed: int,
                 collate=None):
        n = {v.shape[0] for v in fields.values()}
        assert len(n) == 1, "all fields need the same number of rows"
        self.fields, self.n = fields, n.pop()
        if self.n == 0:
            raise ValueError("no training examples left after filtering (see the skipped-records report)")
        self.batch_size, self.seed = batch_size, seed
        self.collate = collate or (lambda b: b)
        self.epoch, self.pos = 0, 0
        self._order = self._perm()

    def _perm(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))

    def next_batch(self) -> Any:
        idx = []
        while len(idx) < self.batch_size:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._perm()
            take = min(self.batch_size - len(idx), self.n - self.pos)
            idx.extend(self._order[self.pos:self.pos + take].tolist())
            self.pos += take
        sel = torch.tensor(idx)
        return self.collate({k: v[sel] for k, v in self.fields.items()})

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._perm()


def iter_batches(fields: dict[str, torch.Tensor], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Every row once, in order (evaluation)."""
    n = next(iter(fields.values())).shape[0]
    for i in range(0, n, batch_size):
        yield {k: v[i:i + batch_size] for k, v in fields.items()}


# ------------------------------------------------------------------------------------------------ pair tensors
def encode_pairs(tok, pairs: list[Pair], max_tokens: int, bad: BadRows) -> dict[str, torch.Tensor]:
    """Tokenise pairs into right-padded (N, max_tokens) chosen/rejected ids and completion masks.

    The completion is the assistant reply plus its `<|end|>`. A prompt that does not fit is cut from the left
    (keeping BOS; the latest turns matter most, as TRL's keep-end truncation) and counted as "prompt truncated";
    a pair whose completion alone does not fit is skipped as too long."""
    end = tok.token_id("<|end|>")
    rows: dict[str, list] = {"chosen": [], "chosen_mask": [], "rejected": [], "rejected_mask": []}
    for p in pairs:
        prompt, _ = tok.render_chat(p.prompt, add_generation_prompt=True)
        comps = [tok.encode(p.chosen) + [end], tok.encode(p.rejected) + [end]]
        longest = max(len(c) for c in comps)
        if longest + 2 > max_tokens:
            bad.add(f"too long (completion > {max_tokens - 2} tokens)", p.loc)
            continue
        if len(prompt) + longest > max_tokens:
            bad.add("prompt truncated (kept)", p.loc)
            keep = max_tokens - longest - 1
            prompt = [prompt[0]] + prompt[len(prompt) - keep:]
        for key, comp in zip(("chosen", "rejected"), comps):
            seq = prompt + comp
            rows[key].append(seq + [tok.pad_id] * (max_tokens - len(seq)))
            rows[key + "_mask"].append([0] * len(prompt) + [1] * len(comp) + [0] * (max_tokens - len(seq)))
    if not rows["chosen"]:
        return {k: torch.zeros((0, max_tokens), dtype=torch.long if "mask" not in k else torch.bool) for k in rows}
    return {k: torch.tensor(v, dtype=torch.bool if k.endswith("mask") else torch.long) for k, v in rows.items()}
