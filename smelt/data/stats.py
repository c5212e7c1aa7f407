"""Merged statistics (`stats.json`) and the `smelt curate report` funnel (table + PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _add(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            dst[k] = dst.get(k, 0) + v
        elif isinstance(v, dict):
            _add(dst.setdefault(k, {}), v)


def merge_stats(units: list[dict[str, Any]], order: list[str], global_summaries: dict[str, Any],
                max_problems: int = 2000) -> dict[str, Any]:
    """Sum per-unit statistics. Per step: total / kept / dropped / dropped_<reason>, time, kept_chars and step
    counters; plus the share of step time, the input read counters and every bad-input problem (counted by
    kind, listed with file and offset up to `max_problems`)."""
    steps: dict[str, dict[str, Any]] = {name: {} for name in order}
    read: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    by_kind: dict[str, int] = {}
    output: dict[str, Any] = {}
    docs_in = 0
    for u in units:
        if u["stage"] == 0:
            docs_in += u["docs_in"]
            _add(read, u.get("read", {}))
        for name, s in u["steps"].items():
            _add(steps.setdefault(name, {}), s)
        for p in u.get("problems", []):
            by_kind[p["kind"]] = by_kind.get(p["kind"], 0) + 1
            if len(problems) < max_problems:
                problems.append(p)
        if "output" in u:
            _add(output, u["output"])
    for name, summary in global_summaries.items():
        steps.setdefault(name, {})["summary"] = summary
        steps[name]["time_s"] = steps[name].get("time_s", 0) + steps[name].pop("collect_time_s", 0) + \
            summary.get("decide_time_s", 0)
    total_time = sum(s.get("time_s", 0) for s in steps.values()) or 1.0
    for s in steps.values():
        s["time_share"] = round(s.get("time_s", 0) / total_time, 4)
    # ~4 characters per token is the usual English BPE ratio; an estimate, named as such
    output["tokens_est"] = int(output.get("chars", 0) / 4)
    return {"docs_in": docs_in, "docs_out": output.get("docs", 0), "read": read, "steps": steps,
            "order": order, "problems_by_kind": by_kind, "problems_total": sum(by_kind.values()),
            "problems": problems, "output": output}


def funnel_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in stats["order"]:
        s = stats["steps"].get(name, {})
        if "total" not in s:
            continue
        reasons = {k[len("dropped_"):]: v for k, v in s.items() if k.startswith("dropped_")}
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        rows.append({"step": name, "in": s["total"], "kept": s["kept"], "dropped": s["dropped"],
                     "kept_pct": 100.0 * s["kept"] / max(1, s["total"]), "time_share": s.get("time_share", 0.0),
                     "top_reasons": ", ".join(f"{r} {n}" for r, n in top)})
    return rows


def render_table(stats: dict[str, Any]) -> str:
    rows = funnel_rows(stats)
    lines = [f"documents read: {stats['docs_in']:,}   written: {stats['docs_out']:,}   "
             f"bad-input problems: {stats['problems_total']:,}",
             "",
             f"{'step':<20} {'in':>8} {'kept':>8} {'dropped':>8} {'kept%':>7} {'time%':>6}  top drop reasons",
             "-" * 100]
    for r in rows:
        lines.append(f"{r['step']:<20} {r['in']:>8,} {r['kept']:>8,} {r['dropped']:>8,} {r['kept_pct']:>6.1f}% "
                     f"{100 * r['time_share']:>5.1f}%  {r['top_reasons']}")
    out = stats.get("output", {})
    if out:
        lines += ["", f"output: {out.get('docs', 0):,} docs, {out.get('chars', 0):,} chars, "
                      f"{out.get('words', 0):,} words, ~{out.get('tokens_est', 0):,} tokens (chars/4)"]
    if stats.get("problems_by_kind"):
        lines.append("problems: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["problems_by_kind"].items())))
    return "\n".join(lines)


def save_funnel_png(stats: dict[str, Any], path: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    rows = funnel_rows(stats)
    names = ["input"] + [r["step"] for r in rows]
    kept = [stats["docs_in"]] + [r["kept"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(range(len(names)), kept, color="#4c72b0")
    for i, v in enumerate(kept):
        ax.text(v, i, f" {v:,}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("documents remaining")
    ax.set_title("curation funnel")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(run_dir: str | Path, png: bool = True) -> str:
    run_dir = Path(run_dir)
    f = run_dir / "stats.json"
    if not f.exists():
        raise FileNotFoundError(f"{f} does not exist (is {run_dir} the --output folder of `smelt curate`?)")
    stats = json.loads(f.read_text())
    text = render_table(stats)
    if png:
        p = save_funnel_png(stats, run_dir / "funnel.png")
        text += f"\nfunnel chart: {p}"
    return text
