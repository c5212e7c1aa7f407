import dataclasses

import torch

from smelt.model import KVCache, Transformer, build_model, preset


def test_presets_param_counts():
    counts = {}
    for name in ["debug", "gpt2-124m", "350m", "1b"]:
        with torch.device("meta"):
            counts[name] = Transformer(preset(name)).num_params()
    assert 1e6 <= counts["debug"] <= 2e6
    assert 115e6 <= counts["gpt2-124m"] <= 135e6
    assert 300e6 <= counts["350m"] <= 420e6
    assert 0.9e9 <= counts["1b"] <= 1.3e9


def test_meta_init_is_seeded_and_finite():
    a, b = build_model(preset("debug"), seed=1), build_model(preset("debug"), seed=1)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
        assert torch.isfinite(p).all()
    x = torch.randint(0, 4096, (2, 12))
    assert a(x).shape == (2, 12, 4096)


def test_causality():
    m = build_model(preset("debug")).eval()
    x = torch.randint(0, 4096, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 4096
    torch.testing.assert_close(m(x)[:, :10], m(y)[:, :10])
    assert not torch.allclose(m(x)[:, 10:], m(y)[:, 10:])


def test_gqa_equals_mha_with_repeated_kv():
    cfg = preset("debug", n_kv_heads=2)
    gqa = build_model(cfg).eval()
    mha = build_model(dataclasses.replace(cfg, n_kv_heads=4)).eval()
    sd = gqa.state_dict()
    hd = cfg.head_dim
    for i in range(cfg.n_layers):
        for w in ("k", "v"):
            key = f"layers.{i}.attn.{w}.weight"
            sd[key] = sd[key].view(2, hd, cfg.d_model).repeat_interleave(2, dim=0).reshape(4 * hd, cfg.d_model)
    mha.load_state_dict(sd)
    x = torch.randint(0, 4096, (2, 9))
    torch.testing.assert_close(gqa(x), mha(x))


def test_relu2_and_untied_build():
    m = build_model(preset("debug", mlp="relu2", tie_embeddings=False))
    assert m.head is not None and not hasattr(m.layers[0].mlp, "gate")
    assert m(torch.randint(0, 4096, (1, 4))).shape == (1, 4, 4096)


def test_kv_cache_prefill_chunks_match_full_forward():
    m = build_model(preset("debug")).eval()
    x = torch.randint(0, 4096, (2, 20))
    full = m(x)
    cache = KVCache.empty(m.cfg, 2, 32, "cpu", torch.float32)
    parts = [m(x[:, :7], cache=cache), m(x[:, 7:8], cache=cache), m(x[:, 8:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)
