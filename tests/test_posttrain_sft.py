import json

import pytest
import torch

from ptutil import count_conv, one_thread, tiny_model, tiny_tokenizer, write_jsonl  # noqa: F401
from smelt.objectives import IGNORE
from smelt.posttrain.common import load_stage_config
from smelt.posttrain.data import BadRows, lm_batch, pack_rows, read_conversations
from smelt.posttrain.sft import SFTConfig, run_sft


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_readers_all_formats_and_bad_rows(tmp_path):
    rows = [
        {"messages": count_conv(2)},
        {"prompt": "hi", "completion": "hello"},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"instruction": "do", "instances": [{"input": "x", "output": "y"}, {"input": "", "output": "z"}]},
        {"instruction": "alp", "output": "aca"},
        {"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"},
        {"messages": [{"role": "user", "content": "no reply"}]},
        "{not json",
        {"something": "else"},
    ]
    f = write_jsonl(tmp_path / "mix.jsonl", rows)
    bad = BadRows()
    convs = read_conversations(str(f), bad)
    assert len(convs) == 7
    assert convs[3][0][0]["content"] == "do\n\nx" and convs[4][0][0]["content"] == "do"
    assert convs[6][0][1]["content"] == "2+2=4\n#### 4"  # calculator markup stripped
    assert bad.counts == {"no assistant turn": 1, "invalid JSON": 1, "unknown format": 1}
    assert bad.where["no assistant turn"] == [f"{f}:7"]
    assert "invalid JSON" in bad.summary() and f"{f}:8" in bad.summary()


def test_packing_never_cuts_and_masks_targets(tok):
    convs = [(count_conv(n), f"x:{n}") for n in (1, 5, 9, 3)]
    bad = BadRows()
    from smelt.posttrain.data import encode_conversations
    ex = encode_conversations(tok, convs, 24, bad)
    lens = [len(i) for i, _ in ex]
    ids, mask, seg = pack_rows(ex, 24, tok.pad_id)
    # every example appears whole in some row (best fit), so total tokens are conserved
    assert int((ids != tok.pad_id).sum()) == sum(lens)
    assert int(mask.sum()) == sum(sum(m) for _, m in ex)
    for e_ids, _ in ex:
        assert any(e_ids == r[i:i + len(e_ids)] for r in ids.tolist() for i in range(24 - len(e_ids) + 1))
    b = lm_batch(ids, mask)
    # targets are exactly the assistant tokens (content + <|end|>), everything else IGNORE
    t = b["targets"]
    assert torch.equal(t != IGNORE, mask[:, 1:])
    end = tok.token_id("<|end|>")
    assert int((t == end).sum()) == len(ex)  # one learned <|end|> per conversation (the assistant's)
    too_long = encode_conversations(tok, [(count_conv(9), "f:9")], 5, bad)
    assert too_long == [] and bad.where["too long (> 5 tokens)"] == ["f:9"]


def _sft_files(tmp_path):
    train = [{"messages": count_conv(n)} for n in range(1, 10)] * 8
    val = [{"messages": count_conv(n)} for n in (4, 7)]
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "val.jsonl", val)


def _cfg(tmp_path, train, val, *extra):
    return load_stage_config(SFTConfig, None, [
        "--data.train", str(train), "--data.val", str(val), "--data.seq_len", "64", "--data.batch_size", "4",
        "--optim.lr", "3e-3", "--optim.warmup_steps", "2", "--train.steps", "40", "--train.eval_every", "0",
        "--train.log_every", "20", "--train.out_dir", str(tmp_path / "run"), "--train.device", "cpu",
        "--train.progress", "false", *extra])


def test_sft_full_lowers_heldout_assistant_loss(tmp_path, tok):
    train, val = _sft_files(tmp_path)
    cfg = _cfg(tmp_path, train, val)
    cfg.train.steps = 120
    model = tiny_model(tok)
    out = run_sft(cfg, model=model, tokenizer=tok)
    assert out["val_loss"] < 0.5 * out["val_loss_before"], out
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").exists()
    assert json.loads((tmp_path / "run" / "skipped.json").read_text())["counts"] == {}
    # the fine-tuned model follows the template: a reply, then <|end|>
    from smelt.infer.generate import generate
    end = tok.token_id("<|end|>")
    prompts = [tok.render_chat(count_conv(n)[:1], add_generation_prompt=True)[0] for n in (4, 7)]
    outs = generate(model, prompts, 24, temperature=0.0, stop_tokens={end})
    assert all(o[-1] == end for o in outs), [tok.decode(o) for o in outs]
    assert tok.decode(outs[0]).startswith("1 2 3 4") and tok.decode(outs[1]).startswith("1 2 3 4 5 6 7")


