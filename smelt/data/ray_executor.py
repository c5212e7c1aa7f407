"""Ray executor (optional extra `ray`): the same units and `run_unit` as the local executor, scheduled as Ray
tasks, so a recipe runs unchanged on a cluster. Output folders must be on storage every node can reach (a
shared filesystem); the driver merges statistics and makes the global (dedup) decisions as locally."""

from __future__ import annotations

from typing import Any

from smelt.data.pipeline import MapFn, Recipe, run_unit
from smelt.data.readers import InputUnit


def ray_map(workers: int, address: str | None = None, progress: bool = True) -> MapFn:
    try:
        import ray  # lazy: optional extra
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'smelt[ray]'") from None

    def run(recipe: Recipe, stage: int, units: list[InputUnit], out_dir: str) -> list[dict[str, Any]]:
        from tqdm import tqdm
        if not ray.is_initialized():
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            else:
                # a local Ray instance with `workers` CPUs: one unit per CPU at a time, like the local pool
                ray.init(num_cpus=workers, ignore_reinit_error=True, log_to_driver=False,
                         include_dashboard=False)
        task = ray.remote(num_cpus=1)(run_unit)
        pending = [task.remote(recipe, stage, u, out_dir) for u in units]
        results = []
        with tqdm(total=len(pending), desc=f"stage {stage} (ray)", unit="file", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results.extend(ray.get(done))
                bar.update(len(done))
        return results
    return run
