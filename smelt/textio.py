"""Read documents out of the files a user points `smelt tokenizer train` and `smelt tokenize` at.

Supported inputs (a file, a folder searched recursively, or a registered dataset name such as `tinyshakespeare`):
- `.txt` (also `.txt.gz` / `.txt.bz2`): split into documents on blank lines by default (so a single corpus file
  like Tiny Shakespeare becomes thousands of paragraph-sized documents), or one document per line, per custom
  separator, or per whole file — see `TextOptions.txt_mode`.
- `.jsonl` / `.jsonl.gz` / `.jsonl.bz2`: one JSON object per line, text in a field (default `text`).
  A line that is not valid JSON, not an object, or lacks a string text field is *malformed*: it is counted and
  reported as `file:line: reason`, never fatal and never silently dropped.
- `.parquet`: a string column (needs the optional `pyarrow`).

Also here: the deterministic train/val rule shared by both commands (`is_val`).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from smelt.datasets import resolve

TXT_SUFFIXES = (".txt", ".txt.gz", ".txt.bz2")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.bz2", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED = TXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
MAX_EXAMPLES = 20  # how many malformed/skip messages are kept verbatim; all of them are counted


class InputError(ValueError):
    """An input cannot be read at all (unknown format, missing optional dependency). Names the file."""


@dataclass
class TextOptions:
    """How documents are cut out of input files."""
    txt_mode: Literal["paragraphs", "lines", "separator", "file"] = "paragraphs"
    separator: str = ""  # used when txt_mode == "separator"
    text_field: str = "text"  # jsonl key / parquet column


@dataclass
class ReadReport:
    """What was read and what was skipped (and why), so nothing disappears silently."""
    files: list[str] = field(default_factory=list)
    docs: int = 0
    empty: int = 0  # documents with no text (whitespace-only paragraphs/lines, "text": "")
    malformed: int = 0
    unsupported_files: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, msg: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(msg)

    def summary(self) -> str:
        parts = [f"{self.docs:,} documents from {len(self.files)} file(s)"]
        if self.empty:
            parts.append(f"{self.empty:,} empty documents skipped")
        if self.malformed:
            parts.append(f"{self.malformed:,} malformed records skipped")
        if self.unsupported_files:
            parts.append(f"{self.unsupported_files:,} files of unsupported type skipped")
        lines = ["; ".join(parts)]
        shown = len(self.examples)
        lines += [f"  {m}" for m in self.examples]
        hidden = self.malformed + self.unsupported_files - shown
        if hidden > 0:
            lines.append(f"  ... and {hidden:,} more")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"files": self.files, "docs": self.docs, "empty": self.empty, "malformed": self.malformed,
                "unsupported_files": self.unsupported_files, "examples": self.examples}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in sorted(SUPPORTED, key=len, reverse=True):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _open_text(path: Path) -> IO[str]:
    # newline="" keeps "\r\n" exactly as written: documents must round-trip byte for byte.
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    if name.endswith(".bz2"):
        return io.TextIOWrapper(bz2.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def expand_inputs(inputs: Iterable[str | os.PathLike], report: ReadReport | None = None) -> list[Path]:
    """Resolve dataset names, expand folders (recursively, sorted for determinism) into supported files."""
    out: list[Path] = []
    for item in inputs:
        p = resolve(item)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                if _suffix(f) in SUPPORTED:
                    out.append(f)
                elif report is not None:
                    report.unsupported_files += 1
                    report.note(f"{f}: unsupported file type, skipped")
        else:
            if _suffix(p) not in SUPPORTED:
                raise InputError(f"{p}: unsupported input type (expected one of {', '.join(SUPPORTED)})")
            out.append(p)
    return out


def _txt_docs(path: Path, opts: TextOptions) -> Iterator[str | None]:
    """Yield documents of a text file; None marks an empty one (counted by the caller)."""
    with _open_text(path) as f:
        if opts.txt_mode == "file":
            yield f.read() or None
            return
        if opts.txt_mode == "lines":
            for line in f:
                text = line.rstrip("\r\n")
                yield text if text.strip() else None
            return
        if opts.txt_mode == "separator":
            if not opts.separator:
                raise InputError(f"{path}: an empty document separator was given")
            carry = ""
            while chunk := f.read(1 << 20):
                parts = (carry + chunk).split(opts.separator)
                carry = parts.pop()
                for part in parts:
                    yield part if part.strip() else None
            if carry.strip():
                yield carry
            return
        # paragraphs: a run of blank (whitespace-only) lines ends a document; the blank lines themselves and the
        # final line ending of the paragraph are layout, not content, so they are not part of the document.
        para: list[str] = []
        for line in f:
            if line.strip():
                para.append(line)
            elif para:
                yield "".join(para).rstrip("\r\n")
                para = []
        if para:
            yield "".join(para).rstrip("\r\n")


def _jsonl_docs(path: Path, opts: TextOptions, report: ReadReport) -> Iterator[str | None]:
    key = opts.text_field
    with _open_text(path) as f:
        # Iterating the file splits on "\n" only; str.splitlines() would also split inside strings on U+2028.
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue  # a blank line carries no record
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                report.malformed += 1
                report.note(f"{path}:{lineno}: invalid JSON ({e.msg})")
                continue
            if not isinstance(rec, dict):
                reason = f"expected a JSON object, got {type(rec).__name__}"
            elif key not in rec:
                reason = f"no {key!r} field"
            elif not isinstance(rec[key], str):
                reason = f"field {key!r} is {type(rec[key]).__name__}, not a string"
            else:
                yield rec[key] or None
                continue
            report.malformed += 1
            report.note(f"{path}:{lineno}: {reason}")


def _parquet_docs(path: Path, opts: TextOptions, report: ReadReport) -> Iterator[str | None]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    pf = pq.ParquetFile(path)
    if opts.text_field not in pf.schema_arrow.names:
        raise InputError(f"{path}: no column {opts.text_field!r} (columns: {pf.schema_arrow.names})")
    row = 0
    for batch in pf.iter_batches(columns=[opts.text_field]):
        for value in batch.column(0).to_pylist():
            row += 1
            if not isinstance(value, str):
                report.malformed += 1
                report.note(f"{path}:row {row}: {opts.text_field!r} is {type(value).__name__}, not a string")
                continue
            yield value or None


def iter_documents(inputs: Iterable[str | os.PathLike], opts: TextOptions | None = None,
                   report: ReadReport | None = None) -> Iterator[str]:
    """Yield the non-empty documents of all inputs, in order; skips are counted in `report`."""
    opts = opts or TextOptions()
    report = report if report is not None else ReadReport()
    for path in expand_inputs(inputs, report):
        report.files.append(str(path))
        suffix = _suffix(path)
        if suffix in TXT_SUFFIXES:
            docs = _txt_docs(path, opts)
        elif suffix in JSONL_SUFFIXES:
            docs = _jsonl_docs(path, opts, report)
        else:
            docs = _parquet_docs(path, opts, report)
        try:
            for text in docs:
                if text is None or not text.strip():
                    report.empty += 1
                    continue
                report.docs += 1
                yield text
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start} of a read block)") from None


def is_val(text_utf8: bytes, fraction: float, seed: int = 0) -> bool:
    """The train/val rule: a document is in val iff a seeded hash of its *content* falls below `fraction`.

    Hashing content rather than position keeps the split stable when inputs are reordered or appended to, and
    sends exact duplicates to the same side, so a duplicated document cannot leak from train into val.
    """
    if fraction <= 0.0:
        return False
    h = hashlib.blake2b(text_utf8, digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(h, "little") < fraction * 2.0 ** 64
