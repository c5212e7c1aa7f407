"""`smelt <verb> ...`: one entry point. Each verb lives in its own module with a `main(argv) -> int`.

Verb modules are imported lazily so `smelt --help` is instant and a verb's heavy imports (torch, pyarrow, ...)
only load when that verb runs.
"""

from __future__ import annotations

import importlib
import sys

from smelt.config import ConfigError

# verb → (module, one-line help). Sub-verbs (e.g. `tokenizer train`) are handled inside the verb's module.
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("smelt.demo", "run the whole pipeline on a small default (tiny model on CPU in minutes)"),
    "curate": ("smelt.data.cli", "clean, filter, deduplicate and redact raw text (`curate report` for the funnel)"),
    "tokenizer": ("smelt.tokenizer", "`tokenizer train`: train a byte-level BPE tokenizer; `tokenizer eval`"),
    "tokenize": ("smelt.shards", "turn documents (txt/jsonl/parquet) into token shards"),
    "pretrain": ("smelt.train.pretrain", "pre-train a transformer on token shards"),
    "sft": ("smelt.posttrain.sft", "supervised fine-tuning (full or LoRA) on chat/instruction data"),
    "lora": ("smelt.posttrain.lora_cli", "`lora merge`: fold LoRA adapters into the base weights"),
    "reward": ("smelt.posttrain.reward", "train a reward model on chosen/rejected pairs"),
    "dpo": ("smelt.posttrain.dpo", "direct preference optimisation (DPO / IPO / conservative)"),
    "rl": ("smelt.posttrain.rl", "RL: PPO against a reward model, or GRPO with verifiable rewards"),
    "eval": ("smelt.eval.cli", "evaluate a model on benchmarks (MMLU, ARC, HellaSwag, GSM8K, HumanEval, ...)"),
    "report": ("smelt.eval.report", "render results.json files into a markdown table and charts"),
    "generate": ("smelt.infer.generate", "sample text from a checkpoint (KV cache, temperature, top-k/p)"),
    "export": ("smelt.interop.cli", "export a checkpoint (--format hf: a folder transformers loads)"),
    "import": ("smelt.interop.cli", "import a Llama-architecture HF folder as a smelt checkpoint"),
}


def usage() -> str:
    lines = ["usage: smelt <verb> [config.toml] [--section.key value ...]", "", "verbs:"]
    width = max(len(v) for v in VERBS)
    for verb, (_, text) in VERBS.items():
        lines.append(f"  {verb:<{width}}  {text}")
    lines += ["", "`smelt <verb> --help` explains a verb and lists its config fields."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from smelt import __version__
        print(f"smelt {__version__}")
        return 0
    verb = argv[0]
    if verb not in VERBS:
        print(f"smelt: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = VERBS[verb][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"smelt {verb}: not available in this build ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    try:
        return int(module.main(argv[1:] if verb not in ("export", "import") else argv) or 0)
    except ConfigError as e:
        print(f"smelt {verb}: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"smelt {verb}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"smelt {verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
