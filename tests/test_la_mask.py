"""The LA attention mask equals a brute-force construction from the rule, for many random masks.
(Its docstring example runs with the module's doctests in tests/test_masks.py.)"""
import pytest
import torch

from ilat_ext.masks import la_attention_mask


def brute_force(token_mask, n_cond, layout):
    """Row by row, straight from the rule in the issue and the paper (Fig. 3b)."""
    m = [bool(v) for v in token_mask.reshape(-1)]
    L = len(m)
    if layout == "start":
        targets = [((m[t - 1] if t > 0 else False), m[t]) for t in range(L)]   # (held, predicted)
    else:
        targets = [(m[t], m[t + 1]) for t in range(L - 1)]
    kinds = ["cond"] * n_cond + ["causal" if held or pred else "global" for held, pred in targets]
    S = len(kinds)
    out = torch.zeros(S, S, dtype=torch.bool)
    for i in range(S):
        for j in range(S):
            if kinds[i] == "cond":
                out[i, j] = kinds[j] == "cond"
            elif kinds[i] == "global":
                out[i, j] = kinds[j] in ("cond", "global")
            else:
                out[i, j] = kinds[j] in ("cond", "global") or (kinds[j] == "causal" and j <= i)
    return out


@pytest.mark.parametrize("layout", ["start", "taming"])
def test_equals_brute_force_for_random_masks(layout):
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        h, w = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(2, 6, (1,), generator=g))
        n_cond = int(torch.randint(1, 7, (1,), generator=g))
        rate = [0.0, 0.1, 0.3, 0.7, 1.0][trial % 5]
        m = torch.rand(3, h, w, generator=g) < rate
        got = la_attention_mask(m, n_cond, layout)
        for b in range(3):
            assert torch.equal(got[b], brute_force(m[b], n_cond, layout)), (trial, layout, m[b])


def test_empty_mask_has_no_causal_rows_and_full_mask_is_causal():
    empty = la_attention_mask(torch.zeros(1, 2, 2, dtype=torch.bool), n_cond=2)[0]
    assert empty[2:, 2:].all() and empty[:2, :2].all() and not empty[:2, 2:].any()
    full = la_attention_mask(torch.ones(1, 2, 2, dtype=torch.bool), n_cond=2)[0]
    assert torch.equal(full[2:, 2:], torch.ones(4, 4, dtype=torch.bool).tril())  # plain AR over the target


def test_first_masked_token_after_a_known_one_is_not_predicted_blind():
    m = torch.zeros(1, 5, dtype=torch.bool)
    m[0, 1] = m[0, 3] = True  # tokens 1 and 3 masked, token 2 known
    a = la_attention_mask(m, n_cond=1)[0]
    # start layout: target position t (sequence index 1 + t) holds token t-1 and predicts token t.
    row_predicting_3 = 1 + 3   # holds token 2 (known): the release calls this row global
    column_holding_1 = 1 + 2   # holds the generated token 1
    assert a[row_predicting_3, column_holding_1]  # token 3 is predicted seeing the generated token 1
    assert not a[1 + 2, 1 + 3]  # causal rows never see later causal columns


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="layout"):
        la_attention_mask(torch.zeros(1, 4, dtype=torch.bool), 1, layout="nope")
    with pytest.raises(ValueError, match=r"\(4,\)"):
        la_attention_mask(torch.zeros(4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="n_cond"):
        la_attention_mask(torch.zeros(1, 4, dtype=torch.bool), 0)
