import json
import random

import pytest
import torch

from ptutil import color_pairs, one_thread, tiny_model, tiny_tokenizer, write_jsonl  # noqa: F401
from smelt.posttrain.common import load_stage_config
from smelt.posttrain.data import BadRows
from smelt.posttrain.rewards import gsm8k_final, gsm8k_reward, load_reward_fn, read_prompts
from smelt.posttrain.rl import RLConfig, gae, run_rl
from smelt.posttrain.sft import SFTConfig, run_sft


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_gsm8k_checker_and_user_reward_fn(tmp_path):
    assert gsm8k_final("so 3 + 4 = 7\n#### 1,234") == "1234"
    assert gsm8k_final("The answer is 42.") == "42"
    assert gsm8k_final("x = 2.50 then 3.0") == "3"
    assert gsm8k_reward("... so she has 72 clips", "48+24=72\n#### 72") == 1.0
    assert gsm8k_reward("#### 71", "#### 72") == 0.0
    assert gsm8k_reward("no number", "#### 72") == 0.0
    f = tmp_path / "myreward.py"
    f.write_text("def score(completion, answer, prompt):\n    return float(len(completion))\n")
    assert load_reward_fn(f"{f}:score")("abc", "", "") == 3.0
    assert load_reward_fn("smelt.posttrain.rewards:gsm8k_reward") is gsm8k_reward
    with pytest.raises(ValueError, match="rl.reward"):
        load_reward_fn("nonsense")


def test_gsm8k_prompts(tmp_path):
    from conftest import data_path
    bad = BadRows()
    prompts = read_prompts(str(data_path("eval/gsm8k_train.jsonl")), bad, limit=50)
    assert len(prompts) == 50 and prompts[0].answer == "72" and not bad.total


