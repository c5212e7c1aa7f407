"""Main-text extraction from HTML (trafilatura, FineWeb's choice) and text normalisation.

`Extract` turns documents marked `metadata["html"]` into plain text with trafilatura using FineWeb's settings
(favor_precision, no comments, trafilatura's own deduplication). One pathological page must not stall a worker,
so each extraction runs under a per-document time limit. `Normalize` repairs mojibake (ftfy, if installed),
applies Unicode NFC, normalises whitespace and drops boilerplate lines (cookie banners, "share this", ...).
"""

from __future__ import annotations

import re
import signal
import threading
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from smelt.config import check, doc
from smelt.data.base import Step
from smelt.data.document import Document


class ExtractTimeout(BaseException):
    """BaseException on purpose: trafilatura wraps parts of its work in `except Exception` and would swallow
    an ordinary exception, fall back to a cruder extraction and make the output depend on machine load."""


_WARNED = False


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ExtractTimeout after `seconds` of wall time.

    Why SIGALRM and not a sandbox process (datatrove's way): a timer signal costs microseconds per document,
    while shipping every page to a helper process costs a pickle round trip. Signals only work in the main
    thread, so elsewhere (e.g. a threaded host) the limit is not enforced and the caller is warned once."""
    if seconds <= 0:
        yield
        return
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        global _WARNED
        if not _WARNED:
            import warnings
            warnings.warn("extract.timeout_s is not enforced outside the main thread of a process")
            _WARNED = True
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise ExtractTimeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class ExtractConfig:
    favor_precision: bool = doc(True, "trafilatura favor_precision (FineWeb: true): less text, less boilerplate")
    include_comments: bool = doc(False, "keep user comments below articles")
    deduplicate: bool = doc(True, "trafilatura's in-page duplicate-segment removal (FineWeb: true)")
    timeout_s: float = doc(1.0, "per-document extraction time limit in seconds (0 = none); overruns are dropped")
    min_chars: int = doc(1, "drop documents whose extracted text is shorter than this")

    def validate(self) -> None:
        check(self.timeout_s >= 0, "timeout_s", "must be >= 0")


class Extract(Step):
    Config = ExtractConfig

    def setup(self) -> None:
        import trafilatura  # lazy: optional `curate` extra
        self._extract = trafilatura.extract

    def process(self, d: Document) -> str | None:
        if not d.metadata.get("html"):
            return None  # already text (WET, jsonl, ...): nothing to extract
        try:
            with time_limit(self.cfg.timeout_s):
                text = self._extract(d.text, favor_precision=self.cfg.favor_precision,
                                     include_comments=self.cfg.include_comments, deduplicate=self.cfg.deduplicate)
        except ExtractTimeout:
            return "timeout"
        except Exception:  # noqa: BLE001 - trafilatura/lxml raise many types on broken markup; count, go on
            return "extract_error"
        d.metadata.pop("html", None)
        if not text or len(text) < self.cfg.min_chars:
            d.text = text or ""
            return "empty"
        d.text = text
        return None


# Lines that are site furniture rather than content; matched case-insensitively against a whole short line.
_BOILERPLATE = re.compile(
    r"^\s*(share (this|on)\b.*|follow us\b.*|sign up\b.*|subscribe\b.*|log ?in\b.*|sign in\b.*|"
    r"all rights reserved\.?.*|©.*|copyright ©?.*|read more\W*|click here\b.*|accept (all )?cookies\W*|"
    r"back to top\W*|print\W*|tweet\W*|advertisement\W*)\s*$", re.I)
_WS = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_NL = re.compile(r"\n{3,}")


@dataclass
class NormalizeConfig:
    fix_encoding: bool = doc(True, "repair mojibake with ftfy when it is installed (else only NFC)")
    unicode_form: str = doc("NFC", "Unicode normal form: NFC, NFKC or none")
    whitespace: bool = doc(True, "collapse runs of spaces/tabs, strip lines, at most one blank line in a row")
    remove_boilerplate_lines: bool = doc(True, "drop short lines like 'Share this', 'Read more', '© 2024 ...'")
    boilerplate_max_chars: int = doc(80, "only lines up to this length can be boilerplate")

    def validate(self) -> None:
        check(self.unicode_form in ("NFC", "NFKC", "none"), "unicode_form", "must be NFC, NFKC or none")


class Normalize(Step):
    Config = NormalizeConfig

    def setup(self) -> None:
        self._ftfy = None
        if self.cfg.fix_encoding:
            try:
                import ftfy
                self._ftfy = ftfy.fix_text
            except ImportError:
                import warnings
                warnings.warn("normalize.fix_encoding: ftfy is not installed; only Unicode normalisation runs")

    def process(self, d: Document) -> str | None:
        t = d.text
        if self._ftfy is not None:
            t = self._ftfy(t, normalization=None)  # type: ignore[call-arg]
        if self.cfg.unicode_form != "none":
            t = unicodedata.normalize(self.cfg.unicode_form, t)
        if self.cfg.whitespace or self.cfg.remove_boilerplate_lines:
            lines = []
            for ln in t.split("\n"):
                if self.cfg.whitespace:
                    ln = _WS.sub(" ", ln).strip()
                if (self.cfg.remove_boilerplate_lines and len(ln) <= self.cfg.boilerplate_max_chars
                        and _BOILERPLATE.match(ln)):
                    self.count("boilerplate_lines_removed")
                    continue
                lines.append(ln)
            t = "\n".join(lines)
            if self.cfg.whitespace:
                t = _NL.sub("\n\n", t).strip()
        d.text = t
        return "empty" if not t else None
