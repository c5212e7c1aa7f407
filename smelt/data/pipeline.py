"""Recipes (TOML) and the local executor.

A recipe is a `[run]` table plus an ordered `[[step]]` array:

    [run]
    output_format = "jsonl.gz"

    [[step]]
    type = "extract"          # any name in smelt.data.base.REGISTRY
    timeout_s = 1.0           # the step's own config fields

Input files are the unit of work (a big tar of pages is cut into slices of members). Global steps (dedup) split
the recipe into stages: stage k runs its per-document steps on every unit in parallel, writing
`_work/stage<k>/<unit>.jsonl.gz` plus the keys its global step needs; one process then decides the drops; stage
k+1 applies them and goes on. Every unit writes a completion marker (`<unit>.done`, holding its statistics), so a
re-run skips finished units and resumes where the last one stopped. Dropped documents go to
`removed/<step>/<unit>.jsonl.gz` with `removed_reason`; the merged statistics go to `stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from smelt.config import ConfigError, check, doc, from_dict, load_toml
from smelt.data.base import GlobalStep, Step, build_step
from smelt.data.readers import InputUnit, list_units, read_jsonl, read_unit
from smelt.data.writers import FORMATS, DocWriter


@dataclass
class RunConfig:
    output_format: str = doc("jsonl.gz", "output file format: jsonl.gz, jsonl or parquet")
    tar_members_per_unit: int = doc(64, "members of a tar archive per unit of work (spreads one tar over workers)")
    text_key: str = doc("text", "field holding the text in jsonl/parquet inputs")
    id_key: str = doc("id", "field holding the id in jsonl/parquet inputs")
    write_removed: bool = doc(True, "write every dropped document to removed/<step>/ with its reason")
    max_problems_listed: int = doc(2000, "bad-input problems listed in stats.json (all are counted)")
    limit: int = doc(-1, "read at most this many documents per unit (-1 = all); for quick trials")

    def validate(self) -> None:
        check(self.output_format in FORMATS, "output_format", f"must be one of {FORMATS}")
        check(self.tar_members_per_unit >= 1, "tar_members_per_unit", "must be >= 1")


@dataclass
class Recipe:
    run: RunConfig
    steps_spec: list[dict[str, Any]]
    source: str = "<dict>"

    def build_steps(self) -> list[Step]:
        return [build_step(s, i) for i, s in enumerate(self.steps_spec)]

    def fingerprint(self) -> str:
        blob = json.dumps({"run": self.run.__dict__, "steps": self.steps_spec}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def default_recipe_path() -> Path:
    return Path(str(resources.files("smelt") / "recipes" / "fineweb.toml"))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`run.field=value` or `<step name>.field=value` (a step's name defaults to its type). Values are strings
    here and are coerced to the field's type when the step is built, like any `--section.key value`."""
    data = {"run": dict(data.get("run", {})), "step": [dict(s) for s in data.get("step", [])]}
    for ov in overrides:
        if "=" not in ov or "." not in ov.split("=", 1)[0]:
            raise ConfigError(f"--set {ov!r}: expected <step name>.<field>=<value> or run.<field>=<value>")
        key, value = ov.split("=", 1)
        target, fld = key.rsplit(".", 1)
        if target == "run":
            data["run"][fld] = value
            continue
        hits = [s for s in data["step"] if str(s.get("name", s.get("type"))) == target]
        if not hits:
            names = [str(s.get("name", s.get("type"))) for s in data["step"]]
            raise ConfigError(f"--set {ov!r}: no step named {target!r}; steps are {names}")
        hits[0][fld] = value
    return data


