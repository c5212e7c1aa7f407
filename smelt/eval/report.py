"""`smelt report results.json [...] --out DIR`: a markdown table, a bar chart, the CORE-style centred mean, and an
emergence plot (each task's score against parameters and training FLOPs) when two or more models are given."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def centered(score: float, baseline: float) -> float:
    """Random-baseline-corrected score: 0 at chance, 1 at perfect (as in the DCLM / nanochat CORE metric)."""
    return (score - baseline) / (1.0 - baseline) if baseline < 1.0 else 0.0


def core_score(results: dict[str, Any]) -> dict[str, Any]:
    """Mean of centred accuracies over the accuracy tasks (bits-per-byte tasks have no baseline and are left out)."""
    per = {name: centered(r["acc"], r.get("random_baseline", 0.0))
           for name, r in results.items() if "acc" in r and "random_baseline" in r}
    return {"centered_mean": sum(per.values()) / len(per) if per else None, "centered": per}


def main_metric(r: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """(metric name, value, stderr) shown for a task: pass@1 for code, bits per byte for corpora, else accuracy."""
    for key in ("pass@1", "bits_per_byte", "acc"):
        if key in r:
            return key, r[key], r.get(f"{key}_stderr")
    return "n/a", None, None


def load_results(specs: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """`path` or `label=path`; the label defaults to the model folder's name (or the file's stem)."""
    out = []
    for spec in specs:
        label, _, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such results file (write one with `smelt eval --out`)")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or "results" not in data:
            raise ValueError(f"{p}: not a smelt results file (no 'results' key)")
        if not label:
            mp = (data.get("model") or {}).get("path")
            label = Path(mp).name if mp else p.stem
            if label in {lbl for lbl, _ in out}:
                label = f"{label}-{len(out)}"
        out.append((label, data))
    return out


def _fmt(v: float | None, err: float | None = None) -> str:
    if v is None:
        return "–"
    return f"{v:.4f}" + (f" ± {err:.4f}" if err is not None else "")


def _human(n: float | None) -> str:
    if not n:
        return "?"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def markdown(runs: list[tuple[str, dict[str, Any]]], images: list[str]) -> str:
    tasks: list[str] = []
    for _, d in runs:
        tasks += [t for t in d["results"] if t not in tasks]
    head = "| task | metric | " + " | ".join(lbl for lbl, _ in runs) + " |"
    lines = ["# Evaluation report", "", "## Models", "", "| model | params | training tokens | training FLOPs |",
             "|---|---|---|---|"]
    for lbl, d in runs:
        m = d.get("model", {})
        lines.append(f"| {lbl} | {_human(m.get('params'))} | {_human(m.get('train_tokens'))} | "
                     f"{_human(m.get('train_flops'))} |")
    lines += ["", "## Scores", "", head, "|---|---|" + "---|" * len(runs)]
    for t in tasks:
        metric, cells = "", []
        for _, d in runs:
            r = d["results"].get(t)
            if r is None:
                cells.append("–")
                continue
            metric, v, e = main_metric(r)
            cells.append(_fmt(v, e))
        lines.append(f"| {t} | {metric} | " + " | ".join(cells) + " |")
    cores = [core_score(d["results"])["centered_mean"] for _, d in runs]
    lines.append("| **CORE (centred mean)** | centred acc | " + " | ".join(_fmt(c) for c in cores) + " |")
    lines += ["", "Centred accuracy = (acc − random baseline) / (1 − random baseline); CORE is its mean over the "
              "accuracy tasks (bits-per-byte excluded). ± is the standard error of the mean.", ""]
    settings = sorted({json.dumps({k: d.get("config", {}).get(k) for k in ("shots", "limit", "seed", "chat")})
                       for _, d in runs})
    lines += ["## Settings", ""] + [f"- `{s}`" for s in settings] + [""]
    for lbl, d in runs:
        shots = {t: r.get("shots") for t, r in d["results"].items()}
        lines.append(f"- {lbl}: shots per task {json.dumps(shots)}")
    lines.append("")
    for img in images:
        lines += [f"![{img}]({img})", ""]
    return "\n".join(lines)


def bar_chart(runs: list[tuple[str, dict[str, Any]]], path: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = []
    for _, d in runs:
        tasks += [t for t, r in d["results"].items() if "acc" in r and t not in tasks]
    if not tasks:
        return False
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) + 2), 4.5))
    for j, (lbl, d) in enumerate(runs):
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(tasks))]
        vals = [main_metric(d["results"][t])[1] if t in d["results"] else 0.0 for t in tasks]
        errs = [main_metric(d["results"][t])[2] or 0.0 if t in d["results"] else 0.0 for t in tasks]
        ax.bar(xs, vals, width, yerr=errs, capsize=2, label=lbl)
    for i, t in enumerate(tasks):  # chance level per task, so "above random" is visible at a glance
        base = next((d["results"][t].get("random_baseline") for _, d in runs if t in d["results"]), None)
        if base:
            ax.hlines(base, i - 0.45, i + 0.45, colors="k", linestyles="dashed", linewidth=1)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=30, ha="right")
    ax.set_ylabel("accuracy (pass@1 for code); dashed = random")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def emergence_plot(runs: list[tuple[str, dict[str, Any]]], path: Path) -> bool:
    """Each task's score against parameters and against training FLOPs (log x). Needs >= 2 sized models."""
    sized = [(lbl, d) for lbl, d in runs if (d.get("model") or {}).get("params")]
    if len(sized) < 2:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks: list[str] = []
    for _, d in sized:
        tasks += [t for t in d["results"] if t not in tasks]
    axes_spec = [("params", "parameters")]
    if sum(1 for _, d in sized if d["model"].get("train_flops")) >= 2:
        axes_spec.append(("train_flops", "training FLOPs (6·N·D)"))
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(6 * len(axes_spec), 4.5), squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], axes_spec):
        # Bits per byte (lower is better, a different scale) goes on its own right-hand axis, dashed.
        twin = None
        for t in tasks + ["CORE"]:
            pts = []
            for _, d in sized:
                x = d["model"].get(key)
                if not x:
                    continue
                if t == "CORE":
                    y = core_score(d["results"])["centered_mean"]
                elif t in d["results"]:
                    y = main_metric(d["results"][t])[1]
                else:
                    continue
                if y is not None and math.isfinite(y):
                    pts.append((x, y))
            if len(pts) < 2:
                continue
            pts.sort()
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            if t.startswith(("bpb:", "ppl:")):
                twin = twin or ax.twinx()
                twin.plot(xs, ys, marker="s", linestyle="--", label=t, color="gray")
                twin.set_ylabel("bits per byte (dashed; lower is better)")
            elif t == "CORE":
                ax.plot(xs, ys, marker="o", label="CORE (centred)", linewidth=2.5, color="k")
            else:
                ax.plot(xs, ys, marker="o", label=t)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy / pass@1")
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            h2, l2 = twin.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle("Emergence: score vs scale")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_report(specs: list[str], out: str | Path) -> Path:
    runs = load_results(specs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    if bar_chart(runs, out / "scores.png"):
        images.append("scores.png")
    if emergence_plot(runs, out / "emergence.png"):
        images.append("emergence.png")
    md = markdown(runs, images)
    (out / "report.md").write_text(md)
    summary = {lbl: {"core": core_score(d["results"])["centered_mean"], "model": d.get("model", {}),
                     "scores": {t: main_metric(r)[1] for t, r in d["results"].items()}} for lbl, d in runs}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out / "report.md"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="smelt report", description=__doc__)
    p.add_argument("results", nargs="+", help="results.json files (optionally label=path)")
    p.add_argument("--out", default="report", help="output folder (report.md, scores.png, emergence.png)")
    args = p.parse_args(argv)
    path = build_report(args.results, args.out)
    print(path.read_text())
    print(f"wrote {path}", file=sys.stderr)
    return 0
