"""Items/s of `smelt eval` against lm-evaluation-harness on the same model and the same items, in one run.

    python bench/bench_eval.py [--model RUN_DIR] [--tasks arc_easy,hellaswag,...] [--limit 200] [--device cpu]

Three ways through the same items (each task's default shots: MMLU 5 from the dev split, the rest 0):
  smelt            smelt.eval.evaluate: shared-context tree scorer
  lm-eval (HF)     lm-eval's own HFLM on the same weights converted to a transformers Llama (its standard path)
  lm-eval (smelt)  lm-eval driving smelt's adapter (plain one-row-per-request scoring)
Each smelt task's items are written to a temporary jsonl with the fully rendered prompt (few-shot prefix
included), and a local lm-eval task definition scores it zero-shot, so the prompts are byte-identical. Prints per-task accuracy for all three (they should agree)
and the items/s ratio. Without `--model`, a random-init `debug`-preset model with a tokenizer trained on the first
200 kB of Tiny Shakespeare is used: speed does not depend on the weights, and agreement is still checked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smelt.eval import evaluate  # noqa: E402
from smelt.eval.tasks import get_task  # noqa: E402


def default_model(device: str):
    from smelt import datasets
    from smelt.model import build_model, preset
    from smelt.tokenizer import Tokenizer
    text = Path(datasets.resolve("tinyshakespeare")).read_text()[:200_000]
    tok = Tokenizer.train(text.split("\n\n"), vocab_size=2048)
    model = build_model(preset("debug", vocab_size=tok.vocab_size, max_seq_len=512), device=device, seed=0)
    return model.eval(), tok


def to_hf_llama(model, tok):
    """The same weights as a transformers LlamaForCausalLM (+ a fast tokenizer that prepends BOS)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    cfg = model.cfg
    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.hidden,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.kv_heads, max_position_embeddings=cfg.max_seq_len,
                         rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
                         hidden_act="silu", attention_bias=False, mlp_bias=False, bos_token_id=tok.bos_id,
                         eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    hf = LlamaForCausalLM(hf_cfg)
    sd = {"model.embed_tokens.weight": model.embed.weight[:cfg.vocab_size], "model.norm.weight": model.norm.weight}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        a, m = layer.attn, layer.mlp
        sd.update({p + "self_attn.q_proj.weight": a.q.weight, p + "self_attn.k_proj.weight": a.k.weight,
                   p + "self_attn.v_proj.weight": a.v.weight, p + "self_attn.o_proj.weight": a.o.weight,
                   p + "mlp.gate_proj.weight": m.gate.weight, p + "mlp.up_proj.weight": m.up.weight,
                   p + "mlp.down_proj.weight": m.down.weight, p + "input_layernorm.weight": layer.attn_norm.weight,
                   p + "post_attention_layernorm.weight": layer.mlp_norm.weight})
    if model.head is not None:
        sd["lm_head.weight"] = model.head.weight[:cfg.vocab_size]
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and all("lm_head" in k or "rotary" in k for k in missing), (missing, unexpected)
    if cfg.tie_embeddings:
        hf.tie_weights()
    import tokenizers
    raw = tokenizers.Tokenizer.from_str(tok._hf.to_str())
    raw.post_processor = TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", tok.bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>")
    return hf.to(next(model.parameters()).device).eval(), fast


