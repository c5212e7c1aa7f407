"""smelt ⇄ HF Llama: same weights must give the same logits in both libraries, and conversions must round-trip."""

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM

from smelt.cli import main as smelt_main
from smelt.interop.hf import WEIGHT_MAP, export_hf, hf_name, import_hf, smelt_name
from smelt.model import build_model, preset
from smelt.train.checkpoint import load_pretrained, save_checkpoint


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: intra-op threading only adds hand-off cost (badly so on a loaded machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomise_norms(model) -> None:
    # Norm weights start at 1: perturb them so a swapped norm mapping would show in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # also matches HF *_layernorm.weight
                p.uniform_(0.5, 1.5)


def _hf_logits(folder, x):
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(x).logits


@pytest.mark.parametrize("overrides", [
    {},                                            # debug preset: GQA 4 query heads / 2 kv heads, tied
    {"n_kv_heads": 4, "rope_theta": 500000.0},     # plain multi-head attention
    {"tie_embeddings": False, "vocab_size": 4000},  # untied head, vocab not a multiple of pad_vocab_to
])
def test_export_matches_transformers_logits(tmp_path, overrides):
    torch.manual_seed(0)
    model = build_model(preset("debug", **overrides), seed=1).eval()
    _randomise_norms(model)
    export_hf(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_key_value_heads"] == model.cfg.kv_heads and cfg["tie_word_embeddings"] == model.cfg.tie_embeddings
    x = torch.randint(0, model.cfg.vocab_size, (2, 37))
    with torch.no_grad():
        ours = model(x)
    theirs = _hf_logits(tmp_path, x)
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_export_import_round_trip_is_exact(tmp_path):
    model = build_model(preset("debug", tie_embeddings=False, vocab_size=4000), seed=2).eval()
    export_hf(model, tmp_path)
    back, tok = import_hf(tmp_path)
    assert tok is None and back.cfg.vocab_size == 4000 and back.cfg.tie_embeddings is False
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    v = model.cfg.vocab_size
    for k in a:
        if k in ("embed.weight", "head.weight"):  # padding rows are never exported and come back as zeros
            assert torch.equal(a[k][:v], b[k][:v]) and not b[k][v:].any(), k
        else:
            assert torch.equal(a[k], b[k]), k
    x = torch.randint(0, v, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), atol=0, rtol=0)


@pytest.mark.parametrize("tied,shard", [(True, False), (False, True)])
def test_import_model_built_by_transformers(tmp_path, tied, shard):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-6, rope_theta=5000.0, tie_word_embeddings=tied)
    hf = LlamaForCausalLM(config).eval()
    _randomise_norms(hf)
    hf.save_pretrained(tmp_path, **({"max_shard_size": "60KB"} if shard else {}))
    assert (tmp_path / "model.safetensors.index.json").exists() == shard
    model, tok = import_hf(tmp_path)
    assert tok is None
    assert (model.cfg.rope_theta, model.cfg.norm_eps, model.cfg.kv_heads) == (5000.0, 1e-6, 2)
    assert model.cfg.tie_embeddings == tied and model.cfg.padded_vocab == 320
    x = torch.randint(0, 300, (2, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=1e-5)
    # load_pretrained recognises HF folders by their config.json
    again, _ = load_pretrained(tmp_path)
    assert torch.equal(again.embed.weight, model.embed.weight)


def test_bf16_export_and_extra_layer_is_named(tmp_path):
    from safetensors.torch import load_file, save_file
    model = build_model(preset("debug", n_layers=1), seed=3)
    export_hf(model, tmp_path, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    back, _ = import_hf(tmp_path)  # smelt keeps fp32 master weights
    assert back.embed.weight.dtype == torch.float32
    torch.testing.assert_close(back.embed.weight, model.embed.weight.bfloat16().float())
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"].clone()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected \['model.layers.1.mlp.up_proj.weight'\]"):
        import_hf(tmp_path)


def test_weight_map_covers_every_tensor_both_ways():
    untied = build_model(preset("debug", tie_embeddings=False))
    for name in untied.state_dict():
        hf, transform = hf_name(name)
        assert smelt_name(hf) == (name, transform)
    assert len({r.hf for r in WEIGHT_MAP}) == len(WEIGHT_MAP)
    assert smelt_name("model.layers.3.self_attn.rotary_emb.inv_freq") is None


def test_relu2_cannot_be_llama(tmp_path):
    model = build_model(preset("debug", mlp="relu2"))
    with pytest.raises(ValueError, match="model.mlp='relu2'"):
        export_hf(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("field,value", [
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}),
    ("attention_bias", True),
    ("mlp_bias", True),
    ("sliding_window", 64),
    ("hidden_act", "gelu"),
    ("head_dim", 64),
    ("model_type", "gpt2"),
])
def test_bad_config_fields_are_named(tmp_path, field, value):
    export_hf(build_model(preset("debug", n_layers=1)), tmp_path)
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    cfg[field] = value
    if field == "model_type":
        cfg["architectures"] = ["GPT2LMHeadModel"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field) as e:
        import_hf(tmp_path)
    assert "config.json" in str(e.value)


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file
    export_hf(build_model(preset("debug", n_layers=1)), tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="up_proj"):
        import_hf(tmp_path)


