"""`smelt eval --model PATH --tasks a,b [--shots K] [--limit N] [--batch-size B] --out results.json`."""

from __future__ import annotations

import argparse
import sys

from smelt.eval.evaluator import evaluate_checkpoint, summary_lines, write_results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smelt eval", description="Evaluate a model on benchmarks and text corpora.")
    p.add_argument("--model", help="run folder, checkpoint folder, or exported HF folder")
    p.add_argument("--tasks", help="comma-separated task names (see --list-tasks)")
    p.add_argument("--shots", type=int, default=None, help="few-shot examples per item (default: each task's own)")
    p.add_argument("--limit", type=int, default=None, help="first N items per task (per subject for MMLU)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per forward pass")
    p.add_argument("--seed", type=int, default=1234, help="seed for few-shot selection and sampling")
    p.add_argument("--out", default="results.json", help="where to write the results JSON")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the one saved with the model)")
    p.add_argument("--chat", action="store_true", help="render prompts with the chat template (SFT'd models)")
    p.add_argument("--no-share-context", action="store_true",
                   help="score each choice in its own row instead of sharing the context (slower; for checking)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget for generative tasks")
    p.add_argument("--num-samples", type=int, default=None, help="samples per problem (HumanEval pass@k)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (0 = greedy)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per HumanEval program")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride for bits-per-byte")
    p.add_argument("--list-tasks", action="store_true", help="print the known task names and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.list_tasks:
        from smelt.eval.tasks import known_tasks
        print("\n".join(known_tasks()))
        return 0
    if not args.model or not args.tasks:
        print("smelt eval: --model and --tasks are required (see --help)", file=sys.stderr)
        return 2
    gen = {k: getattr(args, k) for k in ("max_new_tokens", "num_samples", "temperature", "timeout", "stride")
           if getattr(args, k) is not None}
    results = evaluate_checkpoint(args.model, args.tasks, device=args.device, tokenizer_dir=args.tokenizer,
                                  shots=args.shots, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
                                  chat=args.chat, progress=not args.quiet, share_context=not args.no_share_context,
                                  **gen)
    out = write_results(results, args.out)
    print("\n".join(summary_lines(results)))
    print(f"wrote {out}")
    return 0