def write_lm_eval_tasks(names: list[str], limit: int, folder: Path, seed: int) -> list[str]:
    """Render each smelt task's items, with smelt's own few-shot prefix (each task's default shots), into a jsonl
    and a local lm-eval task yaml that lm-eval scores zero-shot: the prompts are byte-identical."""
    from smelt.eval.evaluator import Evaluator
    from smelt.eval.tasks import select_shots
    ev = Evaluator(scorer=None, seed=seed, progress=False)  # type: ignore[arg-type]  # only its prompt rendering
    out = []
    for name in names:
        task = get_task(name)
        docs, pool = ev._docs(task, limit, task.default_shots)
        index = {id(d): j for j, d in enumerate(pool)}
        rows = []
        for i, d in enumerate(docs):
            shots = select_shots(task, pool, index.get(id(d), i), task.default_shots, seed)
            prefix = ev._prefix(task, d, shots)
            if d.partial:
                rows.append({"context_options": [prefix + c for c in d.contexts], "continuation": d.choices[0],
                             "gold": d.gold})
            else:
                rows.append({"query": prefix + d.contexts[0], "choices": d.choices, "gold": d.gold})
        data = folder / f"{name.replace(':', '_').replace('+', '_')}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tname = f"bench_{data.stem}"
        if docs[0].partial:
            body = ('doc_to_text: "{{gold}}"\ndoc_to_choice: "{{context_options}}"\n'
                    'doc_to_target: "{{continuation}}"\nmetric_list:\n  - metric: acc\n')
        else:
            body = ('doc_to_text: "{{query}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
                    'metric_list:\n  - metric: acc\n  - metric: acc_norm\n')
        (folder / f"{tname}.yaml").write_text(
            f"task: {tname}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f'test_split: test\noutput_type: multiple_choice\ntarget_delimiter: "{task.target_delimiter}"\n{body}')
        out.append(tname)
    return out


def run_lm_eval(lm, tnames: list[str], folder: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    tm = TaskManager(include_path=str(folder), include_defaults=False)
    res = simple_evaluate(model=lm, tasks=tnames, num_fewshot=0, task_manager=tm, log_samples=False,
                          bootstrap_iters=0)
    return res["results"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="run folder or checkpoint (default: random debug model)")
    ap.add_argument("--tasks", default="arc_easy,hellaswag,winogrande,mmlu:high_school_biology+astronomy")
    ap.add_argument("--limit", type=int, default=100, help="items per task (per subject for MMLU)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-hf", action="store_true", help="skip lm-eval's HF backend")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best time of each counts")
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    names = [t for t in args.tasks.split(",") if t]
    if args.model:
        from smelt.eval import load_model
        model, tok = load_model(args.model, device=args.device)
    else:
        model, tok = default_model(args.device)
    print(f"model: {model.num_params() / 1e6:.2f}M params, device {args.device}, threads {torch.get_num_threads()}")

    # Warm-up (first-call costs: thread pools, allocator, file cache) before anything is timed.
    evaluate(model, tok, names[0], shots=0, limit=2, batch_size=args.batch_size, progress=False)
    systems = ["smelt", "hf", "adapter"] if not args.skip_hf else ["smelt", "adapter"]
    # best[(system, task)] = [wall, cpu]: interleaved repeats, best of each. On a shared machine the load changes
    # during the run; CPU time of this process (all threads) is steadier than wall time when other jobs compete.
    best: dict[tuple[str, str], list[float]] = {}
    acc: dict[tuple[str, str], float] = {}
    n_items: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("HF_DATASETS_CACHE", str(folder / "hf-cache"))
        tnames = dict(zip(names, write_lm_eval_tasks(names, args.limit, folder, args.seed)))
        from smelt.eval.lm_eval_adapter import SmeltLM
        lms = {"adapter": SmeltLM(model=model, tokenizer=tok, batch_size=args.batch_size)}
        if not args.skip_hf:
            from lm_eval.models.huggingface import HFLM
            hf_model, hf_tok = to_hf_llama(model, tok)
            lms["hf"] = HFLM(pretrained=hf_model, tokenizer=hf_tok, batch_size=args.batch_size, device=args.device,
                             add_bos_token=True, dtype=torch.float32)
        for _ in range(args.repeats):
            for name in names:
                for system in systems:
                    w0, c0 = time.perf_counter(), time.process_time()
                    if system == "smelt":
                        r = evaluate(model, tok, name, limit=args.limit, batch_size=args.batch_size,
                                     seed=args.seed, progress=False)["results"][name]
                        n_items[name] = r["n"]
                        acc[(system, name)] = r.get("acc_micro", r["acc"])  # lm-eval: micro average
                    else:
                        acc[(system, name)] = run_lm_eval(lms[system], [tnames[name]], folder)[tnames[name]]["acc,none"]
                    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                    old = best.get((system, name), [math.inf, math.inf])
                    best[(system, name)] = [min(old[0], wall), min(old[1], cpu)]

    label = {"smelt": "smelt", "hf": "lm-eval HF", "adapter": "lm-eval adapter"}
    print(f"\nbest of {args.repeats} interleaved runs; items/s by wall time (by this process's CPU time)\n")
    print(f"{'task':<34}{'n':>5}" + "".join(f"{label[s] + ' acc':>22}" for s in systems)
          + "".join(f"{label[s] + ' items/s':>26}" for s in systems))
    agree = True
    for name in names:
        cells = [f"{acc[(s, name)]:>22.4f}" for s in systems]
        speeds = [f"{n_items[name] / best[(s, name)][0]:>15.1f} ({n_items[name] / best[(s, name)][1]:6.1f})"
                  for s in systems]
        agree &= all(abs(acc[(s, name)] - acc[("smelt", name)]) < 1e-6 for s in systems)
        print(f"{name:<34}{n_items[name]:>5}" + "".join(cells) + "".join(f"{x:>26}" for x in speeds))
    total = sum(n_items.values())
    tot = {s: [sum(best[(s, n)][k] for n in names) for k in (0, 1)] for s in systems}
    print(f"\n{'all tasks':<34}{total:>5}" + " " * 22 * len(systems)
          + "".join(f"{f'{total / tot[s][0]:.1f} ({total / tot[s][1]:.1f})':>26}" for s in systems))
    base = "hf" if "hf" in systems else "adapter"
    print(f"\nratio smelt / {label[base]}: {tot[base][0] / tot['smelt'][0]:.2f}x wall, "
          f"{tot[base][1] / tot['smelt'][1]:.2f}x cpu   scores {'identical' if agree else 'DIFFER'}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
