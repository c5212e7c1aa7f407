"""Let lm-evaluation-harness score a smelt model: `lm_eval --model smelt --model_args pretrained=RUN_DIR ...`.

The adapter implements lm-eval's `LM` interface (loglikelihood, loglikelihood_rolling, generate_until) on top of
smelt's Scorer. Tokenisation follows lm-eval's own `TemplateLM` (trailing-space move, whole-string split), and a
BOS token is prepended to every context exactly as `smelt eval` does, so identical prompts give identical numbers.
Log-likelihoods use the Scorer's plain one-row-per-request path, not the shared-context tree, so the parity test
(tests/test_eval_lm_eval.py) checks the tree scorer and smelt's task formatting against an independent route.

lm-eval is an optional extra (`pip install smelt[eval-test]`); importing this module without it raises ImportError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from smelt.eval.generation import cut_at_stop
from smelt.eval.harness import Scorer


@register_model("smelt")
class SmeltLM(TemplateLM):
    def __init__(self, pretrained: str | None = None, model: Any = None, tokenizer: Any = None,
                 batch_size: int | str = 16, device: str = "cpu", max_gen_toks: int = 256,
                 share_context: bool = False, **kwargs: Any):
        super().__init__()
        if model is None:
            if pretrained is None:
                raise ValueError("smelt lm-eval adapter: pass pretrained=<run folder|checkpoint> or a model object")
            from smelt.eval.evaluator import load_model
            model, tokenizer = load_model(Path(pretrained), device=device)
        if tokenizer is None:
            raise ValueError("smelt lm-eval adapter: a tokenizer is required")
        bs = 16 if str(batch_size).startswith("auto") else int(batch_size)
        self.scorer = Scorer(model, tokenizer, batch_size=bs, share_context=share_context)
        self.smelt_tokenizer = tokenizer
        self.max_gen_toks = int(max_gen_toks)

    # ---- tokenisation (lm-eval calls these) ------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.smelt_tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.smelt_tokenizer.bos_id  # an empty context is conditioned on BOS, as in smelt eval

    @property
    def max_length(self) -> int:
        return self.scorer.max_len

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.scorer.encode(string)

    def tok_decode(self, tokens: list[int], **kwargs: Any) -> str:
        return self.smelt_tokenizer.decode(tokens)

    # ---- LM interface ------------------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        bos = self.smelt_tokenizer.bos_id
        reqs = []
        for _, ctx, cont in requests:
            ctx = list(ctx)
            if not ctx or ctx[0] != bos:  # the empty-context case already starts with BOS (prefix_token_id)
                ctx = [bos] + ctx
            reqs.append((ctx, list(cont)))
        if self.scorer.share_context:
            res = self.scorer.loglikelihood(reqs)
        else:
            res = self.scorer.loglikelihood_plain(reqs)
        out = [(r.logprob, r.greedy) for r in res]
        for (pair, _, _), o in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", pair, o)
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            (text,) = req.args
            ids = [self.smelt_tokenizer.bos_id] + self.scorer.encode(text)
            nats, _ = self.scorer.rolling_nll(ids)
            out.append(-nats)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            kw = dict(gen_kwargs or {})
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kw.get("temperature", 0.0)) if kw.get("do_sample", False) else 0.0
            ids = [self.smelt_tokenizer.bos_id] + self.scorer.encode(context)
            gen = self.scorer.generate([ids], int(kw.get("max_gen_toks", self.max_gen_toks)),
                                       temperature=temperature, stop_strings=until)[0]
            out.append(cut_at_stop(self.smelt_tokenizer.decode(gen), until))
        return out
