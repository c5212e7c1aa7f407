"""`smelt rl --algo grpo|ppo [config.toml] [--section.key value ...]`: reinforcement learning on sampled completions.

Each rollout takes data.batch_size prompts, samples rl.group_size completions per prompt with the KV cache, scores
them, and is then used for rl.epochs optimizer steps (split into train.grad_accum micro-batches) — the same
training loop as every other stage, fed by a rollout source.

GRPO (Shao et al. 2024): reward from a checker (rl.reward: next_digit, gsm8k, module:function, file.py:function)
or a reward model; advantage = (r − mean of its group) / (std of its group + 1e-4) for every token of a
completion; clipped policy loss; optional k3 KL penalty (rl.kl_coef) to the frozen starting policy.
PPO (Ouyang et al. 2022; the TRL / "N implementation details of RLHF" recipe): a value head on the policy trunk,
per-token reward −rl.kl_coef·(log π − log π_ref) plus the reward model's score on the last token, GAE(γ, λ)
advantages (whitened), clipped policy loss and clipped value loss (rl.vf_coef).
Losses are summed over completion tokens and normalised by their count. Logs reward (mean rollout reward),
reward_std, completion_len, kl, clip_frac (and value_loss for PPO), plus eval_reward: greedy completions on the
held-out prompts (data.val or data.val_fraction; the training prompts when there are none), also at the start.
"""

from __future__ import annotations

import copy
import random
import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch

from smelt.config import check, doc
from smelt.model import ModelConfig
from smelt.posttrain.common import (StageData, amp_context, disable_dropout, maybe_lora, save_run_files,
                                    setup_model, stage_main, validate_common)
from smelt.posttrain.data import BadRows, holdout
from smelt.posttrain.lora import LoraConfig
from smelt.posttrain.reward import add_head, score
from smelt.posttrain.rewards import Prompt, load_reward_fn, read_prompts
from smelt.train.config import OptimConfig, TrainConfig
from smelt.train.loop import Trainer


@dataclass
class RLSection:
    algo: Literal["grpo", "ppo"] = doc("grpo", "grpo (group-relative, verifiable rewards) or ppo (value head, GAE)")
    reward: str = doc("gsm8k", "reward function when reward_model is empty: next_digit, gsm8k, "
                               "package.module:function or file.py:function, called as f(completion, answer, prompt)")
    reward_model: str = doc("", "a `smelt reward` run whose score is the reward (PPO's usual setting)")
    group_size: int = doc(8, "completions sampled per prompt (GRPO normalises within each group)")
    max_new_tokens: int = doc(64, "longest completion")
    temperature: float = doc(1.0, "sampling temperature for rollouts")
    top_k: int = doc(0, "sample from the k most likely tokens (0 = all)")
    top_p: float = doc(1.0, "nucleus sampling mass (1 = off)")
    epochs: int = doc(1, "optimizer steps taken on each rollout (> 1 makes the ratio clip matter)")
    clip: float = doc(0.2, "policy ratio clip ε")
    kl_coef: float = doc(0.0, "KL weight to the starting policy (GRPO: k3 penalty in the loss; PPO: in the reward)")
    vf_coef: float = doc(0.1, "PPO value-loss weight")
    value_clip: float = doc(0.2, "PPO value clip around the rollout's values")
    gamma: float = doc(1.0, "PPO discount")
    lam: float = doc(0.95, "PPO GAE λ")
    eval_prompts: int = doc(32, "held-out prompts scored greedily at each evaluation (0 = no evaluation)")


@dataclass
class RLConfig:
    model: ModelConfig = doc(ModelConfig(preset="debug"), "model shape (ignored with train.init_from)")
    data: StageData = doc(StageData(batch_size=8, seq_len=192), "prompts ({prompt, answer} or GSM8K) or the name "
                          "`next-digit`; batch_size = prompts per rollout, seq_len = longest prompt")
    optim: OptimConfig = doc(OptimConfig(lr=1e-5, warmup_steps=0, weight_decay=0.0, schedule="constant"),
                             "optimizer and LR schedule")
    train: TrainConfig = doc(TrainConfig(out_dir="runs/rl", steps=100, eval_every=20, ckpt_every=0),
                             "loop, precision, logging, checkpoints")
    rl: RLSection = doc(RLSection(), "rollouts, rewards and the policy-gradient loss")
    lora: LoraConfig = doc(LoraConfig(), "LoRA adapters (rank 0 = full fine-tuning)")

    def validate(self) -> None:
        validate_common(self)
        r = self.rl
        check(bool(self.data.train), "data.train", "set a prompt file, GSM8K, or next-digit")
        check(r.group_size >= 1, "rl.group_size", "must be >= 1")
        check(r.algo != "grpo" or r.group_size >= 2, "rl.group_size", "GRPO needs at least 2 samples per prompt")
        check(r.max_new_tokens > 0, "rl.max_new_tokens", "must be > 0")
        check(r.epochs >= 1, "rl.epochs", "must be >= 1")
        check(r.temperature > 0, "rl.temperature", "rollouts must sample (temperature > 0)")
        check(0 < r.top_p <= 1, "rl.top_p", "must be in (0, 1]")
        for name in ("clip", "kl_coef", "vf_coef", "value_clip"):
            check(getattr(r, name) >= 0, f"rl.{name}", "must be >= 0")
        check(0 <= r.gamma <= 1 and 0 <= r.lam <= 1, "rl.gamma", "gamma and lam must be in [0, 1]")
        check(r.algo != "ppo" or bool(r.reward_model) or bool(r.reward), "rl.reward_model",
              "PPO needs a reward model or a reward function")


