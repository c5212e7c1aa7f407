"""`smelt demo`: the whole pipeline on a small default, end to end.

tinyshakespeare → BPE tokenizer → token shards → pre-train (debug preset on CPU, a few minutes; gpt2-124m on a
GPU) → samples → SFT on public chat/instruction data → DPO on HH-RLHF harmless pairs → report.md with the loss
curve and each stage's before/after numbers. Every stage writes its folder under --out; re-running the command
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
    p.add_argument("--sft-steps", type=int, default=150, help="SFT steps (default 150; 0 skips SFT and DPO)")
    p.add_argument("--dpo-steps", type=int, default=100, help="DPO steps after SFT (default 100; 0 skips DPO)")
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
    t0 = _stage(f"1/6 tokenizer: byte-level BPE, vocab {args.vocab_size}, on {data}")
    if not (tok_dir / "tokenizer.json").exists():
        from smelt.tokenizer import main as tokenizer_main
        tokenizer_main(["train", "--input", data, "--vocab-size", str(args.vocab_size), "--out", str(tok_dir)])
    else:
        print(f"exists: {tok_dir}", file=sys.stderr)
    times = {"tokenizer_s": time.time() - t0}

    t0 = _stage("2/6 token shards (10% of documents held out for validation)")
    if not (shard_dir / "meta.json").exists():
        from smelt.tokenize_cli import main as tokenize_main
        tokenize_main(["--input", data, "--tokenizer", str(tok_dir), "--out", str(shard_dir), "--overwrite"])
    else:
        print(f"exists: {shard_dir}", file=sys.stderr)
    times["tokenize_s"] = time.time() - t0

    t0 = _stage(f"3/6 pre-train preset {preset} for {steps} steps")
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

    t0 = _stage("4/6 samples")
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
    sections = {"Samples (temperature 0.8, top-k 50)": body}
    post = posttrain_stages(out, run_dir, args, device, times) if args.sft_steps > 0 else {}
    sections.update(post.pop("sections", {}))
    summary = {"preset": preset, "parameters": sum(p.numel() for p in model.parameters()),
               "wall time (s)": round(time.time() - t_all, 1)}
    report = write_run_report(run_dir, out / "report.md", sections=sections, summary=summary)
    (out / "demo.json").write_text(json.dumps({"result": {k: v for k, v in result.items()
                                                          if isinstance(v, (int, float, str))},
                                               "times": times, "samples": samples, **post}, indent=2))
    print(f"\nfinal val loss {result.get('val_loss', float('nan')):.4f} nats/token, "
          f"{result.get('val_bpb', float('nan')):.4f} bits/byte; report: {report}", file=sys.stderr)
    return 0


def posttrain_stages(out: Path, pretrain_dir: Path, args: argparse.Namespace, device: str,
                     times: dict[str, float]) -> dict:
    """SFT on the public chat files, then DPO on HH-RLHF harmless pairs; each stage's held-out numbers before and
    after, and one chat reply from the SFT model. A finished stage (its final checkpoint exists) is not re-run."""
    from smelt.infer.generate import generate
    from smelt.posttrain import run_dpo, run_sft
    from smelt.posttrain.recipes import dpo_recipe, sft_recipe
    from smelt.train.checkpoint import latest_checkpoint, load_pretrained

    def done(run: Path, steps: int) -> bool:
        ckpt = latest_checkpoint(run)
        return ckpt is not None and ckpt.name == f"step-{steps}" and (run / "demo_result.json").exists()

    def stage(run: Path, steps: int, runner, cfg) -> dict:
        if done(run, steps):
            print(f"exists: {run}", file=sys.stderr)
            return json.loads((run / "demo_result.json").read_text())
        res = runner(cfg)
        keep = {k: v for k, v in res.items() if isinstance(v, (int, float, str, dict))}
        (run / "demo_result.json").write_text(json.dumps(keep, indent=2, default=str))
        return keep

    sft_dir, dpo_dir = out / "sft", out / "dpo"
    t0 = _stage(f"5/6 SFT: {args.sft_steps} steps on public chat and instruction data")
    sft = stage(sft_dir, args.sft_steps, run_sft, sft_recipe(str(pretrain_dir), str(sft_dir), args.sft_steps,
                                                             args.device))
    times["sft_s"] = time.time() - t0
    model, tok = load_pretrained(sft_dir, device=device)
    question = "What is the capital of France?"
    ids, _ = tok.render_chat([{"role": "user", "content": question}], add_generation_prompt=True)
    reply = tok.decode(generate(model, [ids], max_new_tokens=args.max_new_tokens, temperature=0.0,
                                stop_tokens={tok.token_id("<|end|>")})[0], skip_special=True)
    rows = [f"| SFT | held-out assistant-token loss | {sft.get('val_loss_before', float('nan')):.4f} | "
            f"{sft.get('val_loss', float('nan')):.4f} |"]
    result: dict = {"sft": sft, "chat_sample": {"user": question, "assistant": reply}}
    if args.dpo_steps > 0:
        t0 = _stage(f"6/6 DPO: {args.dpo_steps} steps on HH-RLHF harmless pairs")
        dpo = stage(dpo_dir, args.dpo_steps, run_dpo, dpo_recipe(str(sft_dir), str(dpo_dir), args.dpo_steps,
                                                                 args.device))
        times["dpo_s"] = time.time() - t0
        before = dpo.get("before", {})
        for key, label in [("val_rewards_margins", "held-out reward margin"),
                           ("val_rewards_accuracies", "held-out implicit-reward accuracy"),
                           ("val_pref_accuracy", "held-out policy preference accuracy")]:
            if key in dpo:
                rows.append(f"| DPO | {label} | {before.get(key, float('nan')):.4f} | {dpo[key]:.4f} |")
        result["dpo"] = dpo
    table = "| stage | metric | before | after |\n|---|---|---|---|\n" + "\n".join(rows)
    chat = f"**user:** {question}\n\n**assistant (SFT model, greedy):** {reply}"
    result["sections"] = {"Post-training": table + "\n\n" + chat}
    return result
