"""The unit that flows through curation: text + id + metadata (url, source, language, scores, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str | None:
        return self.metadata.get("url")

    def to_dict(self) -> dict[str, Any]:
        # Flat records (text, id, then metadata keys) are what `smelt tokenize` and most tools expect.
        out: dict[str, Any] = {"text": self.text, "id": self.id}
        for k, v in self.metadata.items():
            if k not in out:
                out[k] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], text_key: str = "text", id_key: str = "id",
                  default_id: str = "") -> "Document":
        meta = {k: v for k, v in d.items() if k not in (text_key, id_key)}
        text = d.get(text_key)
        if text is None:
            text = ""
        return cls(text=str(text), id=str(d.get(id_key, default_id) or default_id), metadata=meta)
