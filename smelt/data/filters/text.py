"""Word and sentence splitting for the heuristic filters, plus FineWeb's punctuation sets.

FineWeb's filters (via datatrove) split English words with spaCy's rule-based tokenizer, which is most of their
cost (~40 docs/s). `split_words` is a single compiled regex that reproduces spaCy's English behaviour on the
cases that move filter decisions: punctuation split from words (one token per mark, "..." kept whole),
clitics ("do" + "n't", "it" + "'s"), hyphens/slashes between words split, numbers with separators and dotted
abbreviations (U.S., e.g.) kept whole, URLs kept whole. The datatrove agreement test measures how often the
resulting keep/drop decisions match (see README "Data curation"); `tokenizer = "spacy"` in a filter's config
uses spaCy itself when exact parity matters more than speed.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from smelt.data.filters._en_exceptions import KEEP_DOT, SPLIT

# Unicode sentence terminals as used by FineWeb's line-punctuation rule (datatrove's TERMINAL_PUNCTUATION).
TERMINAL_PUNCTUATION = frozenset(
    '!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a'
    '\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945'
    '\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d'
    '\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce'
    '\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f'
    '\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87'
    '\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142'
    '\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c'
    '\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd'
    '\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7'
    '\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b'
    '\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5'
    '\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88'
)
# ASCII/CJK punctuation and control characters; a "word" made only of these counts as a symbol in Gopher rules.
PUNCTUATION = ("!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\\\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]~"
               "\u201c\u300a\u201e';\u2019{|\u2236\u00b4[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e\u00ab"
               "\u3009,><\u300b)?\uff09\u3002\u2026@_.\"}\u25ba\u00bb"
               + "".join(chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))
PUNCTUATION_SET = frozenset(PUNCTUATION) | TERMINAL_PUNCTUATION
TERMINAL_TUPLE = tuple(TERMINAL_PUNCTUATION)

_CLITIC = r"(?:[sSmMdD]|ll|LL|ve|VE|re|RE)\b"
# What may glue two word pieces into one token, following spaCy's English infix rules: digit separators
# (1,000 3.14 10:30 1/2), a period unless it sits between a lower- and an upper-case letter, a hyphen from a
# letter to a digit (Covid-19), an apostrophe that does not start a clitic (o'clock).
_JOIN = (r"(?:(?<=\d),(?=\d)|[:/](?=\d)|::(?=\w)|(?<![a-z])\.(?=\w)|\.(?![A-Z])(?=\w)|(?<=[^\W\d_])-(?=\d)"
         r"|[*&](?=\w)"  # gender star and ampersand inside words (Sportler*innen, Rat&Tat) are not split
         r"|['\u2019](?!" + _CLITIC + r")(?=\w)"
         # e-mail addresses and hyphenated domain names stay whole (spaCy's URL/e-mail matching); the lookaheads
         # only run at '@' and '-', so they cost little
         r"|@(?=[\w-]+(?:\.[\w-]+)+)|-(?=[\w-]*(?:\.[\w-]+)*(?:@|\.[a-z]{2,63}(?![\w-]))))")
_WORD_RE = re.compile(
    r"""(?:https?://|www\.)[^\s<>"]+?(?=[.,;:!?)\]'"]*(?:\s|$))"""  # URLs, minus trailing punctuation
    r"|\+\d\w*"                                                     # +49 (a + before a digit stays)
    r"|(?<!\S)(?:-|/+)\w+(?:" + _JOIN + r"\w+)*"                    # leading - or / stays: -804, /www
    r"|(?:\|[-:]+)+\|?"                                             # markdown table rules: |---|---|
    r"|\w+(?=[nN]['\u2019][tT]\b)|[nN]['\u2019][tT]\b"             # do + n't
    r"|(?<=\w)['\u2019]" + _CLITIC +                               # clitics: 's 'll 've 're 'm 'd
    r"|\w+(?:" + _JOIN + r"\w+)*(?:\.(?!\.)|-(?=\s)|\++(?=\s|$))?"  # words (C++); a final period: see _fix
    r"|@\w+|[:;]-?[()](?![\w(])|\):(?!\w)"                           # @handles, :) ;-) ): (spaCy keeps them)
    r"|\.{2,}|-{2,}|''|[^\w\s]",                                   # "..." "--" "''" whole, other marks one each
    re.UNICODE,
)


def _fix(tokens: list[str]) -> list[str]:
    """spaCy's exceptions and its rule for a word-final period: kept after one capital (K. GmbH.) or in known
    abbreviations (Dr. e.g.), split off otherwise (end. USA.); run-together contractions split (dont → do nt)."""
    out: list[str] = []
    app = out.append
    for t in tokens:
        if len(t) > 1 and t[-1] == "." and t[-2] != ".":
            if t in KEEP_DOT or (t[-2].isupper() and (len(t) == 2 or not t[-3].isupper())):
                app(t)
            else:
                app(t[:-1])
                app(".")
        elif t in SPLIT:
            out.extend(SPLIT[t])
        else:
            app(t)
    return out


def split_words(text: str) -> list[str]:
    """Words and punctuation tokens, spaCy-English-like (see module doc); whitespace is never a token."""
    return _fix(_WORD_RE.findall(text))


@lru_cache(maxsize=4096)
def _is_punct_token(tok: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in tok)


def count_sentences(tokens: list[str]) -> int:
    """spaCy `sentencizer` rule: a new sentence starts at the first non-punctuation token after a terminal mark."""
    if not tokens:
        return 0
    n, seen = 1, False
    for t in tokens:
        if t in TERMINAL_PUNCTUATION:
            seen = True
        elif seen and not _is_punct_token(t):
            n += 1
            seen = False
    return n


@lru_cache(maxsize=8)
def cached_words(text: str) -> list[str]:
    # Gopher repetition, Gopher quality and FineWeb quality all split the same text in a row; split it once.
    # (Callers must not mutate the returned list.)
    return split_words(text)


class SpacyWords:
    """Exact parity mode: spaCy's blank English tokenizer + sentencizer (what datatrove uses). Slow."""

    def __init__(self, language: str = "en"):
        import spacy  # lazy: only for tokenizer = "spacy"
        self.nlp = spacy.blank(language)
        self.nlp.add_pipe("sentencizer")

    def words(self, text: str) -> list[str]:
        self.nlp.max_length = len(text) + 10
        return [t.text.strip() for t in self.nlp(text) if t.text.strip()]

    def sentences(self, text: str) -> int:
        self.nlp.max_length = len(text) + 10
        return len(list(self.nlp(text).sents))


class Words:
    """The tokenizer a filter uses: `fast` (regex, default) or `spacy` (exact datatrove parity)."""

    def __init__(self, kind: str = "fast"):
        self.kind = kind
        self._spacy = SpacyWords() if kind == "spacy" else None

    def words(self, text: str) -> list[str]:
        return self._spacy.words(text) if self._spacy is not None else cached_words(text)

    def sentences(self, text: str) -> int:
        if self._spacy is not None:
            return self._spacy.sentences(text)
        return count_sentences(split_words(text))
