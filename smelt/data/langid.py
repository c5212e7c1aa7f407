"""Language identification: py3langid (its model ships inside the package, so it works offline) or fastText
`lid.176.bin` when the user gives a model path (FineWeb's choice). Sets `language` and `language_score`;
documents in other languages are dropped from the main output and, with `route_others`, written to
`by_language/<lang>/` instead of `removed/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from smelt.config import ConfigError, check, doc
from smelt.data.base import Step
from smelt.data.document import Document


@dataclass
class LanguageConfig:
    languages: list[str] = doc(["en"], "languages to keep (ISO 639-1); empty = keep all, only annotate")
    threshold: float = doc(0.65, "min language_score to keep (FineWeb: 0.65)")
    backend: str = doc("py3langid", "py3langid (bundled model) or fasttext (needs model_path)")
    model_path: str = doc("", "fastText language-ID model (e.g. lid.176.bin) for backend = fasttext")
    route_others: bool = doc(True, "write other-language documents to by_language/<lang>/ (else removed/)")

    def validate(self) -> None:
        check(0.0 <= self.threshold <= 1.0, "threshold", "must be in [0, 1]")
        check(self.backend in ("py3langid", "fasttext"), "backend", "must be py3langid or fasttext")
        if self.backend == "fasttext" and not self.model_path:
            raise ConfigError("model_path: backend = fasttext needs a model file (lid.176.bin)")


def load_identifier(backend: str = "py3langid", model_path: str = "") -> Callable[[str], tuple[str, float]]:
    if backend == "fasttext":
        if not Path(model_path).exists():
            raise ConfigError(f"model_path: {model_path} does not exist")
        import fasttext  # lazy: optional
        model = fasttext.load_model(model_path)

        def ft(text: str) -> tuple[str, float]:
            labels, scores = model.predict(text.replace("\n", " "))
            return labels[0].replace("__label__", ""), float(scores[0])
        return ft
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # lazy: optional `curate` extra
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def py3(text: str) -> tuple[str, float]:
        lang, score = ident.classify(text)
        return lang, float(score)
    return py3


class LanguageFilter(Step):
    Config = LanguageConfig

    def setup(self) -> None:
        self.identify = load_identifier(self.cfg.backend, self.cfg.model_path)
        self.keep = set(self.cfg.languages)

    def process(self, d: Document) -> str | None:
        lang, score = self.identify(d.text)
        d.metadata["language"] = lang
        d.metadata["language_score"] = round(score, 4)
        if not self.keep:
            return None
        if lang not in self.keep:
            return "other_language"
        if score < self.cfg.threshold:
            return "low_score"
        return None
