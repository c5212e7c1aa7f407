"""Curation readers, writers, extraction and the local executor (markers, removed/ audit, stats.json)."""

import gzip
import json
from pathlib import Path

import pytest

from conftest import data_path
from smelt.config import ConfigError
from smelt.data.document import Document
from smelt.data.pipeline import load_recipe, run_pipeline
from smelt.data.readers import InputUnit, list_units, read_jsonl, read_unit, read_warc
from smelt.data.writers import DocWriter


def _jsonl_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as f:
        for ln in lines:
            f.write(ln + b"\n")
    return path


def test_all_warc_files_read_without_crash():
    folder = data_path("web/warc")
    total_docs = 0
    for p in sorted(folder.iterdir()):
        problems: list = []
        docs = list(read_warc(str(p), problems, {}))
        total_docs += len(docs)
        for pr in problems:  # every problem names its file and offset
            assert pr["file"] == str(p) and "offset" in pr and pr["kind"]
    assert total_docs >= 12
    wet = list(read_warc(str(folder / "commoncrawl_whirlwind.warc.wet.gz"), [], {}))
    assert len(wet) == 1 and wet[0].url == "https://an.wikipedia.org/wiki/Escopete" and "html" not in wet[0].metadata
    trunc: list = []
    docs = list(read_warc(str(folder / "warcio_example-trunc.warc"), trunc, {}))
    assert docs and any(p["kind"] == "bad_record_header" and isinstance(p["offset"], int) for p in trunc)
    arc = list(read_warc(str(folder / "warcio_example-space-in-url.arc"), [], {}))
    assert arc[0].url.startswith("http://example.com/index.cfm?FuseAction=Email&EmailTitle=Examples From")


