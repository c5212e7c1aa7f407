import json
import math

import pytest
import torch

from ptutil import color_pairs, one_thread, tiny_model, tiny_tokenizer, write_jsonl  # noqa: F401
from smelt.posttrain.common import load_stage_config
from smelt.posttrain.data import BadRows, encode_pairs, read_pairs
from smelt.posttrain.dpo import DPOConfig, dpo_loss, run_dpo
from smelt.posttrain.reward import RewardConfig, load_reward_model, run_reward, score


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_dpo_loss_matches_hand_computed_values():
    pc, pr = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    # h = (pc - rc) - (pr - rr) = [1, -2]; beta = 0.5
    loss, rew_c, rew_r = dpo_loss(pc, pr, rc, rr, beta=0.5)
    expect = [math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(1.0))]  # -log sigmoid(beta*h)
    torch.testing.assert_close(loss, torch.tensor(expect))
    torch.testing.assert_close(rew_c, torch.tensor([0.25, -0.5]))
    torch.testing.assert_close(rew_r, torch.tensor([-0.25, 0.5]))
    ls, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    expect_ls = [0.9 * math.log(1 + math.exp(-0.5)) + 0.1 * math.log(1 + math.exp(0.5)),
                 0.9 * math.log(1 + math.exp(1.0)) + 0.1 * math.log(1 + math.exp(-1.0))]
    torch.testing.assert_close(ls, torch.tensor(expect_ls))
    ipo, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")
    torch.testing.assert_close(ipo, torch.tensor([(1 - 1.0) ** 2, (-2 - 1.0) ** 2]))


def test_pair_readers_and_bad_rows(tmp_path, tok):
    rows = [
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: nice",
         "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: rude"},
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"instruction": "i", "output_1": "a", "output_2": "b", "preference": "2"},
        {"instruction": "i", "output_1": "a", "output_2": "b", "preference": "0"},
        {"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "assistant", "content": "y"}],
         "rejected": [{"role": "assistant", "content": "z"}]},
    ]
    f = write_jsonl(tmp_path / "p.jsonl", rows)
    bad = BadRows()
    pairs = read_pairs(str(f), bad)
    assert len(pairs) == 4
    assert pairs[1].prompt == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "and?"}]
    assert (pairs[1].chosen, pairs[1].rejected) == ("nice", "rude")
    assert (pairs[2].chosen, pairs[2].rejected) == ("b", "a")
    assert bad.where == {"identical chosen/rejected": [f"{f}:3"], "no preference": [f"{f}:5"]}
    t = encode_pairs(tok, pairs, 32, bad)
    end = tok.token_id("<|end|>")
    for i in range(4):  # completion mask covers the reply and its <|end|>, nothing else
        ids, m = t["chosen"][i], t["chosen_mask"][i]
        comp = ids[m].tolist()
        assert comp[-1] == end and tok.decode(comp[:-1]) == pairs[i].chosen
    short = encode_pairs(tok, pairs[1:2], 12, bad)  # prompt cut from the left, reply kept whole
    assert short["chosen"].shape[0] == 1 and bad.counts["prompt truncated (kept)"] == 1


def _pref_files(tmp_path):
    return (write_jsonl(tmp_path / "train.jsonl", color_pairs(96, 0)),
            write_jsonl(tmp_path / "val.jsonl", color_pairs(32, 1)))


def _args(tmp_path, train, val, out, steps):
    return ["--data.train", str(train), "--data.val", str(val), "--data.seq_len", "48", "--data.batch_size", "8",
            "--optim.warmup_steps", "2", "--train.steps", str(steps), "--train.eval_every", "0",
            "--train.log_every", "10", "--train.out_dir", str(tmp_path / out), "--train.device", "cpu",
            "--train.progress", "false"]


def test_reward_model_learns_synthetic_preference(tmp_path, tok):
    train, val = _pref_files(tmp_path)
    cfg = load_stage_config(RewardConfig, None, _args(tmp_path, train, val, "rm", 40) + ["--optim.lr", "3e-3"])
    out = run_reward(cfg, model=tiny_model(tok), tokenizer=tok)
    # (accuracy before training is 0 or 1 by chance: pairs differ in one token, so a random head orders them all
    # the same way; the loss shows what was learned)
    assert out["val_accuracy"] >= 0.9 and out["before"]["val_loss"] > 0.5 and out["val_loss"] < 0.1, out
    rm, _ = load_reward_model(tmp_path / "rm")
    b = encode_pairs(tok, read_pairs(str(val), BadRows()), 48, BadRows())
    with torch.no_grad():
        acc = float((score(rm, b["chosen"], b["chosen_mask"]) > score(rm, b["rejected"], b["rejected_mask"]))
                    .float().mean())
    assert abs(acc - out["val_accuracy"]) < 1e-6


@pytest.mark.parametrize("variant", [[], ["--dpo.loss_type", "ipo"], ["--dpo.label_smoothing", "0.1"]])
def test_dpo_raises_heldout_margin_and_accuracy(tmp_path, tok, variant):
    train, val = _pref_files(tmp_path)
    cfg = load_stage_config(DPOConfig, None, _args(tmp_path, train, val, "dpo", 30) +
                            ["--optim.lr", "2e-3", "--dpo.beta", "0.5", *variant])
    out = run_dpo(cfg, model=tiny_model(tok), tokenizer=tok)
    before = out["before"]
    assert before["val_rewards_margins"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at the start
    assert out["val_rewards_margins"] > 0.5, out
    assert out["val_rewards_accuracies"] >= 0.9 and out["val_pref_accuracy"] > before["val_pref_accuracy"], out
    rows = [json.loads(x) for x in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(rows[-1])


def test_dpo_with_quantised_lora_starts_at_zero_margin(tmp_path, tok):
    train, val = _pref_files(tmp_path)
    cfg = load_stage_config(DPOConfig, None, _args(tmp_path, train, val, "dpo", 15) +
                            ["--optim.lr", "1e-2", "--dpo.beta", "0.5", "--lora.rank", "8",
                             "--lora.quantize_base", "int8", "--lora.targets", "q,k,v,o,gate,up,down"])
    out = run_dpo(cfg, model=tiny_model(tok), tokenizer=tok)
    # the reference is the quantised base itself, so the implicit reward starts at exactly 0
    assert out["before"]["val_rewards_margins"] == pytest.approx(0.0, abs=1e-6)
    assert out["val_rewards_margins"] > 0.1, out
    assert (tmp_path / "dpo" / "checkpoints" / "step-15" / "adapter.safetensors").exists()
