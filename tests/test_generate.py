import math

import pytest
import torch

from smelt.infer.generate import generate, sample_next, stream, top_k_filter, top_p_filter
from smelt.model import build_model, preset


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Decoding a tiny model is hundreds of small ops: on a busy machine, intra-op thread hand-offs cost far more
    # than they save (measured: ~100x slower with 2 threads under load), so these tests run single-threaded.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return build_model(preset("debug", n_layers=2, max_seq_len=64), seed=0).eval()


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 4096, (n,), generator=g).tolist() for n in lengths]


def test_kv_cache_greedy_equals_full_recompute(model):
    prompts = _prompts([1, 3, 3, 9, 20])  # mixed lengths in one call, two rows sharing a length
    with_cache = generate(model, prompts, 12, temperature=0)
    without = generate(model, prompts, 12, temperature=0, use_cache=False)
    assert with_cache == without
    assert all(len(r) == 12 for r in with_cache)
    # batching does not change a row's result
    assert generate(model, [prompts[3]], 12, temperature=0) == [with_cache[3]]


def test_top_k_1_is_greedy(model):
    prompts = _prompts([4, 7])
    assert generate(model, prompts, 8, temperature=1.0, top_k=1, seed=3) == generate(model, prompts, 8, temperature=0)


def test_seeds(model):
    prompts = _prompts([5, 5, 6])
    a = generate(model, prompts, 10, seed=1)
    assert a == generate(model, prompts, 10, seed=1)
    assert a != generate(model, prompts, 10, seed=2)
    assert a[0] != a[1]  # rows of one batch draw independently
    # streaming one prompt consumes the same random numbers as generating it alone
    assert list(stream(model, prompts[2], 10, seed=4)) == generate(model, [prompts[2]], 10, seed=4)[0]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.125, 0.5, 0.0625, 0.25, 0.0625],
                          [0.25, 0.0625, 0.125, 0.0625, 0.5]])
    logits = probs.log()

    def kept(p):
        return [sorted(i for i in range(5) if math.isfinite(row[i])) for row in top_p_filter(logits, p).tolist()]

    assert kept(0.4) == [[1], [4]]                      # the top token alone already reaches p
    assert kept(0.6) == [[1, 3], [0, 4]]                # 0.5 < 0.6 ≤ 0.75
    assert kept(0.8) == [[0, 1, 3], [0, 2, 4]]          # 0.75 < 0.8 ≤ 0.875
    # 0.875 < 0.9: one of the two tied 0.0625 tokens is needed, and one is enough (0.9375 ≥ 0.9)
    assert [len(k) for k in kept(0.9)] == [4, 4]
    assert kept(0.95) == [[0, 1, 2, 3, 4]] * 2
    assert kept(1.0) == [[0, 1, 2, 3, 4]] * 2
    assert top_k_filter(logits, 2).isfinite().sum().item() == 4
    # sampling never leaves the nucleus
    g = torch.Generator().manual_seed(0)
    draws = {tuple(sample_next(logits, 1.0, top_p=0.6, generator=g).tolist()) for _ in range(200)}
    assert {d[0] for d in draws} == {1, 3} and {d[1] for d in draws} == {0, 4}


def test_stop_tokens_end_rows(model):
    prompts = _prompts([6, 6, 11])
    free = generate(model, prompts, 15, temperature=0)
    stop = free[0][4]
    out = generate(model, prompts, 15, temperature=0, stop_tokens={stop})
    for row, full in zip(out, free):
        if stop in full:
            cut = full.index(stop)
            assert row == full[:cut + 1]  # the stop token is included
        else:
            assert row == full
    assert out[0][-1] == stop and len(out[0]) <= 5
    assert list(stream(model, prompts[0], 15, temperature=0, stop_tokens={stop})) == out[0]


def test_max_seq_len(model):
    long = _prompts([60])[0]
    with pytest.warns(UserWarning, match="max_seq_len=64"):
        out = generate(model, [long], 10, temperature=0)
    assert len(out[0]) == 4  # prompt + output never exceed the context
    with pytest.warns(UserWarning):
        assert len(list(stream(model, long, 10, temperature=0))) == 4
    with pytest.raises(ValueError, match="max_seq_len=64"):
        generate(model, _prompts([64]), 1)
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[]], 1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], 1, top_p=0.0)


def test_training_mode_is_restored(model):
    model.train()
    try:
        generate(model, [[1, 2, 3]], 2, temperature=0)
        assert model.training
    finally:
        model.eval()


def test_cli(tmp_path, capsys):
    tok_mod = pytest.importorskip("smelt.tokenizer")
    from smelt.cli import main
    from smelt.train.checkpoint import save_checkpoint
    tok = tok_mod.Tokenizer.train([f"to be or not to be, that is question {i}" for i in range(300)], vocab_size=300)
    run = tmp_path / "run"
    save_checkpoint(run, 1, build_model(preset("debug", n_layers=1, vocab_size=tok.vocab_size)), None, {})
    tok.save(run / "tokenizer")
    assert main(["generate", str(run), "--prompt", "to be", "--max-tokens", "5", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("to be")
    assert main(["generate", str(run), "--prompt", "hi", "--max-tokens", "4", "--chat", "--num-samples", "2",
                 "--seed", "1"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 2


def test_stream_checks_arguments_at_call(model):
    with pytest.raises(ValueError, match="max_seq_len"):
        stream(model, list(range(64)), 3)  # no next(): the error comes from the call itself
    assert list(stream(model, [1, 2], 0)) == []
