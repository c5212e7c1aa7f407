"""Autoregressive generation with a KV cache: greedy, temperature, top-k and top-p sampling, stop tokens, streaming.

Token ids in, token ids out: the tokenizer only appears in the `smelt generate` command line.

Batching prompts of different lengths. The KV cache keeps one write position for the whole batch, and the
attention has no padding mask, so left-padding would let short prompts attend to pad tokens. Instead prompts are
grouped by length and each group is decoded as one batch: no padding, no masks, exact results, and the common
cases (one prompt; many samples of the same prompt; equal-length eval prompts) still run as a single batch.

Conventions:
- The returned lists hold the *new* tokens only. A row ends at the first stop token, and that stop token IS
  included as the row's last element, so callers can tell "stopped" from "ran out of max_new_tokens".
- Prompt plus generated tokens never exceed `model.cfg.max_seq_len`: a prompt that leaves no room raises
  ValueError; generation that would run past it stops early with a warning (rows are then shorter than
  max_new_tokens and do not end in a stop token).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator

import torch

from smelt.model import KVCache, Transformer

# ---- sampling -------------------------------------------------------------------------------------------------

def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (others → -inf). k <= 0 or k >= vocab keeps everything."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose total probability is >= p.

    A token survives when the probability mass of the tokens ranked strictly above it is still < p, so the most
    likely token always survives and the set stops at the first token that carries the total to p or beyond.
    """
    if p >= 1.0:
        return logits
    if p <= 0.0:
        raise ValueError(f"top_p: must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) → next token ids (B,). temperature 0 means greedy (argmax; top-k/p are then irrelevant)."""
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits.float() / temperature, top_k), top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---- decoding -------------------------------------------------------------------------------------------------

