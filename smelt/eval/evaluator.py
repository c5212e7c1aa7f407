"""The Python API behind `smelt eval`: run tasks on a model and return the results dict that results.json holds."""

from __future__ import annotations

import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from smelt.eval.harness import Scorer, bits_per_byte
from smelt.eval.tasks import Doc, Task, TaskError, get_task, select_shots

RESULTS_VERSION = 1


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean with the sample standard deviation (n - 1), as lm-eval reports it."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda j: (xs[j], -j))  # ties go to the first index, like numpy


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm
    # disable=None: tqdm turns itself off when stderr is not a terminal (logs stay clean in CI).
    return tqdm(total=total, desc=desc, unit="req", disable=None if progress else True, leave=False)


class Evaluator:
    def __init__(self, scorer: Scorer, seed: int = 1234, chat: bool = False, progress: bool = True,
                 gen_kwargs: dict[str, Any] | None = None):
        self.scorer, self.seed, self.chat, self.progress = scorer, seed, chat, progress
        self.gen_kwargs = gen_kwargs or {}

    # ---- prompts ------------------------------------------------------------------------------------------------
    def _prefix(self, task: Task, doc: Doc, shots: list[Doc]) -> str:
        parts = [task.description(doc)] if task.description(doc) else []
        parts += [task.example(s) for s in shots]
        return "".join(p + task.fewshot_delimiter for p in parts)

    def mc_requests(self, task: Task, doc: Doc, shots: list[Doc]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) per choice, in the plain completion format or the chat format."""
        sc = self.scorer
        if self.chat and not doc.partial and hasattr(sc.tok, "render_chat"):
            msgs = [{"role": "system", "content": task.description(doc)}] if task.description(doc) else []
            for s in shots:
                msgs += [{"role": "user", "content": s.contexts[0]},
                         {"role": "assistant", "content": s.choices[s.gold]}]
            msgs.append({"role": "user", "content": doc.contexts[0]})
            ctx = sc.tok.render_chat(msgs, add_generation_prompt=True)[0]
            return [(ctx, sc.encode(c)) for c in doc.choices]
        prefix = self._prefix(task, doc, shots)
        if doc.partial:
            cont = task.target_delimiter + doc.choices[0]
            return [sc.encode_pair(prefix + c, cont) for c in doc.contexts]
        return [sc.encode_pair(prefix + doc.contexts[0], task.target_delimiter + c) for c in doc.choices]

    # ---- task kinds ---------------------------------------------------------------------------------------------
    def run_task(self, task: Task, shots: int | None, limit: int | None) -> dict[str, Any]:
        k = task.default_shots if shots is None else shots
        if task.max_shots is not None and k > task.max_shots:
            warnings.warn(f"{task.name}: {k} shots requested but the few-shot split has {task.max_shots}; "
                          f"using {task.max_shots}")
            k = task.max_shots
        t0 = time.perf_counter()
        if task.kind == "bpb":
            res = self._bpb(task, limit)
        elif task.kind == "generate":
            res = task.run(self, k, limit)  # type: ignore[attr-defined]
        else:
            res = self._loglikelihood_task(task, k, limit)
        dt = time.perf_counter() - t0
        res.update({"shots": k if task.kind != "bpb" else 0, "seed": self.seed, "seconds": round(dt, 3),
                    "items_per_s": round(res["n"] / dt, 3) if dt > 0 else None,
                    "format": "chat" if self.chat and task.kind != "bpb" else "plain",
                    "prompt_format": task.prompt_format()})
        return res

    def _docs(self, task: Task, limit: int | None, shots: int = 1) -> tuple[list[Doc], list[Doc]]:
        """(evaluated docs, few-shot pool). Shots come from the whole file so `--limit` does not change them."""
        if getattr(task, "limit_per_group", False) or task.name.startswith("mmlu"):
            docs = task.docs(limit)
            return docs, docs
        if not shots:  # zero-shot needs no pool: read only what is evaluated
            docs = task.docs(limit)
            return (docs[:limit] if limit else docs), docs
        all_docs = task.docs()
        return all_docs[:limit] if limit else all_docs, all_docs

    def _loglikelihood_task(self, task: Task, k: int, limit: int | None) -> dict[str, Any]:
        docs, pool = self._docs(task, limit, k)
        if not docs:
            raise TaskError(f"{task.name}: no items to evaluate")
        if self.chat and docs[0].partial:
            warnings.warn(f"{task.name}: partial scoring has no chat form; using the plain completion format")
        requests, spans = [], []
        index = {id(d): j for j, d in enumerate(pool)}
        for i, doc in enumerate(docs):
            shots = select_shots(task, pool, index.get(id(doc), i), k, self.seed)
            reqs = self.mc_requests(task, doc, shots)
            spans.append((len(requests), len(reqs)))
            requests += reqs
        bar = _bar(len(requests), task.name, self.progress)
        cut_before = self.scorer.truncated_continuations
        lls = self.scorer.loglikelihood(requests, progress=bar.update)
        bar.close()
        cut = self.scorer.truncated_continuations - cut_before
        if cut:
            warnings.warn(f"{task.name}: {cut} continuation(s) longer than the model's window were scored on "
                          f"their last {self.scorer.max_len - 1} tokens only")
        acc, acc_norm, greedy, logprobs = [], [], [], []
        groups: dict[str, list[float]] = {}
        for doc, (start, n) in zip(docs, spans):
            scores = [r.logprob for r in lls[start:start + n]]
            if task.kind == "lm":
                ok = float(lls[start].greedy)
                logprobs.append(scores[0])
            else:
                ok = float(_argmax(scores) == doc.gold)
                if not doc.partial:
                    norm = [s / max(1, len(c)) for s, c in zip(scores, doc.choices)]
                    acc_norm.append(float(_argmax(norm) == doc.gold))
            acc.append(ok)
            if doc.group:
                groups.setdefault(doc.group, []).append(ok)
        res: dict[str, Any] = {"n": len(docs), "acc": sum(acc) / len(acc), "acc_stderr": mean_stderr(acc)}
        if cut:
            res["truncated_continuations"] = cut
        if acc_norm:
            res.update(acc_norm=sum(acc_norm) / len(acc_norm), acc_norm_stderr=mean_stderr(acc_norm))
        if task.kind == "lm":
            res["perplexity"] = math.exp(-sum(logprobs) / len(logprobs))
            res["random_baseline"] = 0.0
        else:
            res["random_baseline"] = sum(1 / max(len(d.contexts), len(d.choices)) for d in docs) / len(docs)
        if groups:
            per = {g: {"acc": sum(v) / len(v), "n": len(v), "acc_stderr": mean_stderr(v)} for g, v in groups.items()}
            res["groups"] = per
            res["acc_micro"] = res["acc"]
            res["acc"] = sum(p["acc"] for p in per.values()) / len(per)  # macro average over subjects
            res["acc_stderr"] = math.sqrt(sum((p["acc_stderr"] or 0.0) ** 2 for p in per.values())) / len(per)
        return res

    def _window_prefix(self, text: str, windows: int) -> str:
        """Enough of a long text to fill `windows` sliding windows, so a quick `--limit` run does not tokenise a
        whole corpus. Grows the prefix until it has spare tokens beyond the last window (the cut end of a
        prefix may tokenise differently, so it must lie past everything scored)."""
        sc = self.scorer
        stride = self.gen_kwargs.get("stride") or sc.max_len // 2
        need = sc.max_len + windows * stride + 16
        chars = need * 8
        while chars < len(text):
            if len(sc.tok.encode(text[:chars])) > need:
                # cut at a whitespace so the scored tokens match those of the full text
                cut = text.rfind(" ", 0, chars)
                return text[:cut] if cut > 0 else text[:chars]
            chars *= 2
        return text

    def _bpb(self, task: Task, limit: int | None) -> dict[str, Any]:
        sc = self.scorer
        docs = task.docs(limit)
        single = len(docs) == 1
        nats, tokens, n_bytes = 0.0, 0, 0
        bar = _bar(len(docs), task.name, self.progress)
        for doc in docs:
            text = doc.contexts[0]
            if single and limit:
                text = self._window_prefix(text, limit)
            ids = sc.prefix() + sc.tok.encode(text)
            d_nats, d_tok = sc.rolling_nll(ids, stride=self.gen_kwargs.get("stride"),
                                          max_windows=limit if single else None)
            nats += d_nats
            tokens += d_tok
            skip = len(sc.prefix())
            if d_tok < len(ids) - skip:  # a window cap scored a prefix of the document: count its bytes only
                n_bytes += len(sc.tok.decode(ids[skip:skip + d_tok]).encode("utf-8"))
            else:
                n_bytes += len(text.encode("utf-8"))
            bar.update(1)
        bar.close()
        return {"n": len(docs), "bits_per_byte": bits_per_byte(nats, n_bytes),
                "perplexity": math.exp(nats / tokens) if tokens else None, "nats": nats, "tokens": tokens,
                "bytes": n_bytes, "window": sc.max_len, "stride": self.gen_kwargs.get("stride") or sc.max_len // 2}


def model_info(model: torch.nn.Module, path: str | Path | None = None) -> dict[str, Any]:
    """Size and (when the run folder says) training tokens and FLOPs, for reports and emergence plots."""
    info: dict[str, Any] = {"path": str(path) if path is not None else None}
    if hasattr(model, "num_params"):
        info["params"] = model.num_params()
        info["non_embedding_params"] = model.num_params(exclude_embedding=True)
    else:
        info["params"] = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "n_layers"):
        info["shape"] = {k: getattr(cfg, k) for k in ("n_layers", "d_model", "n_heads", "vocab_size", "max_seq_len")}
    if path is not None:
        tokens = _train_tokens(Path(path))
        if tokens:
            info["train_tokens"] = tokens
            # 6·N·D: forward + backward matmul FLOPs per token for the non-embedding weights (Kaplan et al.).
            info["train_flops"] = 6 * info.get("non_embedding_params", info["params"]) * tokens
    return info


def _train_tokens(path: Path) -> int | None:
    try:
        from smelt.train.checkpoint import resolve_checkpoint
        ckpt = resolve_checkpoint(path)
        state = json.loads((ckpt / "state.json").read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    counters = state.get("counters", {})
    if isinstance(counters, dict) and counters.get("tokens"):
        return int(counters["tokens"])
    for cand in (ckpt.parent.parent / "config.toml", ckpt / "config.toml"):
        if cand.exists():
            from smelt.config import load_toml
            cfg = load_toml(cand)
            d, t = cfg.get("data", {}), cfg.get("train", {})
            try:
                return int(state["step"]) * int(d.get("batch_size", 8)) * int(d.get("seq_len", 256)) \
                    * int(t.get("grad_accum", 1))
            except (KeyError, TypeError, ValueError):
                return None
    return None


def evaluate(model: torch.nn.Module, tokenizer, tasks: str | Sequence[str], shots: int | None = None,
             limit: int | None = None, batch_size: int = 16, seed: int = 1234, chat: bool = False,
             progress: bool = True, share_context: bool = True, model_path: str | Path | None = None,
             **gen_kwargs: Any) -> dict[str, Any]:
    """Score `model` on `tasks` (names or a comma list) and return the results dict (what results.json holds).

    `shots=None` uses each task's default (MMLU 5, GSM8K 8, others 0); `limit` evaluates the first N items of each
    task (of each subject for MMLU). Generative options (`max_new_tokens`, `num_samples`, `temperature`, `k`,
    `timeout`) and `stride` for bits-per-byte go in `gen_kwargs`."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise TaskError("no tasks given")
    task_objs = [get_task(n) for n in names]  # fail on an unknown name before any work
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    scorer = Scorer(model, tokenizer, batch_size=batch_size, share_context=share_context)
    ev = Evaluator(scorer, seed=seed, chat=chat, progress=progress, gen_kwargs=gen_kwargs)
    results: dict[str, Any] = {}
    for task in task_objs:
        results[task.name] = ev.run_task(task, shots, limit)
    from smelt.eval.report import core_score  # the aggregate lives with the report that renders it
    return {
        "version": RESULTS_VERSION,
        "model": model_info(model, model_path),
        "config": {"tasks": names, "shots": shots, "limit": limit, "batch_size": batch_size, "seed": seed,
                   "chat": chat, "share_context": scorer.share_context, "add_bos": scorer.add_bos,
                   "max_len": scorer.max_len, **{k: v for k, v in gen_kwargs.items() if v is not None}},
        "results": results,
        "core": core_score(results),
        "env": {"python": platform.python_version(), "torch": torch.__version__,
                "device": str(scorer.device), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }


def evaluate_checkpoint(path: str | Path, tasks: str | Sequence[str], device: str = "cpu",
                        tokenizer_dir: str | Path | None = None, **kw: Any) -> dict[str, Any]:
    """Load a run folder, checkpoint or exported HF folder and evaluate it (see `evaluate`)."""
    model, tok = load_model(path, device, tokenizer_dir)
    return evaluate(model, tok, tasks, model_path=path, **kw)


def load_model(path: str | Path, device: str = "cpu", tokenizer_dir: str | Path | None = None):
    from smelt.train.checkpoint import load_pretrained
    try:
        model, tok = load_pretrained(path, device=device)
    except ImportError as e:
        raise ValueError(f"{path}: cannot load this model format ({e})") from None
    if tokenizer_dir is not None:
        from smelt.tokenizer import Tokenizer
        tok = Tokenizer.load(tokenizer_dir)
    if tok is None:
        raise ValueError(f"{path}: model loaded but no tokenizer folder was found next to it "
                         f"(looked for tokenizer/ in the checkpoint and run folder); pass --tokenizer DIR")
    return model, tok


def write_results(results: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    tmp.replace(out)
    return out


def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for name, r in results["results"].items():
        if "bits_per_byte" in r:
            lines.append(f"{name:<24} bpb {r['bits_per_byte']:.4f}  ppl {r['perplexity']:.2f}  tokens {r['tokens']}")
            continue
        main = "pass@1" if "pass@1" in r else "acc"
        parts = [f"{main} {r[main]:.4f}"]
        if r.get(f"{main}_stderr") is not None:
            parts[0] += f" ± {r[f'{main}_stderr']:.4f}"
        if "acc_norm" in r:
            parts.append(f"acc_norm {r['acc_norm']:.4f}")
        parts.append(f"n {r['n']}  shots {r['shots']}  {r['items_per_s']} items/s")
        lines.append(f"{name:<24} " + "  ".join(parts))
    if results.get("core", {}).get("centered_mean") is not None:
        lines.append(f"{'CORE (centred mean)':<24} {results['core']['centered_mean']:.4f}")
    return lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `smelt eval`")
