"""`smelt demo`: the whole pipeline on a small default, end to end.

tinyshakespeare → BPE tokenizer → token shards → pre-train (debug preset on CPU, a few minutes; gpt2-124m on a
GPU) → samples → report.md with the loss curve. Every stage writes its folder under --out; re-running the command
skips finished stages and resumes an interrupted pre-training run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from smelt.datasets import resolve

PROMPTS = ["ROMEO:", "First Citizen:\n", "KING RICHARD III:\nNow is the"]


def _stage(name: str) -> float:
    print(f"\n== {name}", file=sys.stderr)
    return time.time()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="smelt demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="folder for every stage's output (default runs/demo)")
    p.add_argument("--data", default="tinyshakespeare", help="dataset name or text/jsonl path (default tinyshakespeare)")
    p.add_argument("--preset", default="auto", help="model preset; auto = debug on CPU, gpt2-124m on a GPU")
    p.add_argument("--steps", type=int, default=0, help="pre-training steps (default 500 on CPU, 2000 on a GPU)")
    p.add_argument("--vocab-size", type=int, default=4096, help="tokenizer vocabulary (default 4096)")
    p.add_argument("--max-new-tokens", type=int, default=120, help="tokens per sample (default 120)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    gpu = torch.cuda.is_available() and args.device in ("auto", "cuda")
    preset = args.preset if args.preset != "auto" else ("gpt2-124m" if gpu else "debug")
    steps = args.steps or (2000 if gpu else 500)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = str(resolve(args.data, allow_download=True))
    t_all = time.time()

    tok_dir, shard_dir, run_dir = out / "tokenizer", out / "shards", out / "pretrain"
    t0 = _stage(f"1/4 tokenizer: byte-level BPE, vocab {args.vocab_size}, on {data}")
    if not (tok_dir / "tokenizer.json").exists():
        from smelt.tokenizer import main as tokenizer_main
        tokenizer_main(["train", "--input", data, "--vocab-size", str(args.vocab_size), "--out", str(tok_dir)])
    else:
        print(f"exists: {tok_dir}", file=sys.stderr)
    times = {"tokenizer_s": time.time() - t0}

    t0 = _stage("2/4 token shards (10% of documents held out for validation)")
    if not (shard_dir / "meta.json").exists():
        from smelt.tokenize_cli import main as tokenize_main
        tokenize_main(["--input", data, "--tokenizer", str(tok_dir), "--out", str(shard_dir), "--overwrite"])
    else:
        print(f"exists: {shard_dir}", file=sys.stderr)
    times["tokenize_s"] = time.time() - t0

    t0 = _stage(f"3/4 pre-train preset {preset} for {steps} steps")
    from smelt.tokenizer import Tokenizer
    from smelt.train.pretrain import load_run_config, run_pretrain

    tok = Tokenizer.load(tok_dir)
    seq_len = 1024 if gpu else 256
    batch = 16 if gpu else 8
    cfg = load_run_config(None, [
        "--model.preset", preset, "--model.vocab_size", str(tok.vocab_size), "--model.max_seq_len", str(seq_len),
        "--model.dropout", "0.0" if gpu else "0.1",
        "--data.shards", str(shard_dir), "--data.batch_size", str(batch), "--data.seq_len", str(seq_len),
        "--optim.lr", "6e-4" if gpu else "3e-3", "--optim.warmup_steps", str(min(100, steps // 10)),
        "--train.steps", str(steps), "--train.out_dir", str(run_dir), "--train.device", args.device,
        "--train.eval_every", str(max(1, steps // 10)), "--train.eval_batches", "16",
        "--train.ckpt_every", str(max(1, steps // 5)), "--train.log_every", str(max(1, steps // 50)),
        "--train.compile", "true" if gpu else "false"])
    result = run_pretrain(cfg)
    times["pretrain_s"] = time.time() - t0

    t0 = _stage("4/4 samples and report")
    from smelt.infer.generate import generate
    from smelt.train.checkpoint import load_pretrained
    from smelt.train.report import write_run_report

    device = "cuda" if gpu else "cpu"
    model, tok = load_pretrained(run_dir, device=device)
    prompts = [tok.encode(p, bos=True) for p in PROMPTS]
    outs = generate(model, prompts, max_new_tokens=args.max_new_tokens, temperature=0.8, top_k=50,
                    stop_tokens={tok.eos_id}, seed=0)
    samples = [p + tok.decode(o, skip_special=True) for p, o in zip(PROMPTS, outs)]
    for s in samples:
        print(f"--- sample\n{s}\n", file=sys.stderr)
    times["samples_s"] = time.time() - t0
    body = "\n\n".join(f"```text\n{s}\n```" for s in samples)
    summary = {"preset": preset, "parameters": sum(p.numel() for p in model.parameters()),
               "wall time (s)": round(time.time() - t_all, 1)}
    report = write_run_report(run_dir, out / "report.md", sections={"Samples (temperature 0.8, top-k 50)": body},
                              summary=summary)
    (out / "demo.json").write_text(json.dumps({"result": {k: v for k, v in result.items()
                                                          if isinstance(v, (int, float, str))},
                                               "times": times, "samples": samples}, indent=2))
    print(f"\nfinal val loss {result.get('val_loss', float('nan')):.4f} nats/token, "
          f"{result.get('val_bpb', float('nan')):.4f} bits/byte; report: {report}", file=sys.stderr)
    return 0
