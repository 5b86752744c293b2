"""The sampler's primitives (ilat_ext/modules/sampling.py): the draw of a token from logits follows
softmax(logits / T) over the top k, and `check_sampling_mask` refuses every attention mask under
which the KV-cached sampler would not reproduce the teacher-forced pass.

The sampler itself (cached == uncached == one teacher-forced pass) is tested on both backbones in
test_backbone_la_mask.py.
"""
import math

import pytest
import torch

from ilat_ext.masks import la_attention_mask, la_causal_positions
from ilat_ext.modules.sampling import check_sampling_mask, pick_tokens, sample_tokens

# ------------------------------------------------------------------ the draw
LOGITS = torch.tensor([2.0, 1.4, 1.1, 0.5, 0.0, -0.3, -1.0, -2.5])   # no ties: the top k is one set
DRAWS = 40_000


def _expected(logits, temperature, top_k):
    """softmax(logits / T) restricted to the k largest logits and renormalised (written out)."""
    support = sorted(range(len(logits)), key=lambda i: -float(logits[i]))[:top_k or len(logits)]
    weights = {i: math.exp(float(logits[i]) / temperature) for i in support}
    total = sum(weights.values())
    return [weights.get(i, 0.0) / total for i in range(len(logits))]


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, None), (1.0, 3), (0.7, 5), (3.0, 1)])
def test_draws_follow_softmax_over_the_top_k(temperature, top_k):
    """40k seeded draws from fixed logits: every draw is in the top-k support, and each token's count
    is within 5 binomial sigmas of DRAWS * softmax(logits / T)_top-k (a seed fixes the draws, so the
    test is deterministic; 5 sigmas make it pass for any seed but one in ~10^5 per token)."""
    draws = pick_tokens(LOGITS.expand(DRAWS, -1), greedy=False, temperature=temperature, top_k=top_k,
                        generator=torch.Generator().manual_seed(0))
    assert draws.shape == (DRAWS,) and draws.dtype == torch.long
    counts = torch.bincount(draws, minlength=len(LOGITS)).tolist()
    for token, (count, p) in enumerate(zip(counts, _expected(LOGITS, temperature, top_k))):
        if p == 0.0:
            assert count == 0, (token, count)                       # outside the top k: never drawn
        else:
            sigma = math.sqrt(DRAWS * p * (1 - p))
            assert abs(count - DRAWS * p) <= 5 * sigma + 1, (token, count, DRAWS * p, sigma)


def test_draws_are_per_row_and_greedy_is_the_argmax():
    """Each row draws from its own logits (a row whose mass sits on one token always gives it);
    greedy ignores temperature and top_k; a non-positive temperature is refused."""
    logits = torch.stack([LOGITS, torch.full((8,), -30.0).index_fill(0, torch.tensor([6]), 30.0)])
    draws = pick_tokens(logits.repeat(500, 1), greedy=False, generator=torch.Generator().manual_seed(1)).view(500, 2)
    assert (draws[:, 1] == 6).all() and (draws[:, 0] != 6).any()
    assert pick_tokens(logits, greedy=True, temperature=0.1, top_k=2).tolist() == [0, 6]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pick_tokens(logits, greedy=False, temperature=0.0)


# ------------------------------------------------------------------ check_sampling_mask's refusals
H, W, N_COND = 3, 4, 2
L = H * W


def _la_case(layout="start"):
    """A valid LA case: tokens 1, 2 and 6, 7 masked (two runs) -> (allowed, sequential, gen_mask, n_pre)."""
    gen = torch.zeros(1, L, dtype=torch.bool)
    gen[0, [1, 2, 6, 7]] = True
    n_pre = N_COND + 1 if layout == "start" else N_COND
    return la_attention_mask(gen, N_COND, layout), la_causal_positions(gen, N_COND, layout), gen, n_pre


class NoCalls(torch.nn.Module):
    """A backbone that must never run: a refused mask stops the sampler before any forward pass."""

    vocab_size = 5

    def forward(self, *args, **kwargs):
        raise AssertionError("the sampler ran a transformer pass on a mask it should have refused")


def _sample(allowed, sequential, gen, n_pre):
    """sample_tokens with n_pre leading embeddings; it runs `check_sampling_mask` first."""
    return sample_tokens(NoCalls(), torch.zeros(gen.shape, dtype=torch.long), gen, allowed, sequential,
                         embeddings=torch.zeros(1, n_pre, 4) if n_pre else None)


@pytest.mark.parametrize("layout", ["start", "taming"])
def test_the_la_mask_and_the_causal_mask_pass_the_check(layout):
    allowed, sequential, gen, n_pre = _la_case(layout)
    check_sampling_mask(allowed, sequential, gen, n_pre)
    S = allowed.shape[1]
    causal = torch.ones(S, S, dtype=torch.bool).tril()[None]          # Taming's edit: all from token 1 on
    check_sampling_mask(causal, torch.arange(S)[None] >= n_pre - 1 + 1, gen, n_pre)


def _breaks():
    """(name, error pattern, (allowed, sequential, gen, n_pre)) for each refusal, each made from the
    valid start-layout case by one change."""
    allowed, sequential, gen, n_pre = _la_case()
    S = allowed.shape[1]
    out = [("no leading position", "the first grid token needs a position that predicts it",
            (allowed[:, :-n_pre, :-n_pre], sequential[:, :-n_pre], gen, 0)),
           ("sequential of the wrong shape", r"must be \(B, S, S\) and \(B, S\)",
            (allowed, sequential[:, :-1], gen, n_pre)),
           ("non-square mask", r"must be \(B, S, S\) and \(B, S\)", (allowed[:, :, :-1], sequential, gen, n_pre)),
           ("length mismatch", r"sequence of 14 positions does not match 2 leading positions \+ 12 grid tokens",
            (allowed, sequential, gen, n_pre - 1))]
    holder = n_pre + 6                                                # holds masked token 6
    seq = sequential.clone()
    seq[0, holder] = False
    out.append(("a token to generate held outside the group", "not in the sequential group", (allowed, seq, gen, n_pre)))
    glob = (~sequential[0]).nonzero().flatten()
    glob = int(glob[glob >= N_COND][0])                                 # a global row (not a condition row)
    later_seq = int(sequential[0].nonzero().flatten()[-1])
    peek = allowed.clone()
    peek[0, glob, later_seq] = True
    out.append(("a global row reads a generated token", "a non-sequential row attends to a sequential column",
                (peek, sequential, gen, n_pre)))
    cond_peek = allowed.clone()
    cond_peek[0, 0, later_seq] = True
    out.append(("a condition row reads a generated token", "a non-sequential row attends to a sequential column",
                (cond_peek, sequential, gen, n_pre)))
    first_seq = int(sequential[0].nonzero().flatten()[0])
    ahead = allowed.clone()
    ahead[0, first_seq, later_seq] = True
    out.append(("a sequential row reads a later one", "attends to a later sequential column",
                (ahead, sequential, gen, n_pre)))
    assert S == 14 and not allowed[0, glob, later_seq] and not allowed[0, first_seq, later_seq]
    return out


@pytest.mark.parametrize("name, pattern, case", _breaks(), ids=[b[0] for b in _breaks()])
def test_check_sampling_mask_refuses_each_mask_the_cache_cannot_reproduce(name, pattern, case):
    """Each refusal, triggered alone: the check raises its own ValueError, and so does the sampler
    before any transformer pass (the backbone here would fail the test if it were called)."""
    with pytest.raises(ValueError, match=pattern):
        check_sampling_mask(*case)
    with pytest.raises(ValueError, match=pattern):
        _sample(*case)
