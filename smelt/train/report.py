"""A training run's report: loss curves as a PNG and a markdown summary next to the run's files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from smelt.train.metrics import read_metrics


def plot_loss_curve(run_dir: Path, out_png: Path, title: str = "") -> Path:
    """Train loss (every logged step) and validation loss (every evaluation) against the step."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r and not r.get("skipped")]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def write_run_report(run_dir: Path, out_md: Path, sections: dict[str, str] | None = None,
                     summary: dict[str, Any] | None = None) -> Path:
    """report.md: headline numbers, the loss curve, the run's config, and any extra sections (samples, ...)."""
    run_dir, out_md = Path(run_dir), Path(out_md)
    png = plot_loss_curve(run_dir, out_md.parent / "loss.png")
    rows = read_metrics(run_dir)
    last_val = next((r for r in reversed(rows) if "val_loss" in r), {})
    last_train = next((r for r in reversed(rows) if "loss" in r), {})
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    lines = [f"# Run report: {run_dir.name}", ""]
    table = {"steps": last_train.get("step"), "final train loss": last_train.get("loss"),
             "final val loss": last_val.get("val_loss"), "final val bits/byte": last_val.get("val_bpb"),
             "tokens/s (last window)": last_train.get("tokens_per_s"), "MFU": last_train.get("mfu"),
             "peak memory (MB)": last_train.get("peak_mem_mb"), "skipped steps": last_train.get("skipped_total"),
             "device": info.get("device"), "seed": info.get("seed"), **(summary or {})}
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in table.items() if v is not None]
    lines += ["", f"![loss curve]({png.relative_to(out_md.parent)})", ""]
    for title, body in (sections or {}).items():
        lines += [f"## {title}", "", body.rstrip(), ""]
    if (run_dir / "config.toml").exists():
        lines += ["## Config", "", "```toml", (run_dir / "config.toml").read_text().rstrip(), "```", ""]
    out_md.write_text("\n".join(lines))
    return out_md
