"""The transformer, its config and presets."""

from smelt.model.config import PRESETS, ModelConfig, preset, resolve_preset
from smelt.model.transformer import KVCache, Transformer, build_model

__all__ = ["PRESETS", "ModelConfig", "preset", "resolve_preset", "KVCache", "Transformer", "build_model"]
