"""Sampling completions for RL with the model's KV cache.

`sample` has the same signature as the package's generation entry point (`smelt.infer.generate.generate`) so the
two are interchangeable; RL only calls `generate_completions`, the one place to switch. Prompts are batched by
length: the model has no padding mask, and GRPO's groups (many samples of one prompt) share a length anyway.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from smelt.model import KVCache


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop tokens once the mass before them already exceeds top_p (the top token always survives).
        drop = probs.cumsum(-1) - probs > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def sample(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, stop_tokens: list[int] | None = None,
           seed: int | None = None) -> list[list[int]]:
    """New tokens for each prompt (a stop token, when hit, is kept as the last token). temperature 0 = greedy."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
    stops = torch.tensor(sorted(set(stop_tokens or [])), device=device, dtype=torch.long)
    out: list[list[int]] = [[] for _ in prompts]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    for length, idx in sorted(by_len.items()):
        n_new = min(max_new_tokens, model.cfg.max_seq_len - length)
        if n_new <= 0:
            raise ValueError(f"prompt of {length} tokens leaves no room under model.max_seq_len="
                             f"{model.cfg.max_seq_len}")
        x = torch.tensor([prompts[i] for i in idx], device=device, dtype=torch.long)
        cache = KVCache.empty(model.cfg, len(idx), length + n_new, device, dtype)
        logits = model(x, cache=cache)[:, -1].float()
        done = torch.zeros(len(idx), dtype=torch.bool, device=device)
        toks = []
        for _ in range(n_new):
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(_filter_logits(logits / temperature, top_k, top_p), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
            toks.append(torch.where(done, torch.full_like(nxt, -1), nxt))
            if stops.numel():
                done |= torch.isin(nxt, stops)
            if bool(done.all()):
                break
            logits = model(nxt.unsqueeze(-1), cache=cache)[:, -1].float()
        rows = torch.stack(toks, 1).tolist()
        for j, i in enumerate(idx):
            out[i] = [t for t in rows[j] if t >= 0]
    model.train(was)
    return out


def generate_completions(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int,
                         temperature: float, top_k: int, top_p: float, stop_tokens: list[int],
                         seed: int | None) -> list[list[int]]:
    """The RL stage's one call into generation (swap the implementation here)."""
    return sample(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                  stop_tokens=stop_tokens, seed=seed)
