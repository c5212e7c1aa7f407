import pytest

from ptutil import count_conv, one_thread, tiny_model_cfg, write_jsonl  # noqa: F401
from smelt.cli import main as cli_main
from smelt.posttrain.common import load_stage_config
from smelt.posttrain.dpo import DPOConfig


@pytest.mark.parametrize("verb,field", [("sft", "--lora.rank"), ("sft", "--data.packing"), ("dpo", "--dpo.beta"),
                                        ("reward", "--reward.center_coef"), ("rl", "--rl.group_size")])
def test_help_lists_fields(capsys, verb, field):
    assert cli_main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert field in out and "--train.init_from" in out


def test_toml_then_overrides(tmp_path):
    f = tmp_path / "dpo.toml"
    f.write_text('[data]\ntrain = "pairs.jsonl"\nseq_len = 128\n[dpo]\nbeta = 0.3\nloss_type = "ipo"\n'
                 '[lora]\nrank = 4\ntargets = ["q", "v"]\n')
    cfg = load_stage_config(DPOConfig, f, ["--dpo.beta", "0.2", "--init-from", "runs/x"])
    assert (cfg.data.train, cfg.data.seq_len, cfg.dpo.beta, cfg.dpo.loss_type) == ("pairs.jsonl", 128, 0.2, "ipo")
    assert cfg.lora.targets == ["q", "v"] and cfg.train.init_from == "runs/x"
    assert cfg.model.n_layers == 4  # the debug preset filled the model


def test_bad_config_names_the_field(tmp_path, capsys):
    assert cli_main(["dpo", "--data.train", "x.jsonl", "--dpo.beta", "-1"]) == 2
    assert "dpo.beta" in capsys.readouterr().err
    assert cli_main(["sft", "--data.train", "x.jsonl", "--lora.rank", "4", "--lora.targets", "q,nope"]) == 2
    assert "lora.targets" in capsys.readouterr().err
    f = tmp_path / "bad.toml"
    f.write_text("[rl]\nalgo = 'a2c'\n")
    assert cli_main(["rl", str(f)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "rl.algo" in err


def test_all_bad_rows_is_a_clear_error(tmp_path, capsys):
    from smelt.tokenizer import Tokenizer
    tok = Tokenizer.train(["count to 3 1 2 3"] * 20, vocab_size=269)
    tok.save(tmp_path / "tok")
    f = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}, "{oops",
                                             {"messages": count_conv(200)}])
    rc = cli_main(["sft", "--data.train", str(f), "--data.tokenizer", str(tmp_path / "tok"),
                   "--data.val_fraction", "0", "--data.seq_len", "32", "--model.n_layers", "1",
                   "--model.max_seq_len", "64", "--train.out_dir", str(tmp_path / "run"), "--train.device", "cpu",
                   "--train.steps", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "no training examples" in err
    # every skip is reported with its file:line
    assert f"{f}:1" in err and f"{f}:2" in err and f"{f}:3" in err
    assert "no assistant turn" in err and "invalid JSON" in err and "too long" in err


def test_shipped_posttrain_recipes_load():
    from pathlib import Path

    from smelt.posttrain.reward import RewardConfig
    from smelt.posttrain.rl import RLConfig
    from smelt.posttrain.sft import SFTConfig
    root = Path(__file__).resolve().parents[1] / "recipes"
    for name, cls in [("sft-debug", SFTConfig), ("reward-debug", RewardConfig), ("dpo-debug", DPOConfig),
                      ("grpo-gsm8k", RLConfig)]:
        cfg = load_stage_config(cls, root / f"{name}.toml", ["--init-from", "runs/x"])
        assert cfg.train.init_from == "runs/x" and cfg.data.train


def test_refuses_multi_process_launch(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["sft", "--data.train", "x.jsonl"]) == 1
    assert "one process" in capsys.readouterr().err
