"""Step interface and registry.

A recipe is a list of steps. A `Step` sees one document at a time: it may rewrite `doc.text`/`doc.metadata` and
returns `None` to keep the document or a short reason string to drop it (the executor counts the reason and
writes the document to `removed/<step>/`). A `GlobalStep` (deduplication) needs all documents at once: workers
compute a small key per document (`collect`), one process decides which positions to drop (`decide`), then the
drops are applied in the next pass — the same shape as datatrove's multi-stage minhash, without its file shuffles.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

from smelt.config import ConfigError, from_dict
from smelt.data.document import Document


@dataclass
class NoConfig:
    pass


class Step:
    """One per-document step. Subclasses set `Config` (a dataclass with `doc()` fields) and implement `process`."""

    Config: ClassVar[type] = NoConfig
    type_name: ClassVar[str] = ""

    def __init__(self, cfg: Any, name: str):
        self.cfg = cfg
        self.name = name
        self._ready = False
        # extra counters beyond kept/dropped (e.g. PII replacements per type); the executor collects and
        # clears them after each unit, so they add up correctly over units and workers
        self.counters: dict[str, float] = {}

    def setup(self) -> None:
        """Heavy, lazy initialisation (models, word lists); runs once per worker process before the first doc."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def process(self, doc: Document) -> str | None:
        raise NotImplementedError

    def count(self, key: str, n: float = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


class GlobalStep(Step):
    """A step that decides over all documents (dedup). `collect` runs in workers, `decide` in one process."""

    def process(self, doc: Document) -> str | None:  # pragma: no cover - never called per document
        raise AssertionError("global steps are applied by the executor")

    def collect(self, doc: Document) -> Any:
        raise NotImplementedError

    def decide(self, keys: dict[str, list[Any]]) -> tuple[dict[str, dict[int, str]], dict[str, Any]]:
        """keys: unit name → per-document keys in order. Returns (unit → {position: reason}, summary stats)."""
        raise NotImplementedError


# type name → "module:Class"; imported lazily so optional dependencies load only when a recipe uses them.
REGISTRY: dict[str, str] = {
    "extract": "smelt.data.extract:Extract",
    "normalize": "smelt.data.extract:Normalize",
    "language": "smelt.data.langid:LanguageFilter",
    "url": "smelt.data.filters.url:URLFilter",
    "gopher_repetition": "smelt.data.filters.gopher:GopherRepetition",
    "gopher_quality": "smelt.data.filters.gopher:GopherQuality",
    "c4": "smelt.data.filters.c4:C4Quality",
    "c4_badwords": "smelt.data.filters.c4:C4BadWords",
    "fineweb_quality": "smelt.data.filters.fineweb:FineWebQuality",
    "pii": "smelt.data.pii:PIIRedactor",
    "exact_dedup": "smelt.data.dedup.exact:ExactDedup",
    "minhash_dedup": "smelt.data.dedup.minhash:MinHashDedup",
    "decontaminate": "smelt.data.decontam:Decontaminate",
    "perplexity": "smelt.data.filters.model_based:PerplexityFilter",
    "quality_classifier": "smelt.data.filters.model_based:QualityClassifierFilter",
    "toxicity": "smelt.data.filters.model_based:ToxicityFilter",
    "length": "smelt.data.filters.basic:LengthFilter",
}


def step_class(type_name: str) -> type[Step]:
    if type_name not in REGISTRY:
        raise ConfigError(f"type: unknown step type {type_name!r}; known types are {sorted(REGISTRY)}")
    mod, cls = REGISTRY[type_name].split(":")
    return getattr(importlib.import_module(mod), cls)


def build_step(spec: dict[str, Any], index: int) -> Step:
    """Build a step from a recipe table `{type, name?, ...fields}`; errors name `step[i] (type).field`."""
    if "type" not in spec:
        raise ConfigError(f"step[{index}].type: missing (each [[step]] needs a type)")
    spec = dict(spec)
    type_name = str(spec.pop("type"))
    name = str(spec.pop("name", type_name))
    cls = step_class(type_name)
    prefix = f"step[{index}] ({name})."
    cfg = from_dict(cls.Config, spec, prefix=prefix)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
    step = cls(cfg, name)
    step.type_name = type_name
    return step


def config_fields(cls: type[Step]) -> list[tuple[str, Any, str]]:
    """(field, default, doc) for `smelt curate --help`."""
    cfg_cls = cls.Config
    if not is_dataclass(cfg_cls):
        return []
    inst = cfg_cls()
    return [(f.name, getattr(inst, f.name), f.metadata.get("doc", "")) for f in fields(cfg_cls)]
