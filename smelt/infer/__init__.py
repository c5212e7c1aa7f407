"""Inference: `smelt.infer.generate` (KV-cache generation, sampling, streaming).

The functions are deliberately not re-exported here: a package attribute named `generate` would shadow the
`smelt.infer.generate` module for `import smelt.infer.generate as m`. Use `from smelt.infer.generate import generate`.
"""