def test_gae_matches_hand_computation():
    r = torch.tensor([[0.0, 1.0, 2.0]])
    v = torch.tensor([[0.5, 0.5, 0.5]])
    m = torch.tensor([[1.0, 1.0, 1.0]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    d2 = 2.0 - 0.5
    d1 = 1.0 + 0.5 - 0.5
    d0 = 0.0 + 0.5 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    torch.testing.assert_close(adv, torch.tensor([[d0 + 0.5 * a1, a1, a2]]))
    torch.testing.assert_close(ret, adv + v)


def _common(tmp_path, out, steps):
    return ["--train.steps", str(steps), "--train.log_every", "5", "--train.out_dir", str(tmp_path / out),
            "--train.device", "cpu", "--train.progress", "false"]


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_grpo_raises_reward_on_next_digit(tmp_path, tok):
    """SFT gets the format and part of the mapping; GRPO with the checker improves it."""
    rnd = random.Random(0)
    digits = [rnd.randrange(9) for _ in range(200)]
    f = write_jsonl(tmp_path / "nd.jsonl", [{"messages": [{"role": "user", "content": str(d)},
                                                           {"role": "assistant", "content": str(d + 1)}]}
                                            for d in digits])
    model = tiny_model(tok)
    sft = load_stage_config(SFTConfig, None, ["--data.train", str(f), "--data.val_fraction", "0",
                                              "--data.seq_len", "64", "--data.packing", "false",
                                              "--optim.lr", "3e-3", "--optim.warmup_steps", "2",
                                              "--train.eval_every", "0"] + _common(tmp_path, "sft", 100))
    run_sft(sft, model=model, tokenizer=tok)
    cfg = load_stage_config(RLConfig, None, [
        "--data.train", "next-digit", "--data.batch_size", "9", "--rl.group_size", "16", "--rl.max_new_tokens", "3",
        "--rl.reward", "next_digit", "--rl.kl_coef", "0.05", "--optim.lr", "1e-3", "--optim.warmup_steps", "5",
        "--train.eval_every", "30"] + _common(tmp_path, "grpo", 60))
    out = run_rl(cfg, model=model, tokenizer=tok)
    rewards = [m["reward"] for m in _metrics(tmp_path / "grpo") if "reward" in m]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.1, rewards
    assert out["eval_reward"] >= out["eval_reward_before"], out


def test_ppo_with_trained_reward_model_raises_reward_via_cli(tmp_path, tok):
    """Reward model learns "blue beats red"; SFT teaches replies with either colour; PPO (CLI) moves to blue."""
    from ptutil import WORDS
    from smelt.cli import main as cli_main
    from smelt.posttrain.reward import RewardConfig, run_reward
    pairs = write_jsonl(tmp_path / "pairs.jsonl", color_pairs(96, 0))
    rm_cfg = load_stage_config(RewardConfig, None, ["--data.train", str(pairs), "--data.val_fraction", "0.1",
                                                    "--data.seq_len", "48", "--optim.lr", "3e-3",
                                                    "--optim.warmup_steps", "2", "--train.eval_every", "0"]
                               + _common(tmp_path, "rm", 40))
    assert run_reward(rm_cfg, model=tiny_model(tok, seed=5), tokenizer=tok)["val_accuracy"] >= 0.9
    rnd = random.Random(1)
    fill = [w for w in WORDS if w not in ("blue", "red")]
    rows = []
    for _ in range(200):
        ws = [rnd.choice(fill) for _ in range(3)]
        ws.insert(rnd.randrange(4), rnd.choice(["blue", "red"]))
        rows.append({"prompt": f"describe the {rnd.choice(fill)}", "completion": " ".join(ws)})
    sft_file = write_jsonl(tmp_path / "sft.jsonl", rows)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"describe the {w}"} for w in fill])
    sft = load_stage_config(SFTConfig, None, ["--data.train", str(sft_file), "--data.val_fraction", "0",
                                              "--data.seq_len", "64", "--data.packing", "false", "--optim.lr", "3e-3",
                                              "--optim.warmup_steps", "2", "--train.eval_every", "0"]
                            + _common(tmp_path, "sft", 60))
    run_sft(sft, model=tiny_model(tok), tokenizer=tok)
    assert cli_main(["rl", "--algo", "ppo", "--init-from", str(tmp_path / "sft"), "--rl.reward_model",
                     str(tmp_path / "rm"), "--data.train", str(prompts), "--data.batch_size", "8",
                     "--rl.group_size", "4", "--rl.max_new_tokens", "8", "--rl.kl_coef", "0.05", "--optim.lr", "3e-4",
                     "--optim.warmup_steps", "5", "--train.eval_every", "0"] + _common(tmp_path, "ppo", 40)) == 0
    rows = _metrics(tmp_path / "ppo")
    rewards = [m["reward"] for m in rows if "reward" in m]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:2]) / 2 + 1.0, rewards
    assert all(k in rows[-1] for k in ("value_loss", "kl", "clip_frac"))
    # the RL checkpoint (with its value head) still loads as a plain policy
    from smelt.train.checkpoint import load_pretrained
    policy, _ = load_pretrained(tmp_path / "ppo")
    assert not hasattr(policy, "heads")


def test_rl_turns_dropout_off_so_the_first_ratio_is_one(tmp_path, tok):
    model = tiny_model(tok, dropout=0.2)
    cfg = load_stage_config(RLConfig, None, [
        "--data.train", "next-digit", "--data.batch_size", "3", "--rl.group_size", "4", "--rl.max_new_tokens", "3",
        "--rl.reward", "next_digit", "--rl.epochs", "2", "--train.eval_every", "0", "--rl.eval_prompts", "0"]
        + _common(tmp_path, "grpo", 2))
    cfg.train.log_every = 1
    run_rl(cfg, model=model, tokenizer=tok)
    rows = _metrics(tmp_path / "grpo")
    assert rows[0]["clip_frac"] == 0.0  # first pass over the rollout: the policy still equals the sampler
    assert model.cfg.dropout == 0.0 and cfg.model.dropout == 0.0
