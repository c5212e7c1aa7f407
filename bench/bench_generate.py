"""Generation throughput with and without the KV cache, measured in the same run; prints tokens/s and the ratio.

    python bench/bench_generate.py [--preset debug] [--prompt-len 32] [--new-tokens 200] [--batch 1 8]
                                   [--device cpu|cuda] [--threads N]

Greedy decoding, so both paths must also produce identical tokens (checked: a speedup from a wrong cache is no
speedup). Without the cache every step re-runs the whole sequence, so the ratio grows with the sequence length.
"""

from __future__ import annotations

import argparse
import time

import torch

from smelt.infer.generate import generate
from smelt.model import build_model, preset


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(model, prompts, new_tokens: int, use_cache: bool, device: str) -> tuple[float, list[list[int]]]:
    generate(model, prompts, 4, temperature=0, use_cache=use_cache)  # warm-up (allocations, kernels)
    _sync(device)
    t0 = time.perf_counter()
    out = generate(model, prompts, new_tokens, temperature=0, use_cache=use_cache)
    _sync(device)
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="debug")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(preset(args.preset), device=args.device, seed=0).eval()
    cfg = model.cfg
    print(f"preset={args.preset} params={model.num_params():,} device={args.device} threads={torch.get_num_threads()} "
          f"prompt={args.prompt_len} new={args.new_tokens} (max_seq_len={cfg.max_seq_len})")
    g = torch.Generator().manual_seed(0)
    print(f"{'batch':>5} {'cache tok/s':>12} {'no-cache tok/s':>15} {'speedup':>8}")
    for b in args.batch:
        prompts = torch.randint(0, cfg.vocab_size, (b, args.prompt_len), generator=g).tolist()
        t_cache, out_cache = timed(model, prompts, args.new_tokens, True, args.device)
        t_full, out_full = timed(model, prompts, args.new_tokens, False, args.device)
        same = "" if out_cache == out_full else "  (outputs differ!)"
        n = b * args.new_tokens
        print(f"{b:>5} {n / t_cache:>12.1f} {n / t_full:>15.1f} {t_full / t_cache:>7.2f}x{same}")


if __name__ == "__main__":
    main()
