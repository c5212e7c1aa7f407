"""Agreement with datatrove's FineWeb filters (optional `curate-test` extra).

Both pipelines get the same documents: pages extracted once by smelt's trafilatura step (datatrove pins an
older trafilatura whose text differs on about half of the pages, so extraction is compared separately). The
chain is FineWeb's: Gopher repetition → Gopher quality → C4 lines (rewrites the text) → FineWeb quality, each
with the English word tokenizer, on every page whatever its language (more varied input than English only).
"""

import json
import tarfile

import pytest

from conftest import data_path
from smelt.data.base import build_step
from smelt.data.document import Document

CHAIN = ["gopher_repetition", "gopher_quality", "c4", "fineweb_quality"]


def extracted_pages(limit: int | None) -> list[Document]:
    pytest.importorskip("trafilatura")
    from smelt.data.readers import InputUnit, read_unit
    tar = data_path("web/trafilatura_html.tar.gz")
    ext = build_step({"type": "extract", "timeout_s": 0}, 0)  # no time limit: same text on every machine
    ext.ensure_setup()
    docs = []
    for d in read_unit(InputUnit(str(tar), 0, -1 if limit is None else limit), []):
        if ext.process(d) is None:
            docs.append(d)
    return docs


def datatrove_decisions(docs: list[Document]) -> list[str]:
    flt = pytest.importorskip("datatrove.pipeline.filters")
    from datatrove.data import Document as DTDoc
    chain = [flt.GopherRepetitionFilter(), flt.GopherQualityFilter(), flt.C4QualityFilter(),
             flt.FineWebQualityFilter()]
    out = []
    for d in docs:
        doc = DTDoc(text=d.text, id=d.id, metadata={})
        decision = "keep"
        for name, f in zip(CHAIN, chain):
            r = f.filter(doc)
            if r is not True:
                decision = f"{name}:{r[1] if isinstance(r, tuple) else 'drop'}"
                break
        out.append(decision)
    return out


def smelt_decisions(docs: list[Document]) -> list[str]:
    steps = [build_step({"type": t}, i) for i, t in enumerate(CHAIN)]
    out = []
    for s in steps:
        s.ensure_setup()
    for d in docs:
        doc = Document(d.text, d.id, dict(d.metadata))
        decision = "keep"
        for s in steps:
            r = s.process(doc)
            if r is not None:
                decision = f"{s.name}:{r}"
                break
        out.append(decision)
    return out


def compare(limit: int | None) -> tuple[float, float, list[str]]:
    pytest.importorskip("datatrove")
    pytest.importorskip("spacy")
    docs = extracted_pages(limit)
    a, b = datatrove_decisions(docs), smelt_decisions(docs)
    same = sum((x == "keep") == (y == "keep") for x, y in zip(a, b)) / len(docs)
    same_reason = sum(x == y for x, y in zip(a, b)) / len(docs)
    diffs = [f"{d.id}: datatrove {x} / smelt {y}" for d, x, y in zip(docs, a, b) if x != y]
    print(f"\n{len(docs)} pages: keep/drop agreement {100 * same:.2f}%, same reason {100 * same_reason:.2f}%")
    print("\n".join(diffs))
    return same, same_reason, diffs


def test_datatrove_agreement_subset():
    same, same_reason, _ = compare(limit=150)
    assert same >= 0.995
    assert same_reason >= 0.95


@pytest.mark.slow
def test_datatrove_agreement_all_pages():
    same, same_reason, diffs = compare(limit=None)
    # Measured: 100.00% keep/drop agreement on 1,025 extracted pages; 98.73% with the same first reason — the
    # rest are pages failing two rules where a borderline ratio (alpha-word share ~0.80) flips which rule
    # fires first, because the regex splitter and spaCy split a few tokens (→Word, Ober-/Unterhitze) apart.
    assert same >= 0.995
    assert same_reason >= 0.97


def test_url_filter_agrees_with_datatrove():
    pytest.importorskip("datatrove")
    pytest.importorskip("tldextract")
    from datatrove.data import Document as DTDoc
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract
    rows = [json.loads(line) for line in open(data_path("web/trafilatura_html_index.jsonl"))]
    urls = [r["url"] for r in rows if r["url"]]
    dt = URLFilter()
    dt.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)  # offline public-suffix snapshot
    ours = build_step({"type": "url"}, 0)
    ours.ensure_setup()
    a = [(lambda r: "keep" if r is True else r[1])(dt.filter(DTDoc(text="x", id="u", metadata={"url": u})))
         for u in urls]
    b = [ours.process(Document("x", "u", {"url": u})) or "keep" for u in urls]
    assert a == b
    assert a.count("domain") >= 1  # the shared pages do include block-listed domains


def test_extraction_quality_on_eval_snippets():
    """trafilatura through smelt keeps the main-content snippets and drops the boilerplate ones listed in
    trafilatura's own evaluation data (a sample of 60 pages)."""
    pytest.importorskip("trafilatura")
    ev = json.loads(data_path("web/trafilatura_evaldata.json").read_text())
    tar = data_path("web/trafilatura_html.tar.gz")
    ext = build_step({"type": "extract", "timeout_s": 0}, 0)
    ext.ensure_setup()
    from smelt.data.readers import decode_html
    want = {v["file"]: v for v in list(ev.values())[:60]}
    hit_with = n_with = hit_without = n_without = 0
    with tarfile.open(tar) as tf:
        for m in tf:
            name = m.name.split("/")[-1]
            if name in want and m.isfile():
                text, _, _ = decode_html(tf.extractfile(m).read())
                d = Document(text, name, {"html": True})
                ext.process(d)
                for s in want[name].get("with", []):
                    n_with += 1
                    hit_with += s in d.text
                for s in want[name].get("without", []):
                    n_without += 1
                    hit_without += s not in d.text
    print(f"\nextraction: {hit_with}/{n_with} must-have snippets found, "
          f"{hit_without}/{n_without} boilerplate snippets absent")
    assert hit_with / n_with >= 0.8 and hit_without / n_without >= 0.8
