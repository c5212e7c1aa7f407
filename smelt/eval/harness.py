"""Scoring engine: log-likelihoods of continuations, rolling perplexity / bits-per-byte, greedy generation.

Speed comes from three habits (the same ones lm-evaluation-harness uses, plus context sharing):
- **Shared context.** A multiple-choice item asks for log p(choice_i | context) for every choice. Instead of running
  `context + choice_i` once per choice, the context and all choices are packed into one row as a small tree: the
  context tokens once, then each choice's tokens, with an attention mask that lets a choice see the context and
  itself but not its siblings, and RoPE positions that restart after the context for every choice. One forward
  pass then yields every choice's log-likelihood; the result is the same as separate passes (to float rounding).
- **Shared prefixes across items.** Items whose prompts start with the same tokens (MMLU's header and five fixed
  dev-split shots) are batched together; the common prefix runs once and its keys/values serve every row.
- **Length sorting.** Rows are sorted longest first so a batch holds rows of similar length (little padding), and
  the first batch is the largest, so an out-of-memory error shows up at once rather than at the end.
- **Cached tokenisation.** Few-shot prefixes repeat across items; `encode` memoises every string it has seen.
Only the hidden states at positions that predict a continuation token go through the output head, which on a small
model saves a large share of the work (the vocabulary matmul rivals the whole trunk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

Progress = Callable[[int], None]  # called with the number of requests just finished
# Rows whose contexts share at least this many leading tokens are batched together and the shared part is run
# once (few-shot prompts with fixed shots, such as MMLU's dev examples behind the subject header).
PREFIX_KEY = 32


@dataclass
class LLResult:
    """Log-likelihood of one continuation: summed log-prob (nats), and whether greedy decoding reproduces it."""
    logprob: float
    greedy: bool
    n_tokens: int


def _is_packable(model: torch.nn.Module) -> bool:
    """The tree forward reuses the smelt Transformer's modules; any other model takes the plain path."""
    need = ("embed", "layers", "norm", "logits", "rope_cos", "rope_sin", "cfg")
    return all(hasattr(model, n) for n in need)