def test_truncated_and_corrupt_gzip_reported(tmp_path):
    src = data_path("web/warc/commoncrawl_whirlwind.warc.gz").read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(src[: len(src) // 2])
    problems: list = []
    list(read_warc(str(cut), problems, {}))
    assert problems and all(p["file"] == str(cut) for p in problems)
    junk = tmp_path / "junk.warc"
    junk.write_bytes(b"this is not a warc\n\x00\xff\xfe garbage\n")
    problems = []
    assert list(read_warc(str(junk), problems, {})) == []
    assert problems[0]["kind"] == "bad_record_header" and problems[0]["offset"] == 0


def test_jsonl_bad_lines_counted_with_line_numbers(tmp_path):
    p = _jsonl_gz(tmp_path / "a.jsonl.gz", [b'{"text": "good one", "id": "x"}', b'{"text": broken', b"",
                                            b'{"text": "caf\xe9"}', b'{"no_text": 1}', b'{"text": "fine"}'])
    problems: list = []
    docs = list(read_jsonl(str(p), problems))
    assert [d.text for d in docs] == ["good one", "caf\ufffd", "fine"]
    kinds = [(pr["kind"], pr["offset"].split()[1]) for pr in problems]
    assert kinds == [("bad_json", "2"), ("undecodable", "4"), ("no_text", "5")]


@pytest.mark.parametrize("fmt", ["jsonl.gz", "parquet"])
def test_writers_roundtrip(tmp_path, fmt):
    pytest.importorskip("pyarrow")
    with DocWriter(tmp_path / "out", fmt) as w:
        for i in range(3):
            w.write(Document(f"text {i}", f"id{i}", {"url": f"http://x/{i}", "language_score": 0.5}))
    unit = InputUnit(str(tmp_path / f"out.{fmt}"))
    docs = list(read_unit(unit, []))
    assert [(d.id, d.text, d.metadata["url"]) for d in docs] == [(f"id{i}", f"text {i}", f"http://x/{i}")
                                                                 for i in range(3)]


def test_extract_html_pages_with_time_limit():
    pytest.importorskip("trafilatura")
    tar = data_path("web/trafilatura_html.tar.gz")
    from smelt.data.extract import Extract, ExtractConfig
    step = Extract(ExtractConfig(), "extract")
    step.ensure_setup()
    docs = list(read_unit(InputUnit(str(tar), 0, 12), []))
    assert len(docs) == 12 and all(d.metadata["html"] for d in docs)
    reasons = [step.process(d) for d in docs]
    kept = [d for d, r in zip(docs, reasons) if r is None]
    assert len(kept) >= 8 and all("<html" not in d.text.lower() for d in kept)
    # a tiny limit turns the extraction of a big page into a counted drop, not a stall
    slow = Extract(ExtractConfig(timeout_s=1e-6), "extract")
    slow.ensure_setup()
    assert slow.process(list(read_unit(InputUnit(str(tar), 0, 1), []))[0]) == "timeout"


def _recipe(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "recipe.toml"
    p.write_text(body)
    return p


SIMPLE = """
[run]
output_format = "jsonl.gz"

[[step]]
type = "normalize"

[[step]]
type = "length"
min_words = 4
"""


def test_pipeline_workers_markers_removed_and_stats(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for f in range(3):
        _jsonl_gz(inp / f"part{f}.jsonl.gz",
                  [json.dumps({"text": f"doc {f} {i} " + ("word " * i), "id": f"{f}-{i}"}).encode()
                   for i in range(6)] + [b"{oops", b'{"text": "  ", "id": "blank"}'])
    out = tmp_path / "out"
    stats = run_pipeline(_recipe(tmp_path, SIMPLE), [str(inp)], out, workers=2, progress=False)
    assert stats["docs_in"] == 21 and stats["problems_total"] == 6
    assert stats["problems_by_kind"] == {"bad_json": 3, "empty_document": 3}
    length = stats["steps"]["length"]
    assert length["total"] == 18 and length["dropped"] == 3 and length["dropped_too_few_words"] == 3
    assert stats["docs_out"] == 15 == stats["output"]["docs"]
    removed = list(read_jsonl(str(out / "removed" / "length" / "part0.jsonl.gz.jsonl.gz"), []))
    assert len(removed) == 1 and removed[0].metadata["removed_reason"] == "too_few_words"
    kept = sum(len(list(read_jsonl(str(p), []))) for p in (out / "output").glob("*.jsonl.gz"))
    assert kept == 15
    saved = json.loads((out / "stats.json").read_text())
    assert saved["steps"]["length"]["dropped"] == 3
    # a re-run skips finished units (markers) and gives the same statistics
    markers = sorted((out / "_work" / "stage0").glob("*.done"))
    mtimes = [m.stat().st_mtime_ns for m in markers]
    stats2 = run_pipeline(_recipe(tmp_path, SIMPLE), [str(inp)], out, workers=2, progress=False)
    assert [m.stat().st_mtime_ns for m in markers] == mtimes
    assert stats2["steps"]["length"] == stats["steps"]["length"]
    # a lost marker reruns just that unit
    markers[1].unlink()
    stats3 = run_pipeline(_recipe(tmp_path, SIMPLE), [str(inp)], out, workers=1, progress=False)
    assert stats3["docs_out"] == 15 and markers[1].exists()


def test_recipe_errors_name_file_and_field(tmp_path):
    bad = _recipe(tmp_path, '[[step]]\ntype = "length"\nmin_wrds = 3\n')
    with pytest.raises(ConfigError, match=r"recipe.toml: step\[0\] \(length\)\.min_wrds: unknown field"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match=r"step\[1\]\.type: missing"):
        load_recipe({"step": [{"type": "length"}, {"min_chars": 1}]})
    with pytest.raises(ConfigError, match="unknown step type 'nope'"):
        load_recipe({"step": [{"type": "nope"}]})


def test_tar_is_split_into_units():
    tar = data_path("web/trafilatura_html.tar.gz")
    units = list_units([str(tar)], tar_members_per_unit=300)
    assert [(u.start, u.stop) for u in units] == [(0, 300), (300, 600), (600, 900), (900, 1033)]
    docs = list(read_unit(units[-1], []))
    assert len(docs) == 133 and all(d.metadata["html"] for d in docs)
    assert sum(1 for d in docs if d.url) > 100  # URLs come from the index file beside the tar


def test_set_overrides_name_step_and_field():
    r = load_recipe("fineweb", ["extract.timeout_s=0", "run.output_format=parquet", "language.languages=en,de"])
    ext = next(s for s in r.build_steps() if s.name == "extract")
    lang = next(s for s in r.build_steps() if s.name == "language")
    assert ext.cfg.timeout_s == 0.0 and r.run.output_format == "parquet" and lang.cfg.languages == ["en", "de"]
    with pytest.raises(ConfigError, match="no step named 'extrct'"):
        load_recipe("fineweb", ["extrct.timeout_s=0"])
    with pytest.raises(ConfigError, match=r"step\[1\] \(extract\)\.timeout_s: expected a number"):
        load_recipe("fineweb", ["extract.timeout_s=soon"])
