"""`smelt report`: results.json files → markdown table, bar chart, CORE-style centred mean, emergence plot."""

from __future__ import annotations

from typing import Any


def centered(score: float, baseline: float) -> float:
    """Random-baseline-corrected score: 0 at chance, 1 at perfect (as in the DCLM / nanochat CORE metric)."""
    return (score - baseline) / (1.0 - baseline) if baseline < 1.0 else 0.0


def core_score(results: dict[str, Any]) -> dict[str, Any]:
    """Mean of centred accuracies over the accuracy tasks (bits-per-byte tasks have no baseline and are left out)."""
    per = {name: centered(r["acc"], r.get("random_baseline", 0.0))
           for name, r in results.items() if "acc" in r and "random_baseline" in r}
    return {"centered_mean": sum(per.values()) / len(per) if per else None, "centered": per}
