"""Interoperability with other ecosystems: Hugging Face `transformers` Llama folders (export and import)."""