def countdown_conv(n: int) -> list[dict]:
    return [{"role": "user", "content": f"count down from {n}"},
            {"role": "assistant", "content": " ".join(str(i) for i in range(n, 0, -1))}]


@pytest.mark.parametrize("quant", ["none", "int8"])
def test_sft_lora_from_pretrained_run_via_cli(tmp_path, tok, quant):
    """Full SFT makes a base run; LoRA (CLI, --init-from) adapts it to a new task with the base frozen."""
    train, val = _sft_files(tmp_path)
    base_cfg = _cfg(tmp_path, train, val)
    base_cfg.train.out_dir = str(tmp_path / "base")
    base_cfg.train.steps = 80
    run_sft(base_cfg, model=tiny_model(tok), tokenizer=tok)
    t2 = write_jsonl(tmp_path / "down.jsonl", [{"messages": countdown_conv(n)} for n in range(1, 10)] * 8)
    v2 = write_jsonl(tmp_path / "down_val.jsonl", [{"messages": countdown_conv(n)} for n in (4, 7)])
    from smelt.cli import main as cli_main
    args = ["sft", "--init-from", str(tmp_path / "base"), "--data.train", str(t2), "--data.val", str(v2),
            "--data.seq_len", "64", "--data.batch_size", "4", "--optim.lr", "1e-2", "--optim.warmup_steps", "2",
            "--train.steps", "60", "--train.eval_every", "0", "--train.log_every", "30", "--train.device", "cpu",
            "--train.out_dir", str(tmp_path / "lora"), "--train.progress", "false",
            "--lora.rank", "8", "--lora.targets", "q,v,up,down", "--lora.quantize_base", quant]
    assert cli_main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "lora" / "metrics.jsonl").read_text().splitlines()]
    from smelt.posttrain.sft import lm_fields, make_lm_evaluator
    from smelt.train.checkpoint import load_pretrained
    base, _ = load_pretrained(tmp_path / "base")
    cfg = _cfg(tmp_path, t2, v2)
    from smelt.posttrain.data import read_conversations
    fields = lm_fields(tok, read_conversations(str(v2), BadRows()), cfg, BadRows())
    ev = make_lm_evaluator(fields, cfg, torch.device("cpu"))
    before = ev(base)["val_loss"]
    assert rows[-1]["val_loss"] < 0.8 * before, (before, rows[-1])
    ckpt = tmp_path / "lora" / "checkpoints" / "step-60"
    from safetensors.torch import load_file
    ad = load_file(str(ckpt / "adapter.safetensors"))
    assert ad and all(".lora_" in k for k in ad)
    assert set(load_file(str(ckpt / "model.safetensors"))) == set(ad)  # checkpoints hold adapters only
    # the LoRA run loads (base + merged adapters) wherever a model is expected, and scores as it did in training
    merged, tok2 = load_pretrained(tmp_path / "lora")
    assert abs(ev(merged)["val_loss"] - rows[-1]["val_loss"]) < 1e-4
    assert tok2 is not None and tok2.vocab_size == tok.vocab_size
    # base weights in the base run are untouched
    base2, _ = load_pretrained(tmp_path / "base")
    for (k, a), b in zip(base.state_dict().items(), base2.state_dict().values()):
        assert torch.equal(a, b), k


def test_best_fit_packing_fills_rows():
    ex = [([1] * n, [1] * n) for n in (6, 4, 5, 5, 3, 7)]  # 30 tokens: 3 full rows of 10 exist
    ids, mask, seg = pack_rows(ex, 10, pad_id=0)
    assert ids.shape == (3, 10) and int(mask.sum()) == 30
    assert sorted(seg.max(1).values.tolist()) == [2, 2, 2]  # each row holds two examples, numbered 1 and 2
    ids, _, _ = pack_rows(ex, 10, pad_id=0, packing=False)  # one example per row, padded
    assert ids.shape == (6, 10)


def test_doc_mask_isolates_packed_conversations(tok):
    """With segments, a packed row's second conversation gets exactly the logits it gets on its own."""
    model = tiny_model(tok).eval()
    a, _ = tok.render_chat(count_conv(3))
    b, _ = tok.render_chat(count_conv(5))
    row = torch.tensor([a + b])
    seg = torch.tensor([[1] * len(a) + [2] * len(b)])
    with torch.no_grad():
        packed = model(row, segments=seg)
        alone = model(torch.tensor([b]))
        leaky = model(row)
    torch.testing.assert_close(packed[0, len(a):], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[0, :len(a)], leaky[0, :len(a)], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(leaky[0, len(a):], alone[0], atol=1e-3)  # without the mask, b sees a