def _last_logits(model: Transformer, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Logits for the last position only: a long prompt need not pay for a (T, vocab) logits matrix."""
    was_training = model.training
    model.eval()  # dropout off while generating, without leaving the caller's model in a different mode
    try:
        with torch.inference_mode():
            hidden = model(idx, cache=cache, return_hidden=True)
            return model.logits(hidden[:, -1]).float()
    finally:
        model.train(was_training)


def _decode(model: Transformer, batch: torch.Tensor, steps: int, temperature: float, top_k: int, top_p: float,
            generator: torch.Generator | None, use_cache: bool) -> Iterator[torch.Tensor]:
    """Yield the next token (B,) `steps` times for an equal-length batch (B, T)."""
    B, T = batch.shape
    cache = None
    if use_cache:
        w = model.embed.weight
        cache = KVCache.empty(model.cfg, B, T + steps, w.device, w.dtype)
    seq, feed = batch, batch
    for step in range(steps):
        # With a cache only the newest token goes through the model; without one, the whole sequence again.
        logits = _last_logits(model, feed if use_cache else seq, cache)
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        yield nxt
        if step + 1 < steps:  # the last token is never fed back, so it needs no cache slot
            feed = nxt[:, None]
            if not use_cache:
                seq = torch.cat([seq, feed], dim=1)


def _check_args(model: Transformer, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                top_k: int, top_p: float) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k: must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: must be in (0, 1], got {top_p}")
    limit = model.cfg.max_seq_len
    vocab = model.cfg.vocab_size
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompts[{i}] is empty: start it with at least one token (e.g. the BOS id)")
        if len(p) >= limit:
            raise ValueError(f"prompts[{i}] has {len(p)} tokens; model.max_seq_len={limit} leaves no room to "
                             f"generate")
        if min(p) < 0 or max(p) >= vocab:
            raise ValueError(f"prompts[{i}] has token ids outside [0, model.vocab_size={vocab})")


def _room(model: Transformer, prompt_len: int, max_new_tokens: int) -> int:
    room = model.cfg.max_seq_len - prompt_len
    if max_new_tokens > room:
        warnings.warn(f"prompt of {prompt_len} tokens + max_new_tokens={max_new_tokens} exceeds "
                      f"model.max_seq_len={model.cfg.max_seq_len}; generating at most {room} tokens", stacklevel=3)
    return min(max_new_tokens, room)


def _generator(model: Transformer, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None  # torch's global RNG
    return torch.Generator(device=model.embed.weight.device).manual_seed(seed)


def generate(model: Transformer, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, stop_tokens: set[int] | None = None, seed: int | None = None,
             use_cache: bool = True) -> list[list[int]]:
    """New tokens for each prompt (see the module docstring for batching, stop-token and length conventions)."""
    _check_args(model, prompts, max_new_tokens, temperature, top_k, top_p)
    stop = set(stop_tokens or ())
    gen = _generator(model, seed)
    device = model.embed.weight.device
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for length, rows in groups.items():  # insertion order: deterministic given the seed
        steps = _room(model, length, max_new_tokens)
        if steps == 0:
            continue
        batch = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=device)
        done = [False] * len(rows)
        for nxt in _decode(model, batch, steps, temperature, top_k, top_p, gen, use_cache):
            for j, tok in enumerate(nxt.tolist()):
                if not done[j]:
                    out[rows[j]].append(tok)
                    done[j] = tok in stop
            if all(done):
                break
    return out


def stream(model: Transformer, prompt: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, stop_tokens: set[int] | None = None, seed: int | None = None,
           use_cache: bool = True) -> Iterator[int]:
    """Yield new tokens for one prompt as they are produced; the stop token, if hit, is yielded last.

    Arguments are checked here, at the call, not at the first `next()`: a bad prompt fails where it was passed.
    """
    _check_args(model, [prompt], max_new_tokens, temperature, top_k, top_p)
    steps = _room(model, len(prompt), max_new_tokens)
    batch = torch.tensor([prompt], dtype=torch.long, device=model.embed.weight.device)
    return _stream(_decode(model, batch, steps, temperature, top_k, top_p, _generator(model, seed), use_cache),
                   set(stop_tokens or ()))


def _stream(steps: Iterator[torch.Tensor], stop: set[int]) -> Iterator[int]:
    for nxt in steps:
        tok = int(nxt.item())
        yield tok
        if tok in stop:
            return


# ---- command line ---------------------------------------------------------------------------------------------

HELP = """\
Sample text from a checkpoint. RUN_OR_CHECKPOINT is a run folder (its latest checkpoint), a checkpoint folder
or a Hugging Face Llama folder; the tokenizer is found next to it (or pass --tokenizer). Generation stops at the
end-of-text token (and, with --chat, at <|end|>), after --max-tokens tokens, or at the model's max_seq_len."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smelt generate", description=HELP)
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--prompt", required=True, help="prompt text (with --chat: the user message)")
    p.add_argument("--max-tokens", type=int, default=200, help="most new tokens per sample (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens; 0 = off (default)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass; 1 = off (default 0.95)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples of the same prompt")
    p.add_argument("--chat", action="store_true", help="render the prompt as a user turn; stop at <|end|>")
    p.add_argument("--tokenizer", default=None, metavar="DIR", help="tokenizer folder (default: found beside)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each step (slow)")
    return p


class _Printer:
    """Prints tokens as they arrive, holding back an incomplete UTF-8 character until its last byte comes."""

    def __init__(self, tok) -> None:
        self.tok, self.ids, self.shown = tok, [], 0

    def add(self, i: int) -> None:
        self.ids.append(i)
        text = self.tok.decode(self.ids)
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[self.shown:])
            sys.stdout.flush()
            self.shown = len(text)

    def finish(self) -> None:
        """Print whatever is still held back (a byte sequence that never completed) and end the line."""
        sys.stdout.write(self.tok.decode(self.ids)[self.shown:] + "\n")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples: must be >= 1, got {args.num_samples}")
    from smelt.train.checkpoint import load_pretrained

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_pretrained(args.source, device=device)
    if args.tokenizer:
        from smelt.tokenizer import Tokenizer
        tok = Tokenizer.load(args.tokenizer)
    if tok is None:
        raise FileNotFoundError(f"{args.source}: no tokenizer found beside the checkpoint; pass --tokenizer DIR")
    stop = {tok.eos_id}
    if args.chat:
        prompt, _ = tok.render_chat([{"role": "user", "content": args.prompt}], add_generation_prompt=True)
        stop.add(tok.token_id("<|end|>"))
    else:
        prompt = tok.encode(args.prompt, bos=True)
    kw = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "stop_tokens": stop,
          "seed": args.seed, "use_cache": not args.no_cache}
    if args.num_samples == 1:
        if not args.chat:
            sys.stdout.write(args.prompt)
        printer = _Printer(tok)
        for t in stream(model, prompt, args.max_tokens, **kw):
            if t not in stop:
                printer.add(t)
        printer.finish()
        return 0
    outs = generate(model, [prompt] * args.num_samples, args.max_tokens, **kw)
    for i, ids in enumerate(outs):
        if ids and ids[-1] in stop:
            ids = ids[:-1]
        print(f"--- sample {i + 1} ---")
        print(tok.decode(ids) if args.chat else args.prompt + tok.decode(ids))
    return 0
