"""Readers: WARC / WET / ARC (plain or gzip), raw HTML files, tar archives of HTML, jsonl(.gz), parquet, text.

Every reader yields `Document`s and never raises on bad bytes: malformed JSON lines, truncated gzip members,
broken WARC headers, short record bodies and undecodable text are appended to `problems` as
`{"file", "offset", "kind", "message"}` so the run reports them (stats.json `problems`) instead of crashing or
silently losing data. Raw HTML is passed on with `metadata["html"] = True` for the `extract` step.

The WARC parser is our own (not warcio) because warcio stops at the first bad record; here a bad record is
reported with its offset and the parser resynchronises on the next `WARC/` header line.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from smelt.data.document import Document

Problems = list  # list[dict[str, Any]]: file, offset, kind, message

WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz", ".wat", ".wat.gz", ".arc", ".arc.gz", ".warc.gz.bad")
HTML_SUFFIXES = (".html", ".htm", ".html.gz", ".htm.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".jsonl.zst")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".md")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = WARC_SUFFIXES + HTML_SUFFIXES + JSONL_SUFFIXES + TAR_SUFFIXES + TEXT_SUFFIXES + PARQUET_SUFFIXES


def problem(problems: Problems, file: str, offset: int | str | None, kind: str, message: str) -> None:
    problems.append({"file": file, "offset": offset, "kind": kind, "message": message[:300]})


@dataclass(frozen=True)
class InputUnit:
    """One unit of work: a file, or a slice [start, stop) of a tar archive's members (so one big tar of pages
    still spreads over all workers)."""
    path: str
    start: int = 0
    stop: int = -1

    @property
    def name(self) -> str:
        base = Path(self.path).name
        return base if self.stop < 0 else f"{base}.{self.start:06d}-{self.stop:06d}"


def _has_suffix(name: str, suffixes: tuple[str, ...]) -> bool:
    low = name.lower()
    return any(low.endswith(s) for s in suffixes)


def list_units(inputs: list[str], tar_members_per_unit: int = 64) -> list[InputUnit]:
    """Expand input paths (files or folders, searched recursively) into sorted units of work."""
    files: list[Path] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            # every visible file: one we cannot read becomes an `unknown_format` problem, not a silent skip
            files.extend(f for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input {inp} does not exist")
    # `<name>_index.jsonl` beside `<name>.tar.gz` is the tar's URL sidecar (see _tar_url_map), not documents
    sidecars = {f.with_name(f.name.split(".tar")[0] + "_index.jsonl") for f in files
                if _has_suffix(f.name, TAR_SUFFIXES)}
    files = [f for f in files if f not in sidecars or f in [Path(i) for i in inputs]]
    units: list[InputUnit] = []
    for f in sorted(set(files)):
        if _has_suffix(f.name, TAR_SUFFIXES):
            try:
                with tarfile.open(f) as tf:
                    n = sum(1 for m in tf.getmembers() if m.isfile())
            except (tarfile.TarError, OSError, EOFError):
                n = 0  # the reader reports the error when the unit runs
            step = max(1, tar_members_per_unit)
            units.extend(InputUnit(str(f), s, min(n, s + step)) for s in range(0, max(n, 1), step))
        else:
            units.append(InputUnit(str(f)))
    return units


# ---------------------------------------------------------------------------------------------- byte streams

class _MultiGzip(io.RawIOBase):
    """Decompress concatenated gzip members (the WARC.gz layout) and stop cleanly at a truncated or corrupt
    member, recording where (compressed offset) instead of raising."""

    def __init__(self, raw: BinaryIO, file: str, problems: Problems):
        self.raw, self.file, self.problems = raw, file, problems
        self.d = zlib.decompressobj(31)
        self.pending = b""
        self.member_start = 0
        self.consumed = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.pending and not self.done:
            chunk = self.d.unconsumed_tail or self.raw.read(1 << 16)
            if not chunk:
                if self.d.unused_data:
                    chunk = b""
                elif not self.d.eof and self.consumed > self.member_start:
                    problem(self.problems, self.file, self.member_start, "truncated_gzip",
                            "gzip member ends before its end marker")
                    self.done = True
                    break
                else:
                    self.done = True
                    break
            try:
                out = self.d.decompress(chunk, 1 << 20)
            except zlib.error as e:
                problem(self.problems, self.file, self.member_start, "bad_gzip", f"corrupt gzip data: {e}")
                self.done = True
                break
            self.consumed += len(chunk) - len(self.d.unconsumed_tail) - len(self.d.unused_data)
            self.pending = out
            if self.d.eof:
                rest = self.d.unused_data
                self.member_start = self.consumed
                self.d = zlib.decompressobj(31)
                if rest:
                    if rest[:2] != b"\x1f\x8b":
                        problem(self.problems, self.file, self.consumed, "bad_gzip",
                                "trailing bytes after a gzip member are not gzip")
                        self.done = not self.pending
                        self.raw = io.BytesIO(b"")
                        break
                    # feed the rest of this chunk to the next member
                    self.raw = _Prepend(rest, self.raw)
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


class _Prepend(io.RawIOBase):
    def __init__(self, head: bytes, tail: BinaryIO):
        self.head, self.tail = head, tail

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.tail.read(n)


def open_bytes(path: str, problems: Problems) -> io.BufferedReader:
    raw = open(path, "rb")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return io.BufferedReader(_MultiGzip(raw, path, problems), buffer_size=1 << 16)
    return io.BufferedReader(raw, buffer_size=1 << 16)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- decoding

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)


def decode_html(body: bytes, declared: str | None = None) -> tuple[str, str, bool]:
    """Decode page bytes: declared charset (HTTP header), then <meta charset>, then UTF-8, then cp1252.
    Returns (text, encoding used, lossy?) — lossy means bytes had to be replaced."""
    cands = []
    if declared:
        cands.append(declared)
    m = _META_CHARSET.search(body[:4096])
    if m:
        cands.append(m.group(1).decode("ascii", "ignore"))
    cands += ["utf-8"]
    for enc in cands:
        enc = enc.strip().lower()
        if enc in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii"):
            enc = "cp1252"  # browsers (and the HTML spec) treat these labels as windows-1252
        try:
            return body.decode(enc), enc, False
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        from charset_normalizer import from_bytes  # optional: a better guess for undeclared legacy pages
        best = from_bytes(body).best()
        if best is not None:
            return str(best), best.encoding, False
    except ImportError:
        pass
    return body.decode("utf-8", errors="replace"), "utf-8", True


# ---------------------------------------------------------------------------------------------- WARC / ARC

def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ln in lines:
        if b":" in ln:
            k, v = ln.split(b":", 1)
            out[k.decode("latin-1").strip().lower()] = v.decode("utf-8", "replace").strip()
    return out


def _dechunk(body: bytes) -> bytes | None:
    out, pos = bytearray(), 0
    while True:
        nl = body.find(b"\r\n", pos)
        if nl < 0:
            return None
        try:
            size = int(body[pos:nl].split(b";")[0].strip() or b"x", 16)
        except ValueError:
            return None
        if size == 0:
            return bytes(out)
        out += body[nl + 2: nl + 2 + size]
        pos = nl + 2 + size + 2


def _split_http(payload: bytes) -> tuple[dict[str, str], bytes, str]:
    """HTTP response → (headers, body, status line)."""
    sep = payload.find(b"\r\n\r\n")
    sep_len = 4
    if sep < 0:
        sep, sep_len = payload.find(b"\n\n"), 2
    if sep < 0:
        return {}, payload, ""
    head = payload[:sep].split(b"\n")
    status = head[0].decode("latin-1", "replace").strip()
    headers = _parse_headers([h.rstrip(b"\r") for h in head[1:]])
    body = payload[sep + sep_len:]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        dechunked = _dechunk(body)
        if dechunked is None:
            headers["x-smelt-problem"] = "bad chunked transfer encoding; body kept as is"
        else:
            body = dechunked
    enc = headers.get("content-encoding", "").lower()
    if enc in ("gzip", "x-gzip", "deflate"):
        try:
            # 47 = auto-detect zlib or gzip header; raw deflate needs -15
            body = zlib.decompressobj(47 if enc != "deflate" else 15).decompress(body)
        except zlib.error:
            try:
                body = zlib.decompressobj(-15).decompress(body)
            except zlib.error:
                headers["x-smelt-problem"] = f"body declared Content-Encoding {enc} but does not decompress"
    elif enc and enc != "identity":
        headers["x-smelt-problem"] = f"unsupported Content-Encoding {enc}"
    return headers, body, status


def _charset(content_type: str) -> str | None:
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", content_type, re.I)
    return m.group(1) if m else None


def _is_text_type(ct: str) -> bool:
    ct = ct.lower()
    return (not ct) or "html" in ct or ct.startswith("text/") or "xml" in ct


def read_warc(path: str, problems: Problems, stats: dict[str, int] | None = None) -> Iterator[Document]:
    """Documents from the response/resource (HTML, to be extracted) and conversion (WET text) records of a
    WARC, WET or ARC file, plain or gzip. Other record types are counted in `stats` as `skipped_<type>`."""
    stats = stats if stats is not None else {}
    f = open_bytes(path, problems)
    pos = 0  # offset in the decompressed stream
    rec_idx = 0
    resync = False
    try:
        while True:
            line = f.readline()
            if not line:
                break
            start = pos
            pos += len(line)
            if not line.strip():
                continue
            if line.startswith(b"WARC/"):
                resync = False
                head: list[bytes] = []
                while True:
                    h = f.readline()
                    pos += len(h)
                    if not h or not h.strip():
                        break
                    head.append(h.rstrip(b"\r\n"))
                hdr = _parse_headers(head)
                try:
                    length = int(hdr.get("content-length", ""))
                except ValueError:
                    problem(problems, path, start, "bad_warc_header", "missing or invalid Content-Length")
                    resync = True
                    continue
                body = f.read(length)
                pos += len(body)
                if len(body) < length:
                    # keep what is there (an extractor copes with a cut page) but say so
                    problem(problems, path, start, "truncated_record",
                            f"record body has {len(body)} of {length} bytes; kept the partial record")
                rec_idx += 1
                doc = _warc_record_to_doc(path, start, hdr, body, problems, stats, rec_idx)
                if doc is not None:
                    yield doc
            elif not resync and _looks_like_arc_header(line):
                fields = line.decode("utf-8", "replace").split()
                try:
                    length = int(fields[-1])
                except ValueError:
                    problem(problems, path, start, "bad_arc_header", "ARC header without a length")
                    resync = True
                    continue
                body = f.read(length)
                pos += len(body)
                if len(body) < length:
                    problem(problems, path, start, "truncated_record",
                            f"ARC record body has {len(body)} of {length} bytes; kept the partial record")
                rec_idx += 1
                # URLs may contain spaces: the URL is everything before the IP-address field
                ip_at = next((i for i, x in enumerate(fields[1:], 1) if _IP.match(x)), 1)
                url = " ".join(fields[:ip_at])
                if url.startswith("filedesc://"):
                    stats["skipped_arcinfo"] = stats.get("skipped_arcinfo", 0) + 1
                    continue
                headers, payload, _ = _split_http(body)
                if "x-smelt-problem" in headers:
                    problem(problems, path, start, "bad_http_body", headers["x-smelt-problem"])
                ct = headers.get("content-type", fields[3] if len(fields) > 3 else "")
                if not _is_text_type(ct):
                    stats["skipped_non_html"] = stats.get("skipped_non_html", 0) + 1
                    continue
                text, enc, lossy = decode_html(payload, _charset(ct))
                if lossy:
                    problem(problems, path, start, "undecodable", "bytes replaced while decoding")
                yield Document(text, f"{Path(path).name}/{start}",
                               {"url": url, "source": Path(path).name, "html": True, "offset": start})
            else:
                if not resync:
                    problem(problems, path, start, "bad_record_header",
                            f"expected a WARC/ARC record header, got {line[:60]!r}")
                    resync = True  # skip lines until the next header
    except OSError as e:  # e.g. EOFError subclasses from gzip, I/O errors: report, keep what was read
        problem(problems, path, pos, "read_error", f"{type(e).__name__}: {e}")
    finally:
        f.close()


_IP = re.compile(r"^(\d{1,3}\.){3}\d{1,3}$|^[0-9a-fA-F:]+:[0-9a-fA-F:]*$")


def _looks_like_arc_header(line: bytes) -> bool:
    parts = line.split()
    return len(parts) >= 5 and (b"://" in parts[0] or parts[0].startswith(b"dns:")) and parts[-1].isdigit()


def _warc_record_to_doc(path: str, offset: int, hdr: dict[str, str], body: bytes, problems: Problems,
                        stats: dict[str, int], idx: int) -> Document | None:
    rtype = hdr.get("warc-type", "").lower()
    url = hdr.get("warc-target-uri", "").strip("<>") or None
    rid = hdr.get("warc-record-id", "").strip("<>") or f"{Path(path).name}/{offset}"
    meta: dict[str, Any] = {"url": url, "source": Path(path).name, "offset": offset}
    if hdr.get("warc-date"):
        meta["date"] = hdr["warc-date"]
    if rtype == "conversion":  # WET: already plain text
        text = body.decode("utf-8", errors="replace")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in body:
            problem(problems, path, offset, "undecodable", "bytes replaced while decoding WET text")
        return Document(text.strip(), rid, meta)
    if rtype == "response":
        headers, payload, status = _split_http(body)
        if "x-smelt-problem" in headers:
            problem(problems, path, offset, "bad_http_body", headers["x-smelt-problem"])
        ct = headers.get("content-type", "")
        if status and not re.search(r"\s2\d\d(\s|$)", status):
            stats["skipped_non_200"] = stats.get("skipped_non_200", 0) + 1
            return None
    elif rtype == "resource":
        payload, ct = body, hdr.get("content-type", "")
    else:
        stats[f"skipped_{rtype or 'untyped'}"] = stats.get(f"skipped_{rtype or 'untyped'}", 0) + 1
        return None
    if not _is_text_type(ct):
        stats["skipped_non_html"] = stats.get("skipped_non_html", 0) + 1
        return None
    text, enc, lossy = decode_html(payload, _charset(ct))
    if lossy:
        problem(problems, path, offset, "undecodable", "bytes replaced while decoding")
    meta["html"] = True
    return Document(text, rid, meta)


# ---------------------------------------------------------------------------------------------- other formats

def read_jsonl(path: str, problems: Problems, text_key: str = "text", id_key: str = "id") -> Iterator[Document]:
    f = open_bytes(path, problems)
    name = Path(path).name
    offset = 0
    try:
        for lineno, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problem(problems, path, f"line {lineno} (byte {start})", "undecodable", "line is not UTF-8")
                line = raw.decode("utf-8", errors="replace")
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                problem(problems, path, f"line {lineno} (byte {start})", "bad_json", str(e))
                continue
            if not isinstance(d, dict) or not isinstance(d.get(text_key), str):
                problem(problems, path, f"line {lineno} (byte {start})", "no_text",
                        f"record has no string field {text_key!r}")
                continue
            yield Document.from_dict(d, text_key, id_key, default_id=f"{name}/{lineno}")
    except (OSError, EOFError) as e:
        problem(problems, path, offset, "read_error", f"{type(e).__name__}: {e}")
    finally:
        f.close()


def read_parquet(path: str, problems: Problems, text_key: str = "text", id_key: str = "id") -> Iterator[Document]:
    import pyarrow.parquet as pq  # lazy: optional `curate` extra
    name = Path(path).name
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
        problem(problems, path, 0, "bad_parquet", f"{type(e).__name__}: {e}")
        return
    row = 0
    for batch in pf.iter_batches():
        for d in batch.to_pylist():
            row += 1
            if not isinstance(d.get(text_key), str):
                problem(problems, path, f"row {row}", "no_text", f"row has no string column {text_key!r}")
                continue
            yield Document.from_dict(d, text_key, id_key, default_id=f"{name}/{row}")


def read_text(path: str, problems: Problems) -> Iterator[Document]:
    with open_bytes(path, problems) as f:
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    lossy = text.count("\ufffd") > data.count(b"\xef\xbf\xbd")
    if lossy:
        problem(problems, path, 0, "undecodable", "bytes replaced while decoding")
    yield Document(text, Path(path).name, {"source": Path(path).name})


def read_html_file(path: str, problems: Problems, url_map: dict[str, str] | None = None) -> Iterator[Document]:
    with open_bytes(path, problems) as f:
        data = f.read()
    text, _, lossy = decode_html(data)
    if lossy:
        problem(problems, path, 0, "undecodable", "bytes replaced while decoding")
    name = Path(path).name
    yield Document(text, name, {"url": (url_map or {}).get(name), "source": name, "html": True})


def _tar_url_map(path: str) -> dict[str, str]:
    """Optional `<tar stem>_index.jsonl` beside a tar of pages: {"member", "url"} rows give each page its URL."""
    p = Path(path)
    stem = p.name.split(".tar")[0]
    idx = p.with_name(f"{stem}_index.jsonl")
    out: dict[str, str] = {}
    if idx.exists():
        with open(idx, encoding="utf-8") as f:
            for line in f:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if d.get("member") and d.get("url"):
                    out[d["member"]] = d["url"]
    return out


def read_tar(unit: InputUnit, problems: Problems) -> Iterator[Document]:
    urls = _tar_url_map(unit.path)
    name = Path(unit.path).name
    try:
        with tarfile.open(unit.path) as tf:
            # iterate lazily and stop at the slice end: a gzip tar can only be read front to back, so listing
            # all members first would decompress the whole archive for every slice
            i = -1
            for m in tf:
                if not m.isfile():
                    continue
                i += 1
                if i < unit.start:
                    continue
                if unit.stop >= 0 and i >= unit.stop:
                    break
                fobj = tf.extractfile(m)
                if fobj is None:
                    continue
                data = fobj.read()
                if m.name.endswith(".gz"):
                    try:
                        data = gzip.decompress(data)
                    except (OSError, EOFError) as e:
                        problem(problems, f"{unit.path}:{m.name}", 0, "bad_gzip", str(e))
                        continue
                text, _, lossy = decode_html(data)
                if lossy:
                    problem(problems, f"{unit.path}:{m.name}", 0, "undecodable", "bytes replaced while decoding")
                is_html = _has_suffix(m.name, HTML_SUFFIXES) or "<html" in text[:2000].lower()
                yield Document(text, f"{name}/{m.name}", {"url": urls.get(m.name), "source": name, "html": is_html})
    except (tarfile.TarError, OSError, EOFError) as e:
        problem(problems, unit.path, None, "bad_tar", f"{type(e).__name__}: {e}")


def read_unit(unit: InputUnit, problems: Problems, stats: dict[str, int] | None = None,
              text_key: str = "text", id_key: str = "id") -> Iterator[Document]:
    """Dispatch on the file name; unknown suffixes are reported, not guessed."""
    p = unit.path
    if _has_suffix(p, TAR_SUFFIXES):
        yield from read_tar(unit, problems)
    elif _has_suffix(p, WARC_SUFFIXES):
        yield from read_warc(p, problems, stats)
    elif _has_suffix(p, JSONL_SUFFIXES):
        yield from read_jsonl(p, problems, text_key, id_key)
    elif _has_suffix(p, PARQUET_SUFFIXES):
        yield from read_parquet(p, problems, text_key, id_key)
    elif _has_suffix(p, HTML_SUFFIXES):
        yield from read_html_file(p, problems)
    elif _has_suffix(p, TEXT_SUFFIXES):
        yield from read_text(p, problems)
    else:
        problem(problems, p, None, "unknown_format", "no reader for this file name")
