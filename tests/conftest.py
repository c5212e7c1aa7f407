"""Shared test setup: point SMELT_DATA_DIR at the local data mirror when present; gate slow and GPU tests."""

import os
from pathlib import Path

import pytest

_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "SMELT_DATA_DIR" not in os.environ and _MIRROR.exists():
    os.environ["SMELT_DATA_DIR"] = str(_MIRROR)


def pytest_collection_modifyitems(config, items):
    slow_ok = os.environ.get("SMELT_SLOW") == "1"
    try:
        import torch
        gpu_ok = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        gpu_ok = False
    for item in items:
        if "slow" in item.keywords and not slow_ok:
            item.add_marker(pytest.mark.skip(reason="slow test; set SMELT_SLOW=1 to run"))
        if "gpu" in item.keywords and not gpu_ok:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def data_path(rel: str) -> Path:
    """A file under the data mirror, or skip the test when no mirror is present."""
    root = os.environ.get("SMELT_DATA_DIR")
    p = Path(root) / rel if root else None
    if p is None or not p.exists():
        pytest.skip(f"data mirror file {rel} not available (set SMELT_DATA_DIR)")
    return p