class Scorer:
    """Wraps a causal LM and its tokenizer; every task asks it for log-likelihoods or generations."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 16, device: str | torch.device | None = None,
                 max_len: int | None = None, share_context: bool = True, add_bos: bool = True):
        self.model = model.eval()
        self.tok = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        cfg = getattr(model, "cfg", None)
        self.max_len = int(max_len or getattr(cfg, "max_seq_len", 2048))
        self.share_context = share_context and _is_packable(model)
        self.add_bos = add_bos
        self._cache: dict[str, list[int]] = {}
        self.truncated_continuations = 0

    # ---- tokenisation ---------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tok.encode(text)
            self._cache[text] = ids
        return ids

    def prefix(self) -> list[int]:
        return [self.tok.bos_id] if self.add_bos else []

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation), split the way lm-evaluation-harness splits them.

        Trailing spaces of the context move to the continuation (BPE glues a space to the next word), the pair is
        encoded as one string, and the continuation is whatever follows the context's own token count. The context
        starts with BOS, so an empty context still gives the first continuation token something to condition on."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if not context:
            return self.prefix() or [self.tok.eos_id], self.encode(continuation)
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return self.prefix() + ctx, whole[len(ctx):]

    # ---- log-likelihood -------------------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                      progress: Progress | None = None) -> list[LLResult]:
        """log p(continuation | context) for each (context ids, continuation ids) request."""
        if self.share_context:
            return self._ll_tree(requests, progress)
        return self.loglikelihood_plain(requests, progress)

    def _truncate(self, ctx: Sequence[int], cont: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Keep the last max_len positions: the context loses tokens on the left (as in lm-eval)."""
        if not cont:
            raise ValueError("empty continuation: nothing to score")
        if len(cont) >= self.max_len:
            # Longer than the window: only its last max_len - 1 tokens can be scored, conditioned on the token
            # before them. Counted so the results can say how many requests were cut.
            self.truncated_continuations += 1
            whole = list(ctx) + list(cont)
            return (whole[-self.max_len],), tuple(whole[-self.max_len + 1:])
        keep = self.max_len + 1 - len(cont)  # the last continuation token is never an input
        return tuple(ctx[-keep:]) if len(ctx) > keep else tuple(ctx), tuple(cont)

    @torch.no_grad()
    def loglikelihood_plain(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                            progress: Progress | None = None) -> list[LLResult]:
        """One row per request (context + continuation), right-padded, longest first: the reference path."""
        items = [self._truncate(c, k) for c, k in requests]
        order = sorted(range(len(items)), key=lambda i: -(len(items[i][0]) + len(items[i][1])))
        out: list[LLResult | None] = [None] * len(items)
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            rows = [list(items[i][0]) + list(items[i][1][:-1]) for i in idx]
            width = max(len(r) for r in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, :len(row)] = torch.tensor(row)
            logits = self.model(ids.to(self.device)).float()
            for r, i in enumerate(idx):
                ctx, cont = items[i]
                start = len(ctx) - 1
                lp = F.log_softmax(logits[r, start:start + len(cont)], dim=-1)
                out[i] = _score(lp, cont)
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _ll_tree(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                 progress: Progress | None) -> list[LLResult]:
        # Group requests by their (truncated) context; one group becomes one packed row.
        groups: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
        for i, (c, k) in enumerate(requests):
            ctx, cont = self._truncate(c, k)
            groups.setdefault(ctx, []).append((i, cont))
        out: list[LLResult | None] = [None] * len(requests)
        for batch in self._batches(list(groups.items())):
            for i, res in self._tree_batch(batch):
                out[i] = res
            if progress:
                progress(sum(len(g[1]) for g in batch))
        return out  # type: ignore[return-value]

    def _batches(self, rows: list[tuple[tuple[int, ...], list]]) -> list[list]:
        """Rows that start with the same PREFIX_KEY tokens (MMLU items of one subject behind the same header and
        shots) are batched together so the shared prefix can be run once; the rest are sorted by length."""
        def size(g: tuple) -> int:
            return len(g[0]) + sum(len(k) - 1 for _, k in g[1])
        clusters: dict[tuple[int, ...], list] = {}
        for g in rows:
            if len(g[0]) > PREFIX_KEY:
                clusters.setdefault(g[0][:PREFIX_KEY], []).append(g)
        shared = {key: c for key, c in clusters.items() if len(c) > 1}
        loose = [g for g in rows if not (len(g[0]) > PREFIX_KEY and g[0][:PREFIX_KEY] in shared)]
        batches = []
        for members in [*shared.values(), loose]:
            members.sort(key=lambda g: -size(g))
            batches += [members[b:b + self.batch_size] for b in range(0, len(members), self.batch_size)]
        batches.sort(key=lambda b: -size(b[0]))  # largest first: an out-of-memory error shows up at once
        return batches

    def _tree_batch(self, batch: list[tuple[tuple[int, ...], list[tuple[int, tuple[int, ...]]]]]
                    ) -> list[tuple[int, LLResult]]:
        # Tokens every context of the batch starts with are run once (B=1) and their keys/values shared. At
        # least one context token stays in each row: its hidden state predicts the first continuation token.
        P = _common_prefix([ctx for ctx, _ in batch]) if len(batch) > 1 else 0
        P = min(P, min(len(ctx) for ctx, _ in batch) - 1)
        prefix_kv = None
        if P >= PREFIX_KEY:
            pre = torch.tensor([batch[0][0][:P]], device=self.device)
            ar = torch.arange(P, device=self.device)[None]
            causal_p = torch.ones(1, P, P, dtype=torch.bool, device=self.device).tril()
            _, prefix_kv = tree_forward(self.model, pre, ar, causal_p, collect_kv=True)
        else:
            P = 0
        lengths = [len(ctx) - P + sum(len(k) - 1 for _, k in conts) for ctx, conts in batch]
        B, L = len(batch), max(lengths)
        flat_ids = torch.zeros(B, L, dtype=torch.long)
        pos = torch.zeros(B, L, dtype=torch.long)
        # Segment of each position: 0 = the shared context, s >= 1 = choice s, -1 = padding.
        seg = torch.full((B, L), -1, dtype=torch.long)
        # (row, hidden positions predicting each continuation token, request index, continuation ids)
        wanted: list[tuple[int, list[int], int, tuple[int, ...]]] = []
        for r, (ctx, conts) in enumerate(batch):
            C = len(ctx)
            row_ids, row_pos, row_seg = list(ctx[P:]), list(range(P, C)), [0] * (C - P)
            at = C - P
            for s, (i, cont) in enumerate(conts, 1):
                n = len(cont) - 1
                row_ids += cont[:-1]
                row_pos += range(C, C + n)
                row_seg += [s] * n
                wanted.append((r, [C - P - 1] + list(range(at, at + n)), i, cont))
                at += n
            flat_ids[r, :at] = torch.tensor(row_ids)
            pos[r, :at] = torch.tensor(row_pos)
            seg[r, :at] = torch.tensor(row_seg)
        # A query sees earlier keys of its own segment and the whole (earlier) context. Padding forms its own
        # segment, so its softmax stays finite; its outputs are never read.
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        mask = causal & ((seg[:, :, None] == seg[:, None, :]) | (seg[:, None, :] == 0))
        if P:  # every row sees the whole shared prefix
            mask = torch.cat([torch.ones(B, L, P, dtype=torch.bool), mask], dim=-1)
        hidden = tree_forward(self.model, flat_ids.to(self.device), pos.to(self.device), mask.to(self.device),
                              prefix_kv=prefix_kv)
        rows = torch.tensor([r for r, p, _, _ in wanted for _ in p], device=self.device)
        cols = torch.tensor([q for _, p, _, _ in wanted for q in p], device=self.device)
        targets = torch.tensor([t for _, _, _, cont in wanted for t in cont], device=self.device)
        logp = F.log_softmax(self.model.logits(hidden[rows, cols]).float(), dim=-1)
        tok_lp = logp.gather(-1, targets[:, None])[:, 0].tolist()
        hit = (logp.argmax(-1) == targets).tolist()
        res, at = [], 0
        for _, p, i, cont in wanted:
            n = len(p)
            res.append((i, LLResult(sum(tok_lp[at:at + n]), all(hit[at:at + n]), n)))
            at += n
        return res

    # ---- perplexity / bits per byte ------------------------------------------------------------------------------
    @torch.no_grad()
    def rolling_nll(self, ids: Sequence[int], stride: int | None = None,
                    max_windows: int | None = None) -> tuple[float, int]:
        """Summed negative log-likelihood (nats) of every token of `ids` after the first, and the token count.

        Long sequences are scored with a sliding window of the model's length: each window advances by `stride`
        tokens and only its last `stride` tokens are scored, so every token is scored exactly once, with at least
        `max_len - stride` tokens of context (except in the first window)."""
        W = self.max_len
        stride = min(stride or W // 2, W)
        spans: list[tuple[int, int, int]] = []  # (window start, window end, first scored target index)
        end = min(len(ids), W)
        spans.append((0, end, 1))
        while end < len(ids):
            new_end = min(end + stride, len(ids))
            spans.append((max(0, new_end - W), new_end, end))
            end = new_end
        if max_windows:
            spans = spans[:max_windows]
        total, count = 0.0, 0
        t = torch.tensor(list(ids), dtype=torch.long)
        for b in range(0, len(spans), self.batch_size):
            chunk = spans[b:b + self.batch_size]
            width = max(e - s for s, e, _ in chunk) - 1
            x = torch.zeros(len(chunk), width, dtype=torch.long)
            for r, (s, e, _) in enumerate(chunk):
                x[r, :e - s - 1] = t[s:e - 1]
            logits = self.model(x.to(self.device)).float()
            for r, (s, e, first) in enumerate(chunk):
                lp = F.log_softmax(logits[r, first - 1 - s:e - 1 - s], dim=-1)
                tgt = t[first:e].to(lp.device)
                total -= lp.gather(-1, tgt[:, None]).sum().item()
                count += e - first
        return total, count

    # ---- generation -----------------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                 stop_tokens: Iterable[int] | None = None, seed: int | None = None,
                 stop_strings: Sequence[str] = ()) -> list[list[int]]:
        """Continuations (ids, without the prompt) for each prompt; stops at a stop token or stop string."""
        from smelt.eval.generation import generate_ids  # lazy: generation is only needed by generative tasks
        return generate_ids(self, prompts, max_new_tokens, temperature, stop_tokens, seed, stop_strings)


