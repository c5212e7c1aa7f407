"""The readers on the real public files of the data mirror (skipped when it is absent)."""

from conftest import data_path
from smelt.posttrain.data import BadRows, read_conversations, read_pairs


def test_sft_files_read_with_counts():
    bad = BadRows()
    fastchat = read_conversations(str(data_path("sft/fastchat_dummy_conversation.json")), bad)
    assert len(fastchat) == 500 and all(c[-1]["role"] == "assistant" for c, _ in fastchat)
    seeds = read_conversations(str(data_path("sft/self_instruct_seed_tasks.jsonl")), bad)
    assert len(seeds) >= 175
    gsm = read_conversations(str(data_path("eval/gsm8k_train.jsonl")), bad, limit=100)
    assert len(gsm) == 100 and "####" in gsm[0][0][1]["content"] and "<<" not in gsm[0][0][1]["content"]
    alpaca = read_conversations(str(data_path("sft/alpaca_eval_gpt4_1106_preview_outputs.json")), bad)
    assert len(alpaca) + bad.total >= 805


def test_preference_files_read_with_counts():
    bad = BadRows()
    hh = read_pairs(str(data_path("preference/hh-rlhf_harmless-base_test.jsonl.gz")), bad)
    assert len(hh) + bad.total == 2312 and len(hh) > 2200
    assert bad.counts == {"empty completion": 4}  # replies that are only whitespace, reported with file:line
    # a handful of dialogues have a turn marker without its blank line; they stay one assistant turn
    assert sum(p.prompt[-1]["role"] == "user" for p in hh) >= 0.99 * len(hh)
    by_name = read_pairs("hh_rlhf_harmless", BadRows(), limit=3)  # registered dataset names work too
    assert [p.chosen for p in by_name] == [p.chosen for p in hh[:3]]
    bad2 = BadRows()
    ae = read_pairs(str(data_path("preference/alpaca_eval_gpt4_annotations_alpaca-7b_vs_text_davinci_003.json")),
                    bad2)
    assert bad2.counts["no preference"] == 16 and len(ae) + bad2.total == 805


def test_recipes_build_valid_configs():
    data_path("sft/fastchat_dummy_conversation.json")
    from smelt.posttrain.recipes import dpo_recipe, sft_recipe
    s = sft_recipe("runs/pre", "runs/sft", steps=30, overrides=["--lora.rank", "8"])
    assert s.train.steps == 30 and s.lora.rank == 8 and s.data.train.count(",") == 2
    d = dpo_recipe("runs/sft", "runs/dpo")
    assert d.data.train == "hh_rlhf_harmless" and d.dpo.beta == 0.1


def test_rl_prompts_from_preference_file():
    from smelt.posttrain.rewards import read_prompts
    bad = BadRows()
    prompts = read_prompts(str(data_path("preference/hh-rlhf_harmless-base_test.jsonl.gz")), bad, limit=20)
    assert len(prompts) == 20 and prompts[0].messages[0]["role"] == "user" and prompts[0].answer == ""
