"""FineWeb's URL filter (datatrove URLFilter rules): block-listed domain, sub-domain or URL, a hard-banned word
among the URL's words, `soft_word_threshold` soft-banned words, or a banned sub-word anywhere in the normalised
URL.

The lists are data, not code: the UT1-derived block lists (18 MB) and the word lists are read from `lists_dir`
(files `domains`, `urls`, `banned_words.txt`, `banned_subwords.txt`, `soft_banned_words.txt`; the first two may
also come from a `url_filterblacklists*.tar.gz`). With `lists_dir = "auto"` the copies packaged with datatrove
are used when it is installed; otherwise only the `extra_*` lists apply and a warning says so.
"""

from __future__ import annotations

import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from smelt.config import ConfigError, doc
from smelt.data.base import Step
from smelt.data.document import Document

_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


def normalize(text: str) -> str:
    return _NON_ALNUM.sub("", text).lower()


def _parse(lines: Iterable[str], do_normalize: bool = True) -> set[str]:
    return {normalize(x) if do_normalize else x.strip() for x in lines if x and x[0] != "#"}


def _datatrove_assets() -> Path | None:
    try:
        import importlib.util
        spec = importlib.util.find_spec("datatrove")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "assets"
    return p if p.exists() else None


@dataclass
class URLConfig:
    lists_dir: str = doc("auto", "folder with the block/word lists; 'auto' = datatrove's packaged copy if installed; "
                                 "'' = only the extra_* lists")
    soft_word_threshold: int = doc(2, "drop when at least this many soft-banned words are in the URL")
    extra_domains: list[str] = doc([], "more block-listed domains")
    extra_urls: list[str] = doc([], "more block-listed URLs")
    banned_words: list[str] = doc([], "more hard-banned URL words")
    banned_subwords: list[str] = doc([], "more banned sub-words")
    soft_banned_words: list[str] = doc([], "more soft-banned URL words")
    missing_url: str = doc("keep", "documents without a URL: keep or drop")

    def validate(self) -> None:
        if self.missing_url not in ("keep", "drop"):
            raise ConfigError("missing_url: must be keep or drop")


class URLFilter(Step):
    Config = URLConfig

    def setup(self) -> None:
        c = self.cfg
        self.domains = _parse(c.extra_domains, False)
        self.urls = _parse(c.extra_urls, False)
        self.banned = _parse(c.banned_words)
        self.subwords = _parse(c.banned_subwords)
        self.soft = _parse(c.soft_banned_words)
        lists = _datatrove_assets() if c.lists_dir == "auto" else (Path(c.lists_dir) if c.lists_dir else None)
        if lists is None:
            if c.lists_dir == "auto":
                warnings.warn("url filter: no block lists found (install datatrove or set lists_dir); "
                              "only extra_* lists apply")
        else:
            self._load_lists(lists)
        # One regex alternation finds any banned sub-word in a single C-level scan of the (short) URL;
        # an Aho-Corasick automaton would win only for much longer texts.
        self.sub_re = re.compile("|".join(re.escape(w) for w in sorted(self.subwords, key=len, reverse=True))) \
            if self.subwords else None
        self._domain = _registered_domain_fn()

    def _load_lists(self, d: Path) -> None:
        if not d.exists():
            raise ConfigError(f"lists_dir: {d} does not exist")
        for name, target, norm in (("banned_words.txt", self.banned, True),
                                   ("banned_subwords.txt", self.subwords, True),
                                   ("soft_banned_words.txt", self.soft, True)):
            if (d / name).exists():
                target |= _parse((d / name).read_text(encoding="utf-8").splitlines(), norm)
        if (d / "domains").exists():
            self.domains |= _parse((d / "domains").read_text(encoding="utf-8").splitlines(), False)
            self.urls |= _parse((d / "urls").read_text(encoding="utf-8").splitlines(), False) \
                if (d / "urls").exists() else set()
            return
        for arc in sorted(d.glob("url_filterblacklists*.tar.gz")):
            with tarfile.open(arc) as tf:
                for m in tf:
                    if m.name.split("/")[-1] in ("domains", "urls") and m.isfile():
                        data = tf.extractfile(m).read().decode("utf-8", "replace").splitlines()  # type: ignore
                        (self.domains if m.name.endswith("domains") else self.urls).update(_parse(data, False))

    def process(self, d: Document) -> str | None:
        url = d.metadata.get("url")
        if not url:
            return "no_url" if self.cfg.missing_url == "drop" else None
        registered, fqdn = self._domain(url)
        if registered in self.domains:
            return "domain"
        if fqdn in self.domains:
            return "subdomain"
        if url in self.urls:
            return "url"
        words = set(_NON_ALNUM.split(url))
        if any(w in words for w in self.banned):
            return "hard_blacklisted"
        if sum(w in words for w in self.soft) >= self.cfg.soft_word_threshold:
            return "soft_blacklisted"
        if self.sub_re is not None and self.sub_re.search(normalize(url)):
            return "blacklisted_subword"
        return None


def _registered_domain_fn():  # -> Callable[[str], tuple[str, str]]
    """(registered domain, full host) of a URL. tldextract with its bundled public-suffix snapshot (no network)
    when installed; else the last two host labels (three for short second levels such as co.uk)."""
    try:
        from tldextract import TLDExtract
        ext = TLDExtract(suffix_list_urls=(), cache_dir=None)

        def with_tld(url: str) -> tuple[str, str]:
            r = ext(url)
            return r.top_domain_under_public_suffix if hasattr(r, "top_domain_under_public_suffix") \
                else r.registered_domain, r.fqdn
        return with_tld
    except ImportError:
        from urllib.parse import urlsplit

        def simple(url: str) -> tuple[str, str]:
            host = (urlsplit(url if "//" in url else "//" + url).hostname or "").rstrip(".")
            parts = host.split(".")
            k = 3 if len(parts) >= 3 and len(parts[-2]) <= 3 and len(parts[-1]) == 2 else 2
            return ".".join(parts[-k:]), host
        return simple