def test_cli_round_trip(tmp_path, capsys):
    model = build_model(preset("debug", n_layers=2), seed=5).eval()
    run = tmp_path / "run"
    save_checkpoint(run, 7, model, None, {})
    tok_mod = pytest.importorskip("smelt.tokenizer")
    tok = tok_mod.Tokenizer.train([f"hello world, the quick brown fox {i}" for i in range(300)], vocab_size=300)
    tok.save(run / "tokenizer")
    assert smelt_main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    assert smelt_main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run2")]) == 0
    assert (tmp_path / "run2" / "checkpoints" / "latest").read_text().strip() == "step-0"
    back, back_tok = load_pretrained(tmp_path / "run2")
    assert back_tok is not None and back_tok.encode("the fox") == tok.encode("the fox")
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    # importing onto an existing run is refused rather than silently overwriting it
    assert smelt_main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run2")]) == 1
    shutil.rmtree(tmp_path / "run2")


def test_exported_tokenizer_loads_in_transformers(tmp_path):
    tok_mod = pytest.importorskip("smelt.tokenizer")
    from transformers import PreTrainedTokenizerFast
    tok = tok_mod.Tokenizer.train([f"A tiny corpus for a tiny tokenizer, with number {i} and café." for i in range(300)],
                                  vocab_size=300)
    model = build_model(preset("debug", n_layers=1, vocab_size=tok.vocab_size))
    export_hf(model, tmp_path, tokenizer=tok)
    hf_tok = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    text = "a tiny café with 12345 numbers"
    assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf_tok.bos_token_id == tok.bos_id and hf_tok.eos_token_id == tok.eos_id
    msgs = [{"role": "user", "content": "hi there"}]
    ids, _ = tok.render_chat(msgs, add_generation_prompt=True)
    hf_ids = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if isinstance(hf_ids, dict) or hasattr(hf_ids, "keys"):  # transformers 5 returns a BatchEncoding
        hf_ids = hf_ids["input_ids"]
    assert list(hf_ids) == ids
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["eos_token_id"] == [tok.eos_id, tok.token_id("<|end|>")]


def test_greedy_generation_matches_transformers_generate(tmp_path):
    from smelt.infer.generate import generate
    model = build_model(preset("debug", n_layers=2), seed=4).eval()
    export_hf(model, tmp_path)
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    prompt = torch.randint(0, model.cfg.vocab_size, (1, 9))
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                         pad_token_id=0)[0, 9:].tolist()
    assert generate(model, prompt.tolist(), 16, temperature=0) == [theirs]
