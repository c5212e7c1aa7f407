"""Evaluation: benchmarks, bits-per-byte, sandboxed code execution, reports. `evaluate` is the Python API."""

from smelt.eval.evaluator import evaluate, evaluate_checkpoint, load_model, write_results

__all__ = ["evaluate", "evaluate_checkpoint", "load_model", "write_results"]
