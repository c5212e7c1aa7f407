"""Byte-level BPE tokenizer (HF `tokenizers` underneath), special tokens, and the chat template with loss masks.

Design choices:
- Byte-level: every string maps to bytes first, so any Unicode text encodes and decodes back *exactly*
  (no unknown token, no normalisation, no prefix space added).
- Pre-tokenisation uses the GPT-4 (cl100k) split pattern before the byte mapping: words, 1-3 digit groups,
  punctuation runs and whitespace are split apart so merges never glue e.g. a word to the following space.
- The special tokens take ids 0..6 in `SPECIAL_TOKENS` order. Their *strings* appearing in ordinary text are
  encoded as ordinary text, never as the special ids: user data cannot forge a turn boundary.

Folder layout written by `save()`: `tokenizer.json` (the HF tokenizer, loadable by `tokenizers` directly) and
`smelt_tokenizer.json` (format version, special tokens, vocab size, fingerprint) for a quick sanity check.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as _HFTokenizer

if TYPE_CHECKING:
    from smelt.textio import TextOptions

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_ROLES = ("system", "user", "assistant")
# GPT-4's split pattern (tiktoken cl100k_base). Possessive quantifiers are supported by the Oniguruma engine.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                 r"""\s*[\r\n]|\s+(?!\S)|\s+""")
FORMAT_VERSION = 1
MAX_HELD_OUT_CHARS = 32 << 20
HF_FILE = "tokenizer.json"
META_FILE = "smelt_tokenizer.json"


class TokenizerError(ValueError):
    """A tokenizer folder is missing or corrupt, or a tokenizer call got bad input. Names the folder/field."""


def _fingerprint(tokenizer_json: str) -> str:
    return hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()[:16]


class Tokenizer:
    """A trained byte-level BPE tokenizer. Build with `Tokenizer.train(...)` or `Tokenizer.load(folder)`."""

    def __init__(self, hf: _HFTokenizer, fingerprint: str | None = None):
        for i, s in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(s) != i:
                raise TokenizerError(f"special token {s!r} must have id {i}, found {hf.token_to_id(s)}")
        # Special-token strings inside text are tokenised as plain text (see module docstring).
        hf.encode_special_tokens = True
        self._hf = hf
        self._fingerprint = fingerprint or _fingerprint(hf.to_str())
        self._special = {s: i for i, s in enumerate(SPECIAL_TOKENS)}

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
              show_progress: bool = False) -> Tokenizer:
        """Train on an iterable of documents. Specials get ids 0..6, the 256 byte symbols come next, then merges."""
        floor = len(SPECIAL_TOKENS) + 256
        if vocab_size < floor:
            raise TokenizerError(f"vocab_size: must be at least {floor} (7 specials + 256 bytes), got {vocab_size}")
        hf = _HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            # All 256 byte symbols are always in the vocabulary, even if the training text never used them,
            # so unseen bytes (an emoji in a Shakespeare-only tokenizer) still encode.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
        hf.train_from_iterator(texts, trainer)
        if hf.get_vocab_size() < vocab_size:
            warnings.warn(f"vocab_size: asked for {vocab_size}, but the corpus only supports {hf.get_vocab_size()} "
                          f"tokens at min_frequency={min_frequency}; the tokenizer is smaller", stacklevel=2)
        return cls(hf)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        folder = Path(path)
        if folder.is_file() and folder.name == HF_FILE:  # pointed at the file inside the folder: be forgiving
            folder = folder.parent
        f = folder / HF_FILE
        if folder.is_file():
            raise TokenizerError(f"{folder}: is a file; expected a tokenizer folder (with {HF_FILE})")
        if not folder.is_dir():
            raise TokenizerError(f"{folder}: tokenizer folder does not exist")
        if not f.is_file():
            raise TokenizerError(f"{folder}: not a tokenizer folder (no {HF_FILE}); create one with "
                                 f"`smelt tokenizer train`")
        text = f.read_text(encoding="utf-8")
        try:
            hf = _HFTokenizer.from_str(text)
        except Exception as e:  # the Rust side raises a generic Exception on bad JSON
            raise TokenizerError(f"{f}: corrupt tokenizer file ({e})") from None
        fp = _fingerprint(text)
        meta_path = folder / META_FILE
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise TokenizerError(f"{meta_path}: invalid JSON ({e})") from None
            if meta.get("fingerprint") not in (None, fp):
                raise TokenizerError(f"{folder}: {HF_FILE} does not match {META_FILE} (fingerprint {fp} vs "
                                     f"{meta.get('fingerprint')}); the folder was modified after saving")
        try:
            return cls(hf, fingerprint=fp)
        except TokenizerError as e:
            raise TokenizerError(f"{folder}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        text = self._hf.to_str()
        (folder / HF_FILE).write_text(text, encoding="utf-8")
        self._fingerprint = _fingerprint(text)
        meta = {"format": "smelt-tokenizer", "version": FORMAT_VERSION, "kind": "byte-level-bpe",
                "vocab_size": self.vocab_size, "special_tokens": SPECIAL_TOKENS, "split_pattern": SPLIT_PATTERN,
                "fingerprint": self._fingerprint}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    # ---- encode / decode ----------------------------------------------------------------------------------------
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self._hf.encode(text, add_special_tokens=False).ids
        return self._wrap(ids, bos, eos)

    def encode_batch(self, texts: list[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        """Encode many texts at once on the Rust thread pool (all cores unless TOKENIZERS_PARALLELISM=false)."""
        encs = self._hf.encode_batch_fast(list(texts), add_special_tokens=False)
        return [self._wrap(e.ids, bos, eos) for e in encs]

    def encode_docs(self, texts: list[str], dtype: np.dtype | type = np.uint32) -> list[np.ndarray]:
        """`<|bos|> text <|eos|>` for each text as numpy arrays: the form token shards store documents in."""
        out = []
        for enc in self._hf.encode_batch_fast(list(texts), add_special_tokens=False):
            ids = np.empty(len(enc.ids) + 2, dtype=dtype)
            ids[0], ids[1:-1], ids[-1] = self.bos_id, enc.ids, self.eos_id
            out.append(ids)
        return out

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        if bos:
            ids = [0] + ids
        if eos:
            ids = ids + [1]
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Ids back to text. Special ids decode to their strings (e.g. `<|end|>`) unless `skip_special`."""
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    # ---- vocabulary -----------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        return self._special["<|bos|>"]

    @property
    def eos_id(self) -> int:
        return self._special["<|eos|>"]

    @property
    def pad_id(self) -> int:
        return self._special["<|pad|>"]

    def token_id(self, special: str) -> int:
        if special not in self._special:
            raise TokenizerError(f"{special!r} is not a special token (known: {SPECIAL_TOKENS})")
        return self._special[special]

    def id_to_token(self, i: int) -> str | None:
        return self._hf.id_to_token(int(i))

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token id stands for (0 for the special tokens), as an int64 array of vocab_size.

        For bits-per-byte that ignores special tokens (nanochat's convention): sum the loss over targets with
        token_bytes > 0 and divide by the sum of their token_bytes. Each byte-level symbol is exactly one byte.
        """
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for tok, i in self._hf.get_vocab(with_added_tokens=False).items():
            if i >= len(SPECIAL_TOKENS):
                out[i] = len(tok)
        return out

    @property
    def fingerprint(self) -> str:
        """Short sha256 of tokenizer.json: shards and checkpoints record it to catch a tokenizer mix-up."""
        return self._fingerprint

    # ---- chat -------------------------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
        """Token ids and loss mask for a conversation.

        Layout: `<|bos|>` then, per message, `<|role|>` + content tokens + `<|end|>`. The mask is 1 exactly on the
        tokens the model should learn to produce: an assistant turn's content and its closing `<|end|>` (so the
        model learns to stop); 0 on everything else. `add_generation_prompt` appends `<|assistant|>` (mask 0) to
        prompt the model for the next reply.
        """
        ids = [self.bos_id]
        mask = [0]
        end = self._special["<|end|>"]
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise TokenizerError(f"messages[{i}]: expected a dict with 'role' and 'content', got {type(m).__name__}")
            role, content = m.get("role"), m.get("content")
            if role not in CHAT_ROLES:
                raise TokenizerError(f"messages[{i}].role: {role!r} is not one of {list(CHAT_ROLES)}")
            if not isinstance(content, str):
                raise TokenizerError(f"messages[{i}].content: expected a string, got {type(content).__name__}")
            body = self.encode(content)
            learn = 1 if role == "assistant" else 0
            ids += [self._special[f"<|{role}|>"], *body, end]
            mask += [0] + [learn] * (len(body) + 1)
        if add_generation_prompt:
            ids.append(self._special["<|assistant|>"])
            mask.append(0)
        return ids, mask

    # ---- stats --------------------------------------------------------------------------------------------------
    def bytes_per_token(self, text: str) -> float:
        """UTF-8 bytes per token on `text` (higher = better compression)."""
        n = len(self.encode(text))
        return len(text.encode("utf-8")) / n if n else 0.0

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, fingerprint={self.fingerprint!r})"


# ---- command line ---------------------------------------------------------------------------------------------

HELP = """\
smelt tokenizer train --input X [--input X ...] --vocab-size N --out DIR [--val-fraction 0.1]
smelt tokenizer eval  --tokenizer DIR --input X [--input X ...]

