"""Training throughput: smelt's pretrain loop vs a plain PyTorch loop of the same shape, in one invocation.

The reference is written the way a user would write it by hand (nanoGPT style): its own small Llama-style model
(RMSNorm, RoPE, SDPA, SwiGLU, same widths), AdamW, clipping, and `loss.backward(); opt.step()` on random tokens.
smelt runs its real Trainer (metrics, NaN checks, LR schedule) on the same synthetic tokens. Both run the same
number of timed steps after the same warm-up; the script prints tokens/s, MFU, peak memory and the ratio.

    python bench/bench_train.py                                   # debug preset on CPU
    python bench/bench_train.py --preset gpt2-124m --batch-size 16 --seq-len 1024 --compile   # on a GPU
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from smelt.model import build_model, preset
from smelt.train.loop import Trainer, autocast_dtype, resolve_device
from smelt.train.metrics import flops_per_token, peak_flops
from smelt.train.pretrain import SyntheticTokens, load_run_config
from smelt.objectives import CausalLM


class RefBlock(nn.Module):
    def __init__(self, d, heads, kv_heads, hidden):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.n1, self.n2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, (heads + 2 * kv_heads) * self.hd, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).split([self.heads * self.hd, self.kv_heads * self.hd,
                                              self.kv_heads * self.hd], dim=-1)
        q = q.view(B, T, self.heads, self.hd).transpose(1, 2)
        k = k.view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        v = v.view(B, T, self.kv_heads, self.hd).transpose(1, 2)

        def rope(t):
            a, b = t.chunk(2, dim=-1)
            return t * cos + torch.cat([-b, a], dim=-1) * sin

        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True,
                                           enable_gqa=self.kv_heads != self.heads)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, -1))
        g, u = self.gate_up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class RefModel(nn.Module):
    def __init__(self, cfg, seq_len):
        super().__init__()
        self.emb = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        self.blocks = nn.ModuleList(RefBlock(cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.hidden)
                                    for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-5)
        hd = cfg.head_dim
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(seq_len).float(), inv)
        self.register_buffer("cos", torch.cat([f, f], -1).cos())
        self.register_buffer("sin", torch.cat([f, f], -1).sin())
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        x = self.emb(idx)
        cos, sin = self.cos[: idx.size(1)].to(x.dtype), self.sin[: idx.size(1)].to(x.dtype)
        for b in self.blocks:
            x = b(x, cos, sin)
        return F.linear(self.norm(x), self.emb.weight)


def bench_reference(cfg, args, device, amp) -> tuple[float, float]:
    model = RefModel(cfg, args.seq_len).to(device)
    if args.compile:
        for b in model.blocks:
            b.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    data = SyntheticTokens(cfg.vocab_size, args.batch_size, args.seq_len, seed=1)

    def step():
        batch = data.next_batch().to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.steps):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    float(loss.detach())
    _sync(device)
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return args.steps * args.batch_size * args.seq_len / dt, mem


def bench_smelt(args, device) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_run_config(None, [
            "--model.preset", args.preset, "--data.synthetic", "true", "--data.batch_size", str(args.batch_size),
            "--data.seq_len", str(args.seq_len), "--model.max_seq_len", str(max(args.seq_len, 256)),
            "--train.steps", str(2 * args.steps), "--train.log_every", str(args.steps),
            "--train.eval_every", "0", "--train.ckpt_every", "0", "--train.out_dir", tmp,
            "--train.progress", "false", "--train.device", str(device), "--train.precision", args.precision,
            "--train.compile", str(args.compile).lower(), "--optim.lr", "1e-4", "--train.resume", "never"])
        model = build_model(cfg.model, device=device)
        data = SyntheticTokens(cfg.model.vocab_size, args.batch_size, args.seq_len, seed=1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # total = 2·steps with log_every = steps: the last logged window is exactly the timed steps, after
        # as many untimed warm-up (and compile) steps as the reference gets.
        out = Trainer(cfg, model, CausalLM(), data).fit()
        mem = out["peak_mem_mb"] if device.type == "cuda" else float("nan")
        return out["tokens_per_s"], mem


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after as many untimed warm-up steps)")
    ap.add_argument("--rounds", type=int, default=2, help="alternate smelt/reference this many times")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = preset(args.preset, max_seq_len=max(args.seq_len, 256))
    amp = autocast_dtype(args.precision, device)
    fpt = flops_per_token(cfg, args.seq_len)
    peak = peak_flops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name} | preset {args.preset} | B={args.batch_size} T={args.seq_len} | "
          f"precision {args.precision} | compile {args.compile} | {args.steps} timed steps after {args.steps} warm-up")
    results = {"smelt": [], "plain": []}
    for _ in range(args.rounds):  # alternate so drift (thermal, other load) hits both alike
        results["smelt"].append(bench_smelt(args, device))
        results["plain"].append(bench_reference(cfg, args, device, amp))
    best = {k: max(v, key=lambda r: r[0]) for k, v in results.items()}
    for k, (tps, mem) in best.items():
        mfu = f"{fpt * tps / peak:.1%}" if peak else "n/a"
        mem_s = f"{mem:,.0f} MB" if not math.isnan(mem) else "n/a"
        print(f"{k:>6}: {tps:12,.0f} tokens/s | MFU {mfu:>6} | peak mem {mem_s}")
    print(f"ratio smelt/plain: {best['smelt'][0] / best['plain'][0]:.3f}x")


if __name__ == "__main__":
    main()
