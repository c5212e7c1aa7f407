"""The scoring engine: packed shared-context log-likelihoods equal brute-force per-choice passes."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from eval_fixtures import corpus, tiny_model, tiny_tokenizer
from smelt.eval.harness import Scorer, bits_per_byte


def brute_force(model, ctx, cont):
    """log p(cont | ctx) from one unbatched causal forward pass of ctx + cont."""
    ids = torch.tensor([list(ctx) + list(cont)[:-1]])  # the last token is a target, never an input
    with torch.no_grad():
        logp = F.log_softmax(model(ids)[0].double(), dim=-1)
    return sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))




@pytest.mark.parametrize("kv_heads", [2, 4])
def test_tree_scorer_matches_brute_force(kv_heads):
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, n_kv_heads=kv_heads)
    sc = Scorer(model, tok, batch_size=5)
    rng = random.Random(0)
    docs = corpus(60, seed=1)
    reqs = []
    for i in range(12):
        for _ in range(rng.randint(1, 5)):
            cont = " " + " ".join(rng.choice(docs).split()[: rng.randint(1, 6)])
            reqs.append(sc.encode_pair(docs[i], cont))
    reqs.append(sc.encode_pair("", "The cat"))  # empty context: conditioned on BOS only
    tree = sc.loglikelihood(reqs)
    plain = sc.loglikelihood_plain(reqs)
    assert sc.share_context
    for (ctx, cont), a, b in zip(reqs, tree, plain):
        ref = brute_force(model, ctx, cont)
        assert abs(a.logprob - ref) < 1e-5, (a.logprob, ref)
        assert abs(b.logprob - ref) < 1e-5
        assert a.greedy == b.greedy
        assert a.n_tokens == len(cont)


def test_greedy_flag_and_truncation():
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_seq_len=32)
    sc = Scorer(model, tok, batch_size=3)
    ctx = list(range(10, 60))  # longer than the window: the left part is dropped
    with torch.no_grad():
        nxt = model(torch.tensor([ctx[-32:]]))[0, -1].argmax().item()
    res = sc.loglikelihood([(ctx, [nxt]), (ctx, [(nxt + 1) % tok.vocab_size])])
    assert res[0].greedy and not res[1].greedy
    ref = brute_force(model, ctx[-32:], [nxt])
    assert abs(res[0].logprob - ref) < 1e-5


def test_encode_pair_moves_trailing_space():
    tok = tiny_tokenizer()
    sc = Scorer(tiny_model(tok.vocab_size), tok)
    a = sc.encode_pair("The cat sat ", "on the mat")
    b = sc.encode_pair("The cat sat", " on the mat")
    assert a == b
    assert a[0][0] == tok.bos_id
    assert tok.decode(a[1]) == " on the mat"


def test_rolling_nll_matches_single_pass_and_counts_every_token():
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_seq_len=64)
    ids = [tok.bos_id] + tok.encode(" ".join(corpus(30)))
    assert len(ids) > 200
    sc = Scorer(model, tok, batch_size=4)
    nats, n = sc.rolling_nll(ids, stride=16)
    assert n == len(ids) - 1
    # Reference: every token scored with exactly the context the sliding window gives it.
    ref = 0.0
    with torch.no_grad():
        first = model(torch.tensor([ids[:64]]))[0]
        ref -= F.log_softmax(first.double(), -1)[torch.arange(63), torch.tensor(ids[1:64])].sum().item()
        end = 64
        while end < len(ids):
            new_end = min(end + 16, len(ids))
            s = new_end - 64
            logits = model(torch.tensor([ids[s:new_end - 1]]))[0].double()
            lp = F.log_softmax(logits, -1)
            rows = torch.arange(end - 1 - s, new_end - 1 - s)
            ref -= lp[rows, torch.tensor(ids[end:new_end])].sum().item()
            end = new_end
    assert abs(nats - ref) < 1e-3
    # a short text is one window: equal to the plain causal loss
    short = ids[:40]
    nats, n = sc.rolling_nll(short)
    with torch.no_grad():
        loss = F.cross_entropy(model(torch.tensor([short[:-1]]))[0], torch.tensor(short[1:]), reduction="sum")
    assert abs(nats - loss.item()) < 1e-3 and n == 39
    assert bits_per_byte(math.log(2) * 10, 10) == pytest.approx(1.0)


def test_shared_prefix_across_items_matches_brute_force():
    """Items behind the same long prompt prefix (fixed few-shot examples) share one prefix pass."""
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_seq_len=256)
    sc = Scorer(model, tok, batch_size=4)
    docs = corpus(40, seed=3)
    shots = "\n\n".join(docs[:4]) + "\n\n"
    reqs = []
    for i in range(4, 14):  # ten items, 2-4 choices each, all behind the same shots
        for j in range(2 + i % 3):
            reqs.append(sc.encode_pair(shots + docs[i], " " + docs[20 + j].split()[0]))
    reqs.append(sc.encode_pair(docs[30], " cat"))  # one item without the prefix
    assert len(reqs[0][0]) > 64
    batches = sc._batches([(tuple(c), [(0, tuple(k))]) for c, k in reqs])
    assert any(len(b) > 1 for b in batches)
    tree = sc.loglikelihood(reqs)
    for (ctx, cont), a in zip(reqs, tree):
        assert abs(a.logprob - brute_force(model, ctx, cont)) < 1e-5