def load_recipe(path_or_data: str | Path | dict[str, Any] | None, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe (a path, a packaged name like `fineweb`, or a dict), then apply `--set`
    overrides. Errors name the file and the step/field."""
    if path_or_data is None:
        path_or_data = default_recipe_path()
    if isinstance(path_or_data, (str, Path)) and not Path(path_or_data).exists():
        packaged = Path(str(resources.files("smelt") / "recipes" / f"{path_or_data}.toml"))
        if packaged.exists():
            path_or_data = packaged
    src = "<dict>"
    if isinstance(path_or_data, dict):
        data = path_or_data
    else:
        src = str(path_or_data)
        data = load_toml(path_or_data)
    try:
        if overrides:
            data = apply_overrides(data, overrides)
        unknown = set(data) - {"run", "step"}
        if unknown:
            raise ConfigError(f"{sorted(unknown)}: unknown top-level keys (a recipe has [run] and [[step]] tables)")
        run = from_dict(RunConfig, data.get("run", {}), prefix="run.")
        run.validate()
        steps_spec = data.get("step", [])
        if not isinstance(steps_spec, list) or not steps_spec:
            raise ConfigError("step: a recipe needs at least one [[step]] table")
        recipe = Recipe(run, [dict(s) for s in steps_spec], src)
        steps = recipe.build_steps()  # validates every step's config now, not in a worker later
        names = [s.name for s in steps]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"step names must be unique; repeated: {sorted(dup)} (set name = \"...\")")
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None
    return recipe


def split_stages(steps: list[Step]) -> list[tuple[list[Step], GlobalStep | None]]:
    """[a, b, DEDUP, c] → [([a, b], DEDUP), ([c], None)]."""
    stages: list[tuple[list[Step], GlobalStep | None]] = []
    cur: list[Step] = []
    for s in steps:
        if isinstance(s, GlobalStep):
            stages.append((cur, s))
            cur = []
        else:
            cur.append(s)
    stages.append((cur, None))
    return stages


# ------------------------------------------------------------------------------------------ one unit of work

_STEP_CACHE: dict[str, list[Step]] = {}


def _steps_for(recipe: Recipe) -> list[Step]:
    # one set of step objects per worker process: models and word lists load once, not once per file
    key = recipe.fingerprint()
    if key not in _STEP_CACHE:
        _STEP_CACHE[key] = recipe.build_steps()
    return _STEP_CACHE[key]


def _new_step_stats() -> dict[str, Any]:
    return {"total": 0, "kept": 0, "dropped": 0, "time_s": 0.0, "kept_chars": 0}


def run_unit(recipe: Recipe, stage: int, unit: InputUnit, out_dir: str) -> dict[str, Any]:
    """Run one stage of the recipe on one unit; write its outputs, removed docs, keys and completion marker.
    Returns the unit's statistics (also stored in the marker)."""
    out = Path(out_dir)
    run = recipe.run
    stages = split_stages(_steps_for(recipe))
    map_steps, glob = stages[stage]
    prev_glob = stages[stage - 1][1] if stage > 0 else None
    last = stage == len(stages) - 1
    work = out / "_work" / f"stage{stage}"
    problems: list[dict[str, Any]] = []
    read_stats: dict[str, int] = {}
    if stage == 0:
        docs = read_unit(unit, problems, read_stats, run.text_key, run.id_key)
    else:
        docs = read_jsonl(str(out / "_work" / f"stage{stage - 1}" / f"{unit.name}.jsonl.gz"), problems)
    drops: dict[int, str] = {}
    if prev_glob is not None:
        dec = json.loads((out / "_work" / "global" / f"{prev_glob.name}.json").read_text())
        drops = {int(k): v for k, v in dec["drops"].get(unit.name, {}).items()}
    all_steps = ([prev_glob] if prev_glob is not None else []) + map_steps
    st = {s.name: _new_step_stats() for s in all_steps}
    for s in map_steps:
        s.ensure_setup()
        s.counters.clear()
    if glob is not None:
        glob.ensure_setup()
        st[glob.name] = {"collect_time_s": 0.0}
    removed: dict[str, DocWriter] = {}
    target = (out / "output" / unit.name) if last else (work / unit.name)
    writer = DocWriter(target, run.output_format if last else "jsonl.gz", always_create=not last)
    keys: list[Any] = []
    n_read = n_out = out_chars = out_words = 0
    t_read = time.perf_counter()

    def drop(step: Step, d: Any, reason: str) -> None:
        s = st[step.name]
        s["dropped"] += 1
        s[f"dropped_{reason}"] = s.get(f"dropped_{reason}", 0) + 1
        if reason == "other_language" and getattr(step.cfg, "route_others", False):
            # other languages are kept, just elsewhere: by_language/<lang>/ in the output format
            lang = str(d.metadata.get("language", "unknown"))
            key = f"by_language/{lang}"
            w = removed.get(key)
            if w is None:
                w = removed[key] = DocWriter(out / "by_language" / lang / unit.name, run.output_format)
            w.write(d)
        elif run.write_removed:
            w = removed.get(step.name)
            if w is None:
                w = removed[step.name] = DocWriter(out / "removed" / step.name / unit.name, "jsonl.gz")
            d.metadata["removed_reason"] = reason
            w.write(d)

    for pos, d in enumerate(docs):
        if run.limit >= 0 and n_read >= run.limit:
            break
        n_read += 1
        if stage == 0 and not d.text.strip():
            # an empty record is bad input, not a filter decision: report it with where it came from
            problems.append({"file": unit.path, "offset": d.metadata.get("offset", d.id), "kind": "empty_document",
                             "message": f"document {d.id} has no text"})
            continue
        if prev_glob is not None:
            s = st[prev_glob.name]
            s["total"] += 1
            if pos in drops:
                drop(prev_glob, d, drops[pos])
                continue
            s["kept"] += 1
            s["kept_chars"] += len(d.text)
        ok = True
        for step in map_steps:
            s = st[step.name]
            s["total"] += 1
            t0 = time.perf_counter()
            reason = step.process(d)
            s["time_s"] += time.perf_counter() - t0
            if reason is not None:
                drop(step, d, reason)
                ok = False
                break
            s["kept"] += 1
            s["kept_chars"] += len(d.text)
        if not ok:
            continue
        if glob is not None:
            t0 = time.perf_counter()
            keys.append(glob.collect(d))
            st[glob.name]["collect_time_s"] += time.perf_counter() - t0
        writer.write(d)
        n_out += 1
        if last:
            out_chars += len(d.text)
            out_words += len(d.text.split())
    writer.close()
    for w in removed.values():
        w.close()
    for s in map_steps:
        for k, v in s.counters.items():
            st[s.name][k] = st[s.name].get(k, 0) + v
        s.counters.clear()
    if glob is not None:
        tmp = work / f"{unit.name}.keys.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            pickle.dump(keys, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, work / f"{unit.name}.keys.pkl")
    stats = {"unit": unit.name, "stage": stage, "docs_in": n_read, "docs_out": n_out,
             "wall_s": time.perf_counter() - t_read, "steps": st, "read": read_stats if stage == 0 else {},
             "problems": problems}
    if last:
        stats["output"] = {"docs": n_out, "chars": out_chars, "words": out_words}
    marker = work / f"{unit.name}.done"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".done.tmp")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, marker)
    return stats


