"""`smelt lora merge RUN_OR_CHECKPOINT --out DIR`: fold a LoRA run's adapters into its base weights.

The output folder is a plain checkpoint (model.safetensors, model_config.json, tokenizer/) that every stage, eval
and generation load like any pre-trained run; it no longer needs the base run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smelt.posttrain.lora import ADAPTER_CONFIG, load_lora_checkpoint


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smelt lora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="fold adapters into the base weights", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("run", help="a LoRA run folder (its latest checkpoint) or a checkpoint folder")
    m.add_argument("--out", required=True, help="folder to write the merged model to")
    m.add_argument("--device", default="cpu", help="device to merge on (default cpu)")
    return p


def merge(run: str | Path, out: str | Path, device: str = "cpu") -> Path:
    from smelt.train.checkpoint import resolve_checkpoint, save_model_files
    ckpt = resolve_checkpoint(run)
    if not (ckpt / ADAPTER_CONFIG).exists():
        raise ValueError(f"{ckpt}: not a LoRA checkpoint (no {ADAPTER_CONFIG})")
    model, tok = load_lora_checkpoint(ckpt, device=device, merge=True)
    out = Path(out)
    save_model_files(out, model)
    if tok is not None:
        tok.save(out / "tokenizer")
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    out = merge(args.run, args.out, args.device)
    print(f"merged adapters into {out}", file=sys.stderr)
    return 0
