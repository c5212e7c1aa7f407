"""Sampling for generative tasks, behind one function so a faster engine can replace it without touching tasks.

`generate_ids` uses `smelt.infer.generate.generate` when that module exists, else a small KV-cache loop here.
Either way, prompts of equal length (the n samples of one HumanEval problem, say) decode together as one batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import torch

if TYPE_CHECKING:  # pragma: no cover
    from smelt.eval.harness import Scorer


def _engine():
    try:
        from smelt.infer.generate import generate  # type: ignore[import-not-found]
        return generate
    except ImportError:
        return None


@torch.no_grad()
def _kv_loop(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, temperature: float,
             stop: set[int], seed: int | None, decode=None, stop_strings: Sequence[str] = ()) -> list[list[int]]:
    from smelt.model import KVCache
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    out: list[list[int]] = [[] for _ in prompts]
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for n, idx in by_len.items():
        cache = KVCache.empty(model.cfg, len(idx), n + max_new_tokens, device, dtype)
        x = torch.tensor([prompts[i] for i in idx], device=device)
        done = torch.zeros(len(idx), dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            logits = model(x, cache=cache)[:, -1].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
            else:
                nxt = logits.argmax(-1)
            for r, i in enumerate(idx):
                if not done[r]:
                    out[i].append(int(nxt[r]))
            done |= torch.tensor([int(t) in stop for t in nxt.tolist()], device=device)
            # Stop strings are checked every few steps: decoding every row at every step costs more than the
            # handful of extra tokens a late check generates.
            if stop_strings and decode is not None and (step + 1) % 8 == 0:
                for r, i in enumerate(idx):
                    if not done[r] and any(s in decode(out[i]) for s in stop_strings):
                        done[r] = True
            if bool(done.all()):
                break
            x = nxt[:, None]
    return out


def generate_ids(scorer: "Scorer", prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                 stop_tokens: Iterable[int] | None = None, seed: int | None = None,
                 stop_strings: Sequence[str] = ()) -> list[list[int]]:
    """Generated ids per prompt, cut at the first stop token (kept out) or stop string (text after it dropped)."""
    model, tok = scorer.model, scorer.tok
    stop = set(stop_tokens or []) | {tok.eos_id}
    max_new_tokens = min(max_new_tokens, scorer.max_len - 1)
    keep = scorer.max_len - max_new_tokens  # prompts lose tokens on the left to leave room for the answer
    prompts = [list(p)[-keep:] for p in prompts]
    engine = _engine()
    if engine is not None:
        outs = engine(model, prompts, max_new_tokens, temperature=max(temperature, 0.0),
                      stop_tokens=sorted(stop), seed=seed)
    else:
        outs = _kv_loop(model, prompts, max_new_tokens, temperature, stop, seed, tok.decode, stop_strings)
    result = []
    for ids in outs:
        ids = list(ids)
        for j, t in enumerate(ids):
            if t in stop:
                ids = ids[:j]
                break
        result.append(ids)
    return result


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Text up to the earliest stop string (generation ran on; the tail is not part of the answer)."""
    cut = len(text)
    for s in stop_strings:
        j = text.find(s)
        if j != -1:
            cut = min(cut, j)
    return text[:cut]
