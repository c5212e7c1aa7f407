"""`smelt export` and `smelt import`: move weights between smelt run folders and Hugging Face Llama folders."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch

EXPORT_HELP = """\
Export a smelt checkpoint as a Hugging Face folder (config.json + model.safetensors, and tokenizer files when the
run has a tokenizer) that `transformers.LlamaForCausalLM.from_pretrained(DIR)` and
`PreTrainedTokenizerFast.from_pretrained(DIR)` load. SOURCE is a run folder (its latest checkpoint is used) or a
checkpoints/step-N folder. Only SwiGLU models have a Llama equivalent. transformers is not needed to export."""

IMPORT_HELP = """\
Import a Llama-architecture Hugging Face folder (config.json + model.safetensors or a sharded
model.safetensors.index.json) as a smelt run folder: OUT/checkpoints/step-0/ (model.safetensors +
model_config.json), OUT/checkpoints/latest, and OUT/tokenizer/ when the folder's tokenizer.json is a smelt
tokenizer. The result is a starting point for `smelt sft`, `smelt generate`, `smelt eval`, ... Configs smelt
cannot reproduce exactly (RoPE scaling, biases, sliding windows) are refused with the offending field named."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="smelt export", description=EXPORT_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="run folder or checkpoint folder")
    p.add_argument("--format", choices=["hf"], default="hf", help="output format (hf: transformers Llama folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created; files overwritten)")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                   help="store weights in this dtype (default: the checkpoint's own, normally float32)")
    args = p.parse_args(argv)
    from smelt.interop.hf import export_hf
    from smelt.train.checkpoint import load_pretrained

    model, tok = load_pretrained(args.source, device="cpu")
    out = export_hf(model, args.out, tokenizer=tok, dtype=_DTYPES.get(args.dtype))
    what = "weights + tokenizer" if tok is not None else "weights (no tokenizer found next to the checkpoint)"
    print(f"exported {model.num_params():,}-parameter model ({what}) to {out}")
    return 0


def _import(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="smelt import", description=IMPORT_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="HF_DIR", help="Hugging Face model folder")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to create")
    args = p.parse_args(argv)
    from smelt.interop.hf import import_hf
    from smelt.train.checkpoint import save_model_files

    src, run = Path(args.source), Path(args.out)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder")
    model, tok = import_hf(src, device="cpu")
    root = run / "checkpoints"
    final, tmp = root / "step-0", root / ".tmp-step-0"
    if final.exists():
        raise ValueError(f"{final} already exists; choose another --out or remove it")
    # Same atomic layout as training checkpoints: write under a temporary name, rename when complete.
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_files(tmp, model)
    (tmp / "state.json").write_text(json.dumps({"step": 0, "imported_from": str(src)}, indent=2) + "\n")
    os.replace(tmp, final)
    (root / "latest").write_text(final.name + "\n")
    if tok is not None:
        tok.save(run / "tokenizer")
    print(f"imported {model.num_params():,}-parameter model to {final}"
          + (f" and tokenizer to {run / 'tokenizer'}" if tok is not None else " (no smelt tokenizer in the folder)"))
    return 0


def main(argv: list[str]) -> int:
    """argv[0] is the verb (`export` or `import`): one module serves both."""
    if not argv or argv[0] not in ("export", "import"):
        raise ValueError("smelt.interop.cli.main expects argv to start with 'export' or 'import'")
    return _export(argv[1:]) if argv[0] == "export" else _import(argv[1:])