def generate_completions(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                         top_k: int, top_p: float, stop_tokens: list[int], seed: int | None) -> list[list[int]]:
    """New tokens per prompt (a hit stop token is kept last), via the KV-cache generator; prompts are batched
    by length there, so GRPO's group of samples of one prompt decodes as one batch."""
    from smelt.infer.generate import generate
    return generate(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                    stop_tokens=set(stop_tokens), seed=seed)


class Scorer:
    """Rewards for (prompt, completion) pairs: a reward model's score or a checker function."""

    def __init__(self, cfg: RLSection, tok, device: torch.device):
        self.tok, self.rm, self.fn = tok, None, None
        if cfg.reward_model:
            from smelt.posttrain.reward import load_reward_model
            self.rm, rm_tok = load_reward_model(cfg.reward_model, device=device)
            if rm_tok is not None and rm_tok.fingerprint != tok.fingerprint:
                raise ValueError(f"rl.reward_model: {cfg.reward_model} uses a different tokenizer than the policy")
            for p in self.rm.parameters():
                p.requires_grad_(False)
        else:
            self.fn = load_reward_fn(cfg.reward)

    @torch.no_grad()
    def __call__(self, prompts: list[Prompt], ids: torch.Tensor, mask: torch.Tensor,
                 completions: list[list[int]]) -> torch.Tensor:
        if self.rm is not None:
            return score(self.rm, ids, mask).cpu()
        out = []
        for p, c in zip(prompts, completions):
            text = self.tok.decode(c, skip_special=True)
            out.append(float(self.fn(text, p.answer, p.messages[-1]["content"])))
        return torch.tensor(out)


def pad_sequences(prompt_ids: list[list[int]], completions: list[list[int]], pad: int) -> tuple[torch.Tensor, ...]:
    """(ids, completion mask), right-padded to the longest prompt + completion."""
    width = max(len(p) + len(c) for p, c in zip(prompt_ids, completions))
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompt_ids, completions)):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        mask[i, len(p):len(p) + len(c)] = True
    return ids, mask