Inputs are files, folders (searched recursively) or registered dataset names such as `tinyshakespeare`:
.txt (documents split on blank lines; see --split-lines / --doc-separator / --whole-file), .jsonl / .jsonl.gz
(the "text" field, see --text-field) and .parquet (needs pyarrow). Malformed jsonl lines are counted and reported
with file:line.

`train` holds out a deterministic fraction of documents (a seeded hash of each document's content decides), trains
a byte-level BPE on the rest, saves the folder (tokenizer.json + smelt_tokenizer.json) and prints bytes/token on
the held-out documents. `eval` prints bytes/token (compression) of a saved tokenizer on the inputs.
"""


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", required=True, metavar="X",
                   help="a file, folder or dataset name (repeatable)")
    p.add_argument("--text-field", default="text", help="jsonl key / parquet column holding the text (default text)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--split-lines", action="store_true", help=".txt: one document per non-blank line")
    g.add_argument("--doc-separator", metavar="SEP", help=".txt: documents are separated by this exact string "
                   "(escapes such as \\n are understood)")
    g.add_argument("--whole-file", action="store_true", help=".txt: each file is one document")


def _unescape(s: str) -> str:
    r"""Shell-friendly escapes in a separator: \n \r \t \0 and \\ (other text, non-ASCII too, is kept as is)."""
    table = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\"}
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in table:
            out.append(table[s[i + 1]])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def text_options(args: argparse.Namespace) -> TextOptions:
    """Turn the shared input flags into `TextOptions` (also used by `smelt tokenize`)."""
    from smelt.textio import TextOptions
    if args.split_lines:
        return TextOptions("lines", text_field=args.text_field)
    if args.doc_separator is not None:
        return TextOptions("separator", separator=_unescape(args.doc_separator), text_field=args.text_field)
    if args.whole_file:
        return TextOptions("file", text_field=args.text_field)
    return TextOptions("paragraphs", text_field=args.text_field)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smelt tokenizer", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a byte-level BPE tokenizer", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(t)
    t.add_argument("--vocab-size", type=int, required=True, help="vocabulary size incl. 7 specials and 256 bytes")
    t.add_argument("--min-frequency", type=int, default=2, help="a pair must occur this often to be merged (default 2)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of documents held out to measure bytes/token (default 0.1; 0 = none)")
    t.add_argument("--seed", type=int, default=0, help="seed of the held-out hash (default 0)")
    e = sub.add_parser("eval", help="print bytes/token of a tokenizer on some inputs", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--tokenizer", required=True, help="a folder written by `smelt tokenizer train`")
    add_input_args(e)
    return p


def _compression(tok: Tokenizer, texts: Iterable[str], batch: int = 1024) -> tuple[int, int]:
    """(UTF-8 bytes, tokens) over `texts`, streamed in batches so a large corpus never sits in memory."""
    n_bytes = n_tokens = 0
    buf: list[str] = []
    for t in itertools.chain(texts, [None]):  # None flushes the last batch
        if t is not None:
            buf.append(t)
            n_bytes += len(t.encode("utf-8"))
        if buf and (t is None or len(buf) >= batch):
            n_tokens += sum(len(ids) for ids in tok.encode_batch(buf))
            buf = []
    return n_bytes, n_tokens


def main(argv: list[str]) -> int:
    from smelt.textio import ReadReport, is_val, iter_documents

    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help or a usage error: argparse has printed why
        return int(e.code or 0)
    report = ReadReport()
    opts = text_options(args)
    if args.cmd == "eval":
        tok = Tokenizer.load(args.tokenizer)
        n_bytes, n_tokens = _compression(tok, iter_documents(args.input, opts, report))
        print(report.summary(), file=sys.stderr)
        print(f"{n_bytes:,} bytes -> {n_tokens:,} tokens: {n_bytes / max(n_tokens, 1):.3f} bytes/token "
              f"(vocab {tok.vocab_size:,}, fingerprint {tok.fingerprint})")
        return 0

    if not 0.0 <= args.val_fraction < 1.0:
        raise TokenizerError(f"--val-fraction: must be in [0, 1), got {args.val_fraction}")
    held_out: list[str] = []
    held_chars = 0
    held_skipped = 0

    def train_docs() -> Iterable[str]:
        nonlocal held_chars, held_skipped
        for text in iter_documents(args.input, opts, report):
            if is_val(text.encode("utf-8"), args.val_fraction, args.seed):
                # Held-out documents are only measured, never trained on; keeping the first ~32M characters
                # of them is plenty for a bytes/token estimate and bounds memory on a large corpus.
                if held_chars < MAX_HELD_OUT_CHARS:
                    held_out.append(text)
                    held_chars += len(text)
                else:
                    held_skipped += 1
            else:
                yield text

    tok = Tokenizer.train(train_docs(), args.vocab_size, args.min_frequency, show_progress=sys.stderr.isatty())
    print(report.summary(), file=sys.stderr)
    tok.save(args.out)
    print(f"saved {tok} to {args.out}")
    if held_out:
        n_bytes, n_tokens = _compression(tok, held_out)
        more = f" (+{held_skipped:,} more held out, not measured)" if held_skipped else ""
        print(f"held-out: {len(held_out):,} documents{more}, {n_bytes:,} bytes -> {n_tokens:,} tokens: "
              f"{n_bytes / max(n_tokens, 1):.3f} bytes/token")
    return 0