def _unit_task(recipe: Recipe, stage: int, unit: InputUnit, out_dir: str) -> dict[str, Any]:
    return run_unit(recipe, stage, unit, out_dir)


# ------------------------------------------------------------------------------------------ the executor

MapFn = Callable[[Recipe, int, list[InputUnit], str], list[dict[str, Any]]]


def _local_map(workers: int, progress: bool) -> MapFn:
    def run(recipe: Recipe, stage: int, units: list[InputUnit], out_dir: str) -> list[dict[str, Any]]:
        from tqdm import tqdm
        bar = tqdm(total=len(units), desc=f"stage {stage}", unit="file", disable=not progress)
        results = []
        if workers <= 1 or len(units) <= 1:
            for u in units:
                results.append(run_unit(recipe, stage, u, out_dir))
                bar.update(1)
        else:
            # fork: workers inherit the imported modules instead of re-importing them (spawn costs seconds)
            ctx = get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futs = [pool.submit(_unit_task, recipe, stage, u, out_dir) for u in units]
                for fut in as_completed(futs):
                    results.append(fut.result())
                    bar.update(1)
        bar.close()
        return results
    return run


def run_pipeline(recipe: Recipe | str | Path | dict[str, Any] | None, inputs: list[str], output: str | Path,
                 workers: int = 1, progress: bool | None = None, map_fn: MapFn | None = None) -> dict[str, Any]:
    """Run `recipe` over `inputs` into `output`; skip units whose completion marker exists. Returns the merged
    statistics (also written to `output/stats.json`)."""
    from smelt.data.stats import merge_stats
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {workers}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    progress = sys.stderr.isatty() if progress is None else progress
    run_map = map_fn or _local_map(workers, progress)
    units = list_units(inputs, recipe.run.tar_members_per_unit)
    if not units:
        raise FileNotFoundError(f"no readable input files under {inputs}")
    fp_file = out / "_work" / "recipe.json"
    fp = {"fingerprint": recipe.fingerprint(), "units": [u.name for u in units]}
    if fp_file.exists() and json.loads(fp_file.read_text()) != fp:
        raise ConfigError(f"{out}: holds a run of a different recipe or input set; use a new --output folder "
                          f"(or delete {out / '_work'}) to start over")
    fp_file.parent.mkdir(parents=True, exist_ok=True)
    fp_file.write_text(json.dumps(fp))
    stages = split_stages(recipe.build_steps())
    all_stats: list[dict[str, Any]] = []
    global_summaries: dict[str, Any] = {}
    t0 = time.perf_counter()
    for k, (_, glob) in enumerate(stages):
        work = out / "_work" / f"stage{k}"
        todo = [u for u in units if not (work / f"{u.name}.done").exists()]
        if todo:
            run_map(recipe, k, todo, str(out))
        all_stats += [json.loads((work / f"{u.name}.done").read_text()) for u in units]
        if glob is not None:
            dec_file = out / "_work" / "global" / f"{glob.name}.json"
            if not dec_file.exists():
                keys = {}
                for u in units:
                    with open(work / f"{u.name}.keys.pkl", "rb") as f:
                        keys[u.name] = pickle.load(f)
                glob.ensure_setup()
                td = time.perf_counter()
                drops, summary = glob.decide(keys)
                summary["decide_time_s"] = time.perf_counter() - td
                dec_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = dec_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"drops": {u: {str(p): r for p, r in d.items()} for u, d in drops.items()},
                                           "summary": summary}))
                os.replace(tmp, dec_file)
            global_summaries[glob.name] = json.loads(dec_file.read_text())["summary"]
    stats = merge_stats(all_stats, [s.name for s in recipe.build_steps()], global_summaries,
                        recipe.run.max_problems_listed)
    stats["recipe"] = recipe.source
    stats["inputs"] = [str(i) for i in inputs]
    stats["units"] = len(units)
    stats["workers"] = workers
    stats["wall_s_this_run"] = time.perf_counter() - t0
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