def token_logps(model: torch.nn.Module, ids: torch.Tensor, values: bool = False):
    """Per-position log-prob of the next token (B, T-1), and the value head's estimates when asked."""
    hidden = model(ids[:, :-1], return_hidden=True)
    logits = model.logits(hidden).float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    if not values:
        return logp, None
    return logp, model.heads["value"](hidden).squeeze(-1).float()


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over (B, T) completion positions (mask = 1 on them)."""
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        nxt = values[:, t + 1] * mask[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * nxt - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.bool()
    mean, std = x[m].mean(), x[m].std() if int(m.sum()) > 1 else torch.tensor(1.0)
    return (x - mean) / (std + 1e-8) * mask


class RolloutSource:
    """The batch source of RL: samples a rollout, serves it as grad_accum micro-batches, rl.epochs times."""

    def __init__(self, model: torch.nn.Module, ref: torch.nn.Module | None, scorer: Scorer, tok,
                 prompts: list[Prompt], cfg: RLConfig):
        self.model, self.ref, self.scorer, self.tok, self.prompts, self.cfg = model, ref, scorer, tok, prompts, cfg
        self.rollouts, self.buffer = 0, []
        self.order: list[int] = []
        self.stop = [tok.token_id("<|end|>"), tok.eos_id]

    def _next_prompts(self) -> list[Prompt]:
        out = []
        while len(out) < self.cfg.data.batch_size:
            if not self.order:  # a fresh seeded pass over the prompts
                self.order = list(range(len(self.prompts)))
                random.Random(self.cfg.train.seed * 7919 + self.rollouts).shuffle(self.order)
            out.append(self.prompts[self.order.pop()])
        return out

    @torch.no_grad()
    def _rollout(self) -> dict[str, torch.Tensor]:
        r, device = self.cfg.rl, next(self.model.parameters()).device
        prompts = [p for p in self._next_prompts() for _ in range(r.group_size)]
        prompt_ids = [self.tok.render_chat(p.messages, add_generation_prompt=True)[0] for p in prompts]
        comps = generate_completions(self.model, prompt_ids, r.max_new_tokens, r.temperature, r.top_k, r.top_p,
                                     self.stop, seed=self.cfg.train.seed * 1_000_003 + self.rollouts)
        comps = [c if c else [self.tok.eos_id] for c in comps]  # an empty completion still gets scored
        ids, mask = pad_sequences(prompt_ids, comps, self.tok.pad_id)
        ids, mask = ids.to(device), mask.to(device)
        rewards = self.scorer(prompts, ids, mask, comps).to(device).float()
        was = self.model.training
        self.model.eval()
        ppo = r.algo == "ppo"
        # Same autocast as the training step, so the first ratio is exactly 1 rather than a bf16-vs-fp32 gap.
        with amp_context(self.cfg, device):
            old_logp, old_values = token_logps(self.model, ids, values=ppo)
            ref_logp = token_logps(self.ref, ids)[0] if self.ref is not None else old_logp
        tmask = mask[:, 1:].float()
        kl = ((old_logp - ref_logp) * tmask).sum() / tmask.sum()
        if ppo:
            tok_rewards = -r.kl_coef * (old_logp - ref_logp) * tmask
            last = (tmask * torch.arange(tmask.shape[1], device=device)).argmax(-1)
            tok_rewards[torch.arange(len(prompts), device=device), last] += rewards
            adv, returns = gae(tok_rewards, old_values * tmask, tmask, r.gamma, r.lam)
            adv = whiten(adv, tmask)
        else:
            g = rewards.view(-1, r.group_size)
            norm = (g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + 1e-4)
            adv = norm.reshape(-1, 1) * tmask
            returns = old_values = torch.zeros_like(adv)
        self.model.train(was)
        self.rollouts += 1
        n = len(prompts)
        stats = torch.tensor([float(rewards.mean()), float(rewards.std()) if n > 1 else 0.0,
                              float(tmask.sum(-1).mean()), float(kl)])
        return {"ids": ids, "mask": mask, "old_logp": old_logp, "ref_logp": ref_logp, "adv": adv,
                "old_values": old_values, "returns": returns, "stats": stats.expand(n, 4).clone()}

    def next_batch(self) -> dict[str, torch.Tensor]:
        if not self.buffer:
            roll = self._rollout()
            n, k = roll["ids"].shape[0], self.cfg.train.grad_accum
            chunks = [{key: v[i::k] for key, v in roll.items()} for i in range(min(k, n))]
            self.buffer = chunks * self.cfg.rl.epochs
        return self.buffer.pop(0)

    def state_dict(self) -> dict:
        # A resumed run continues with fresh rollouts from the restored policy (rollouts depend on the weights).
        return {"rollouts": self.rollouts, "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.rollouts, self.order, self.buffer = int(state["rollouts"]), list(state["order"]), []


class PolicyGradient:
    """Clipped policy-gradient loss (+ k3 KL for GRPO, + clipped value loss for PPO), summed over tokens."""

    def __init__(self, cfg: RLSection):
        self.cfg = cfg

    def count(self, batch: dict) -> int:
        return int(batch["mask"][:, 1:].sum())

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        ppo = c.algo == "ppo"
        tmask = batch["mask"][:, 1:].float()
        logp, values = token_logps(model, batch["ids"], values=ppo)
        ratio = torch.exp(logp - batch["old_logp"])
        adv = batch["adv"]
        pg = -torch.min(ratio * adv, ratio.clamp(1 - c.clip, 1 + c.clip) * adv)
        per_tok = pg
        metrics: dict[str, float] = {}
        if not ppo and c.kl_coef:
            d = batch["ref_logp"] - logp
            per_tok = per_tok + c.kl_coef * (torch.exp(d) - d - 1)  # k3: unbiased, always >= 0
        if ppo:
            old_v, ret = batch["old_values"], batch["returns"]
            v_clip = old_v + (values - old_v).clamp(-c.value_clip, c.value_clip)
            vf = 0.5 * torch.max((values - ret) ** 2, (v_clip - ret) ** 2)
            per_tok = per_tok + c.vf_coef * vf
            metrics["value_loss"] = float((vf.detach() * tmask).sum())
        n_tok = float(tmask.sum())
        stats = batch["stats"][0]
        # Metrics are sums the loop divides by the step's token count: rollout-level numbers are scaled by n_tok.
        metrics.update({"reward": float(stats[0]) * n_tok, "reward_std": float(stats[1]) * n_tok,
                        "completion_len": float(stats[2]) * n_tok, "kl": float(stats[3]) * n_tok,
                        "clip_frac": float((((ratio - 1).abs() > c.clip).float() * tmask).sum())})
        return (per_tok * tmask).sum(), metrics


def make_reward_evaluator(prompts: list[Prompt], scorer: Scorer, tok, cfg: RLConfig):
    stop = [tok.token_id("<|end|>"), tok.eos_id]

    @torch.no_grad()
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        ids_list = [tok.render_chat(p.messages, add_generation_prompt=True)[0] for p in prompts]
        comps = generate_completions(model, ids_list, cfg.rl.max_new_tokens, 0.0, 0, 1.0, stop, seed=0)
        comps = [c if c else [tok.eos_id] for c in comps]
        ids, mask = pad_sequences(ids_list, comps, tok.pad_id)
        rewards = scorer(prompts, ids.to(device), mask.to(device), comps)
        return {"eval_reward": float(rewards.float().mean())}

    return evaluate


def run_rl(cfg: RLConfig, model: torch.nn.Module | None = None, tokenizer=None) -> dict[str, Any]:
    """Python API: GRPO or PPO per `cfg`; returns final metrics plus `eval_reward_before`."""
    model, tok = setup_model(cfg, tokenizer, model)
    device = next(model.parameters()).device
    bad = BadRows()
    limit = cfg.data.max_examples or (9 if cfg.data.train.strip() == "next-digit" else 0)
    prompts = read_prompts(cfg.data.train, bad, limit)
    too_long = [p for p in prompts if len(tok.render_chat(p.messages, True)[0]) > cfg.data.seq_len]
    for p in too_long:
        bad.add(f"too long (prompt > {cfg.data.seq_len} tokens)", p.loc)
    dropped = {id(p) for p in too_long}
    prompts = [p for p in prompts if id(p) not in dropped]
    if not prompts:
        raise ValueError(f"data.train: no usable prompts ({bad.summary()})")
    if cfg.data.val:
        val = read_prompts(cfg.data.val, bad, cfg.rl.eval_prompts)
    else:
        prompts, val = holdout(prompts, cfg.data.val_fraction, cfg.train.seed) if len(prompts) >= 20 \
            else (prompts, [])
    val = (val or prompts)[:cfg.rl.eval_prompts]
    save_run_files(cfg.train.out_dir, tok, bad, {"prompts": len(prompts)})
    scorer = Scorer(cfg.rl, tok, device)
    ppo = cfg.rl.algo == "ppo"
    needs_ref = ppo or cfg.rl.kl_coef > 0
    ref = None
    if needs_ref:  # a frozen copy of the starting policy
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    if ppo:
        add_head(model, "value", zero=True)
    evaluate = make_reward_evaluator(val, scorer, tok, cfg) if val else None
    before = evaluate(model)["eval_reward"] if evaluate else None
    print(f"{cfg.rl.algo.upper()}: {len(prompts)} training prompts, {len(val)} evaluation prompts; "
          f"eval_reward before training {before}", file=sys.stderr)
    save_extra, trainable_only = maybe_lora(cfg, model, keep_trainable=("heads.",))
    disable_dropout(model)
    cfg.model = model.cfg
    source = RolloutSource(model, ref, scorer, tok, prompts, cfg)
    trainer = Trainer(cfg, model, PolicyGradient(cfg.rl), source, evaluate=evaluate, save_extra=save_extra,
                      stage=f"rl-{cfg.rl.algo}", tokens_per_batch=lambda b: int(b["mask"].sum()),
                      save_trainable_only=trainable_only)
    result = trainer.fit()
    result["eval_reward_before"] = before
    return result


def main(argv: list[str]) -> int:
    # `--algo X` is shorthand for `--rl.algo X`; moved to the end so a config path may still come first.
    algo: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--algo" and i + 1 < len(argv):
            algo, i = ["--rl.algo", argv[i + 1]], i + 2
            continue
        if argv[i].startswith("--algo="):
            algo = ["--rl.algo", argv[i].split("=", 1)[1]]
        else:
            rest.append(argv[i])
        i += 1
    argv = rest + algo
    return stage_main(argv, RLConfig, __doc__, run_rl,
                      ("step", "loss", "reward", "eval_reward_before", "eval_reward"))
