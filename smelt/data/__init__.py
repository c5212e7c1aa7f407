"""Data curation: raw web pages → clean, filtered, deduplicated, PII-redacted documents.

Files are the contract: a run reads input files (WARC/WET/ARC, HTML, tar of HTML, jsonl(.gz), parquet, text) and
writes `output/*.jsonl.gz` (or parquet), `removed/<step>/` audit files with reasons, and a merged `stats.json`.
"""

from smelt.data.document import Document

__all__ = ["Document"]
