"""Language-model scores on raw text: perplexity and bits per byte on a file or a registered corpus."""

from __future__ import annotations

from pathlib import Path

from smelt import datasets
from smelt.eval.tasks.base import Doc, Task, TaskError, read_jsonl


class BitsPerByte(Task):
    """Each document is scored whole (sliding window when longer than the model); `.txt` files are one document,
    `.jsonl[.gz]` files give one document per row's "text". `limit` caps the number of documents, and for a
    single-document file the number of windows."""
    kind = "bpb"

    def __init__(self, name: str, source: str):
        self.name, self.source = name, source

    def docs(self, limit: int | None = None) -> list[Doc]:
        if not self.source:
            raise TaskError(f"{self.name}: name a corpus or a text file after 'bpb:'")
        path = datasets.resolve(self.source)
        if Path(path).is_dir():
            raise TaskError(f"{self.name}: {path} is a folder; give a text or jsonl file")
        suffixes = Path(path).suffixes
        if ".jsonl" in suffixes:
            return [Doc([row["text"]]) for _, row in read_jsonl(path, ("text",), limit)]
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TaskError(f"{path}: not UTF-8 text ({e})") from None
        return [Doc([text])]

    def prompt_format(self) -> dict:
        return {"source": self.source, "bos": "each document starts with BOS",
                "bits_per_byte": "sum of nats / (ln 2 * UTF-8 bytes)"}
