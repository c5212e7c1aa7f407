"""`smelt curate RECIPE --input PATH... --output DIR [--workers N] [--executor local|ray]`,
`smelt curate report DIR` and `smelt curate train-quality --pos ... --neg ... --out model.npz`."""

from __future__ import annotations

import argparse
import sys

from smelt.data.base import REGISTRY, config_fields, step_class


def _help_steps() -> str:
    lines = ["step types (fields: default: doc):"]
    for name in REGISTRY:
        try:
            cls = step_class(name)
        except ImportError as e:  # an optional dependency is missing; still list the step
            lines.append(f"  {name}: (needs {e.name})")
            continue
        lines.append(f"  {name}")
        for f, default, text in config_fields(cls):
            lines.append(f"      {f} = {default!r}: {text}")
    return "\n".join(lines)


def _train_quality(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="smelt curate train-quality",
                                 description="train the hashed n-gram quality classifier from good/bad examples")
    ap.add_argument("--pos", action="append", required=True, help="files of good documents (any readable input)")
    ap.add_argument("--neg", action="append", required=True, help="files of bad documents")
    ap.add_argument("--out", required=True, help="output .npz (use it as quality_classifier.model_path)")
    ap.add_argument("--buckets", type=int, default=1 << 18, help="hash buckets")
    ap.add_argument("--ngrams", type=int, default=2, help="word n-gram order")
    ap.add_argument("--epochs", type=int, default=5, help="SGD epochs")
    a = ap.parse_args(argv)
    from smelt.data.filters.model_based import HashedLinearClassifier
    from smelt.data.readers import list_units, read_unit

    def texts(paths: list[str]) -> list[str]:
        problems: list = []
        out = [d.text for u in list_units(paths) for d in read_unit(u, problems)]
        if problems:
            print(f"{len(problems)} bad input records skipped, first: {problems[0]}", file=sys.stderr)
        return out
    pos, neg = texts(a.pos), texts(a.neg)
    if not pos or not neg:
        raise ValueError("train-quality needs at least one positive and one negative document")
    m = HashedLinearClassifier(a.buckets, a.ngrams).fit(pos, neg, epochs=a.epochs)
    m.save(a.out)
    acc = (sum(m.predict(t) >= 0.5 for t in pos) + sum(m.predict(t) < 0.5 for t in neg)) / (len(pos) + len(neg))
    print(f"trained on {len(pos)} positive / {len(neg)} negative documents; training accuracy {acc:.3f}; "
          f"saved {a.out}")
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "train-quality":
        return _train_quality(argv[1:])
    if argv and argv[0] == "report":
        ap = argparse.ArgumentParser(prog="smelt curate report", description="funnel table + funnel.png")
        ap.add_argument("dir", help="an output folder of `smelt curate`")
        ap.add_argument("--no-png", action="store_true", help="print the table only")
        a = ap.parse_args(argv[1:])
        from smelt.data.stats import report
        print(report(a.dir, png=not a.no_png))
        return 0
    ap = argparse.ArgumentParser(
        prog="smelt curate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a curation recipe (TOML) over input files: WARC/WET/ARC(.gz), HTML, tar of HTML, "
                    "jsonl(.gz), parquet, txt. Default recipe: the packaged FineWeb-like `fineweb`.",
        epilog=_help_steps() if any(x in ("-h", "--help") for x in argv) else None)
    ap.add_argument("recipe", nargs="?", default="fineweb", help="recipe TOML path or packaged name (fineweb)")
    ap.add_argument("--input", "-i", action="append", required=True, help="input file or folder (repeatable)")
    ap.add_argument("--output", "-o", required=True, help="output folder")
    ap.add_argument("--workers", "-w", type=int, default=1, help="parallel worker processes")
    ap.add_argument("--executor", choices=("local", "ray"), default="local", help="local processes or Ray")
    ap.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    ap.add_argument("--limit", type=int, default=None, help="read at most N documents per input unit")
    ap.add_argument("--set", action="append", default=[], metavar="STEP.FIELD=VALUE",
                    help="override a recipe field, e.g. --set extract.timeout_s=0 --set run.output_format=parquet")
    a = ap.parse_args(argv)
    from smelt.data.pipeline import load_recipe, run_pipeline
    from smelt.data.stats import render_table
    recipe = load_recipe(a.recipe, a.set)
    if a.limit is not None:
        recipe.run.limit = a.limit
    map_fn = None
    if a.executor == "ray":
        from smelt.data.ray_executor import ray_map
        map_fn = ray_map(a.workers, a.ray_address, progress=sys.stderr.isatty())
    stats = run_pipeline(recipe, a.input, a.output, workers=a.workers, map_fn=map_fn)
    print(render_table(stats))
    print(f"\nwrote {a.output}/output/, {a.output}/removed/, {a.output}/stats.json", file=sys.stderr)
    return 0
