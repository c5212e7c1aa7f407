"""Dataset registry: a name → its public source and where a local mirror keeps it.

Resolution order for `resolve(name)`: an explicit existing path → `$SMELT_DATA_DIR/<local path>` (a mirror laid
out like the project's shared data folder) → the cache folder (`$SMELT_CACHE_DIR`, default ~/.cache/smelt) →
download from the public source when online (`allow_download=True`). Tests never download.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dataset:
    name: str
    local: str  # path relative to the data dir (a file or a folder)
    url: str  # public source of the same bytes ("" if it has no single-file source)
    description: str


_GH = "https://raw.githubusercontent.com"
REGISTRY: dict[str, Dataset] = {d.name: d for d in [
    Dataset("tinyshakespeare", "pretrain/tinyshakespeare/input.txt",
            f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt", "Tiny Shakespeare, 1.1 MB plain text"),
    Dataset("wikitext2_valid", "pretrain/wikitext-2/valid.txt",
            f"{_GH}/pytorch/examples/main/word_language_model/data/wikitext-2/valid.txt", "WikiText-2 validation"),
    Dataset("wikitext2_test", "pretrain/wikitext-2/test.txt",
            f"{_GH}/pytorch/examples/main/word_language_model/data/wikitext-2/test.txt", "WikiText-2 test"),
    Dataset("gutenberg_train", "pretrain/gutenberg/train.jsonl.gz", "", "151 Project Gutenberg books (jsonl.gz)"),
    Dataset("gutenberg_val", "pretrain/gutenberg/val.jsonl.gz", "", "6 Project Gutenberg books (jsonl.gz)"),
    Dataset("gsm8k_train", "eval/gsm8k_train.jsonl",
            f"{_GH}/openai/grade-school-math/master/grade_school_math/data/train.jsonl", "GSM8K train"),
    Dataset("gsm8k", "eval/gsm8k_test.jsonl",
            f"{_GH}/openai/grade-school-math/master/grade_school_math/data/test.jsonl", "GSM8K test"),
    Dataset("humaneval", "eval/HumanEval.jsonl.gz",
            f"{_GH}/openai/human-eval/master/data/HumanEval.jsonl.gz", "HumanEval, 164 problems"),
    Dataset("hellaswag", "eval/hellaswag_val_full.txt.bz2",
            f"{_GH}/klosax/hellaswag_text_data/main/hellaswag_val_full.txt.bz2", "HellaSwag validation"),
    Dataset("mmlu", "eval/mmlu", "", "MMLU test + dev CSVs, 57 subjects"),
    Dataset("hh_rlhf_harmless", "preference/hh-rlhf_harmless-base_test.jsonl.gz",
            f"{_GH}/anthropics/hh-rlhf/master/harmless-base/test.jsonl.gz", "HH-RLHF harmless-base test pairs"),
    Dataset("web_html", "web/trafilatura_html.tar.gz", "", "1,033 raw web pages (tar.gz of HTML)"),
    Dataset("badwords_en", "lists/badwords_en.txt", "", "LDNOOBW English bad-words list"),
]}

_FOUNDRY = f"{_GH}/mosaicml/llm-foundry/main/scripts/eval/local_data"
for _name, _group in [("arc_easy", "world_knowledge"), ("arc_challenge", "world_knowledge"),
                      ("piqa", "commonsense_reasoning"), ("copa", "commonsense_reasoning"),
                      ("commonsense_qa", "commonsense_reasoning"), ("siqa", "commonsense_reasoning"),
                      ("boolq", "reading_comprehension"), ("winogrande", "language_understanding"),
                      ("lambada_openai", "language_understanding"), ("math", "symbolic_problem_solving")]:
    REGISTRY[_name] = Dataset(_name, f"eval/{_name}.jsonl", f"{_FOUNDRY}/{_group}/{_name}.jsonl",
                              f"{_name} (llm-foundry ICL format)")


def data_dir() -> Path | None:
    d = os.environ.get("SMELT_DATA_DIR")
    return Path(d) if d else None


def cache_dir() -> Path:
    return Path(os.environ.get("SMELT_CACHE_DIR", Path.home() / ".cache" / "smelt"))


def resolve(name_or_path: str | os.PathLike, allow_download: bool = False) -> Path:
    """Return a local path for a registered dataset name or an explicit path; raise FileNotFoundError that says
    where it looked and how to get it."""
    p = Path(name_or_path)
    if p.exists():
        return p
    name = str(name_or_path)
    if name not in REGISTRY:
        raise FileNotFoundError(f"{name}: no such file, and not a registered dataset (known: {sorted(REGISTRY)})")
    ds = REGISTRY[name]
    tried = []
    if (d := data_dir()) is not None:
        cand = d / ds.local
        if cand.exists():
            return cand
        tried.append(str(cand))
    cand = cache_dir() / ds.local
    if cand.exists():
        return cand
    tried.append(str(cand))
    if allow_download and ds.url:
        cand.parent.mkdir(parents=True, exist_ok=True)
        tmp = cand.with_suffix(cand.suffix + ".part")
        try:
            urllib.request.urlretrieve(ds.url, tmp)
        except OSError as e:  # offline, DNS failure, HTTP error
            tmp.unlink(missing_ok=True)
            raise FileNotFoundError(f"dataset {name!r} not found locally (looked in {tried}) and downloading "
                                    f"{ds.url} failed: {e}. Set SMELT_DATA_DIR to a data mirror.") from None
        tmp.rename(cand)
        return cand
    how = f"download it from {ds.url}" if ds.url else "place a copy there"
    raise FileNotFoundError(f"dataset {name!r} ({ds.description}) not found; looked in {tried}. "
                            f"Set SMELT_DATA_DIR to a data mirror, or {how} into {cache_dir() / ds.local}")