def _score(logp: torch.Tensor, cont: Sequence[int]) -> LLResult:
    tgt = torch.tensor(list(cont), device=logp.device)
    lp = logp.gather(-1, tgt[:, None]).sum().item()
    greedy = bool((logp.argmax(-1) == tgt).all().item())
    return LLResult(lp, greedy, len(cont))


def tree_forward(model: torch.nn.Module, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
                 prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None, collect_kv: bool = False):
    """The smelt Transformer's forward with explicit RoPE positions (B, L) and attention mask (B, L, P + L).

    It mirrors `Transformer.forward` module by module (same norms, projections, RoPE and MLP), so a packed tree
    gives the log-likelihoods separate causal passes would give; tests/test_eval_harness.py checks it to 1e-5.
    `prefix_kv` holds per-layer (keys, values) of P shared tokens (batch 1) that every row attends to before its
    own; `collect_kv` also returns this call's per-layer keys and values (to serve as such a prefix)."""
    from smelt.model.transformer import apply_rope
    cfg = model.cfg
    B, L = ids.shape
    cos = model.rope_cos[pos][:, None]  # (B, 1, L, D): broadcast over heads
    sin = model.rope_sin[pos][:, None]
    attn_mask = mask[:, None]
    x = model.embed(ids)
    kvs = []
    for li, layer in enumerate(model.layers):
        a = layer.attn
        h = layer.attn_norm(x)
        q = a.q(h).view(B, L, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = a.k(h).view(B, L, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = a.v(h).view(B, L, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if collect_kv:
            kvs.append((k, v))
        if prefix_kv is not None:
            pk, pv = prefix_kv[li]
            k = torch.cat([pk.expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([pv.expand(B, -1, -1, -1), v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=cfg.kv_heads != cfg.n_heads)
        x = x + a.o(y.transpose(1, 2).reshape(B, L, cfg.n_heads * cfg.head_dim))
        x = x + layer.mlp(layer.mlp_norm(x))
    if collect_kv:
        return None, kvs  # the prefix's own outputs are never needed
    return model.norm(x)


def _common_prefix(seqs: list[tuple[int, ...]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        j = 0
        while j < n and s[j] == first[j]:
            j += 1
        n = j
    return n


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """Vocabulary-independent: total nats over the UTF-8 bytes of the scored text."""
    return nats / (math.log(2) * n_bytes) if n_bytes else float("nan")
