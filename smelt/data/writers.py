"""Writers: jsonl.gz (default) and parquet. Each writes to a temporary name and renames on close, so a crashed
worker never leaves a half-written file that looks complete."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from smelt.data.document import Document

FORMATS = ("jsonl.gz", "jsonl", "parquet")


class DocWriter:
    """Append documents, then `close()` (atomic rename). Nothing is created for zero documents unless
    `always_create` (output folders then show an empty file per finished unit, which keeps re-runs obvious)."""

    def __init__(self, path: str | Path, fmt: str = "jsonl.gz", always_create: bool = False):
        if fmt not in FORMATS:
            raise ValueError(f"output format {fmt!r}: expected one of {FORMATS}")
        self.path = Path(f"{path}.{fmt}")
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.fmt = fmt
        self.always_create = always_create
        self.count = 0
        self._f: Any = None
        self._rows: list[dict[str, Any]] = []

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "jsonl.gz":
            # mtime=0 keeps the bytes deterministic, so equal runs (local vs Ray) give identical files
            self._f = gzip.GzipFile(self.tmp, "wb", compresslevel=6, mtime=0)
        elif self.fmt == "jsonl":
            self._f = open(self.tmp, "wb")

    def write(self, doc: Document | dict[str, Any]) -> None:
        rec = doc.to_dict() if isinstance(doc, Document) else doc
        self.count += 1
        if self.fmt == "parquet":
            self._rows.append(rec)
            return
        if self._f is None:
            self._open()
        self._f.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")

    def close(self) -> Path | None:
        if self.fmt == "parquet":
            if not self._rows and not self.always_create:
                return None
            import pyarrow as pa  # lazy: optional `curate` extra
            import pyarrow.parquet as pq
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(self._rows), self.tmp)
            self._rows = []
        else:
            if self._f is None:
                if not self.always_create:
                    return None
                self._open()
            self._f.close()
            self._f = None
        os.replace(self.tmp, self.path)
        return self.path

    def __enter__(self) -> "DocWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        elif self._f is not None:
            self._f.close()
            self.tmp.unlink(missing_ok=True)
