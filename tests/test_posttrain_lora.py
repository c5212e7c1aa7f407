import json

import torch

from ptutil import one_thread, tiny_model_cfg  # noqa: F401
from smelt.model import build_model
from smelt.posttrain.lora import LoraConfig, LoRALinear, apply_lora, merge_lora, save_adapter
from smelt.train.checkpoint import HEADS_PREFIX, load_pretrained, save_checkpoint, save_model_files


def _lora_model(targets=("q", "k", "v", "o", "gate", "up", "down")):
    model = build_model(tiny_model_cfg(300), seed=1)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = apply_lora(model, LoraConfig(rank=4, alpha=8.0, targets=list(targets)))
    with torch.no_grad():  # B starts at zero (a no-op adapter); give it values so merging is really tested
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.05)
    return model, base, wrapped


def test_lora_only_adapters_train_and_merge_matches_logits():
    model, base, wrapped = _lora_model()
    assert len(wrapped) == 2 * 7
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    # the base weights keep their names, so the state dict is base + adapters
    assert set(base) <= set(model.state_dict())
    x = torch.randint(0, 300, (2, 12))
    model.eval()
    with torch.no_grad():
        before = model(x)
        assert merge_lora(model) == 14
        after = model(x)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(base)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_lora_merge_cli_writes_plain_checkpoint(tmp_path):
    model, _, _ = _lora_model(("q", "v"))
    plain = build_model(tiny_model_cfg(300), seed=1)
    save_model_files(tmp_path / "base", plain)
    run = tmp_path / "run"
    save_checkpoint(run, 5, model, None, {}, write_extra=lambda f: save_adapter(f, model, LoraConfig(
        rank=4, alpha=8.0, targets=["q", "v"]), str(tmp_path / "base")), trainable_only=True)
    from smelt.cli import main as cli_main
    assert cli_main(["lora", "merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    merged, _ = load_pretrained(tmp_path / "merged")
    x = torch.randint(0, 300, (2, 10))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    assert json.loads((run / "checkpoints" / "step-5" / "state.json").read_text())["trainable_only"] is True


def test_heads_are_ignored_when_loading_a_plain_model(tmp_path):
    model = build_model(tiny_model_cfg(300), seed=2)
    model.heads = torch.nn.ModuleDict({"reward": torch.nn.Linear(64, 1, bias=False)})
    save_model_files(tmp_path / "rm", model)
    plain, _ = load_pretrained(tmp_path / "rm")
    assert not any(k.startswith(HEADS_PREFIX) for k in plain.state_dict())


def test_trainable_only_checkpoint_resumes(tmp_path):
    from smelt.train.checkpoint import load_checkpoint_state
    model, _, _ = _lora_model(("q",))
    ck = save_checkpoint(tmp_path, 3, model, None, {"loader": {}}, trainable_only=True)
    model2, _, _ = _lora_model(("q",))
    with torch.no_grad():
        for m in model2.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.zero_()
    load_checkpoint_state(ck, model2, None)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_int8_base_saves_memory_and_merges_exactly():
    from smelt.posttrain.lora import frozen_bytes
    plain = build_model(tiny_model_cfg(300), seed=1)
    x = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        ref = plain.eval()(x)
    full = frozen_bytes(plain) + sum(p.numel() * 4 for p in plain.parameters())
    targets = ["q", "k", "v", "o", "gate", "up", "down"]
    apply_lora(plain, LoraConfig(rank=4, alpha=8.0, targets=targets, quantize_base="int8"))
    assert frozen_bytes(plain) < 0.5 * full  # the projections dominate; int8 is a quarter of fp32
    with torch.no_grad():
        q_logits = plain(x)  # B = 0: only quantisation error
        torch.testing.assert_close(q_logits, ref, rtol=0.05, atol=0.05)
        for m in plain.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.05)
        before = plain(x)
        merge_lora(plain)
        torch.testing.assert_close(plain(x), before, rtol=1e-5, atol=1e-5)
