"""Options of ours on the condition (ILATTransformer, TamingTransformer, and PoseILATTransformer where
they apply): the grid position-code init (`pos_emb_init: grid`), the aligned condition and its
kernel. Tiny models from tests/helpers.py; brute-force references written out with loops.
"""
import pytest
import torch

from ilat_ext.masks import la_attention_mask
from ilat_ext.models import ILATTransformer, PoseILATTransformer, TamingTransformer, transformer_param_groups
from ilat_ext.modules.position_codes import grid_codes
from ilat_ext.modules.sampling import sample_tokens
from tests.helpers import (TINY_CODES, TINY_FACTOR, TINY_IMG, teacher_forced_logits, tiny_ilat,
                           tiny_ilat_config)


# ============================================================================ grid position init
def _first_grid_row(model, n_cond: int, extra=None) -> int:
    """The transformer position whose output predicts grid cell 0, from the model's own sequence
    (the path training and sampling take)."""
    c_idx = torch.zeros(1, n_cond, dtype=torch.long)
    emb, prefix, _ = model.sequence_inputs(c_idx, extra) if extra is not None else model.sequence_inputs(c_idx)
    return (0 if emb is None else emb.shape[1]) + (0 if prefix is None else prefix.shape[1]) - 1


@pytest.mark.parametrize("cls,layout", [(TamingTransformer, None), (ILATTransformer, "start"),
                                        (ILATTransformer, "taming"), ("pose", "start")])
def test_grid_position_init_gives_a_condition_cell_and_the_row_predicting_it_one_code(cls, layout):

    pose = cls == "pose"
    cls = PoseILATTransformer if pose else cls
    kw = {} if layout is None or pose else {"layout": layout}
    model, plain = tiny_ilat(cls=cls, pos_emb_init="grid", **kw), tiny_ilat(cls=cls, **kw)
    side = TINY_IMG // TINY_FACTOR
    L = N = side * side                                  # both stages are f4 here: 8 x 8 cells each
    extra = torch.zeros(1, 13, model.transformer.n_embd) if pose else None
    first_row = _first_grid_row(model, N, extra)
    first_cond = 1 if layout == "start" else 0           # after c_s in the start layout
    pos, ref = model.transformer.pos_emb[0].detach(), plain.transformer.pos_emb[0].detach()
    codes = grid_codes(side, side, pos.shape[1])
    # the same places give the same codes on grids of other sizes: a 4 x 4 condition grid's cell 0
    # covers the 2 x 2 top-left cells of this 8 x 8 grid, and its code is nearest to theirs
    coarse = grid_codes(side // 2, side // 2, pos.shape[1], cells=side)
    nearest = (coarse @ codes.t()).argmax(dim=1).view(side // 2, side // 2)
    assert all(nearest[r, c] // side // 2 == r and nearest[r, c] % side // 2 == c
               for r in range(side // 2) for c in range(side // 2))
    seen = set()
    for j in range(L):
        cond_at, row_at = first_cond + j, first_row + j
        torch.testing.assert_close(pos[cond_at], codes[j], rtol=0, atol=0)
        seen.add(cond_at)
        if layout != "start" and j == 0:
            continue                                     # taming layout: that row is the last condition cell
        torch.testing.assert_close(pos[row_at], codes[j], rtol=0, atol=0)
        seen.add(row_at)
    untouched = [p for p in range(pos.shape[0]) if p not in seen]
    assert untouched, "start tokens / pose features / unused positions must exist in this setup"
    torch.testing.assert_close(pos[untouched], ref[untouched], rtol=0, atol=0)   # c_s, z_s, pose, tail
    assert abs(float(codes.std()) - 0.02) < 0.004
    similarity = codes @ codes.t()
    assert torch.equal(similarity.argmax(dim=1), torch.arange(L)), "every cell's code is nearest to itself"


def test_grid_position_init_rejects_unknown_values_and_short_blocks():
    with pytest.raises(ValueError, match="pos_emb_init must be one of"):
        tiny_ilat(pos_emb_init="sinusoidal")
    with pytest.raises(ValueError, match="block_size is 100"):
        tiny_ilat(pos_emb_init="grid", block_size=100)


# ============================================================================ aligned condition
@pytest.mark.parametrize("cls,layout", [(TamingTransformer, None), (ILATTransformer, "start"),
                                        (ILATTransformer, "taming")])
def test_aligned_condition_feeds_condition_cell_j_to_the_row_predicting_cell_j(batch, cls, layout):
    """position_features holds aligned_emb(c_j) exactly at the position whose output predicts grid
    cell j and zeros elsewhere; the training forward uses it (the logits change with it and match
    a teacher-forced pass that adds it); it is a trained parameter."""
    kw = {} if layout is None else {"layout": layout}
    model = tiny_ilat(cls=cls, aligned_condition=True, **kw)
    x, c, mask = batch
    _, c_idx = model.encode_to_c(c)
    n_cond, L = c_idx.shape[1], (TINY_IMG // TINY_FACTOR) ** 2
    first_row = _first_grid_row(model, n_cond)
    features = model.position_features(c_idx, first_row + 1, L)
    assert features.shape == (3, first_row + L, model.transformer.n_embd)
    weight = model.aligned_emb.weight
    for b in range(3):
        for p in range(features.shape[1]):
            j = p - first_row
            want = weight[c_idx[b, j]] if 0 <= j < L else torch.zeros_like(weight[0])
            torch.testing.assert_close(features[b, p], want, rtol=0, atol=0)
    with torch.no_grad():
        if cls is TamingTransformer:
            logits, _ = model(x, c)
            z = model.encode_to_z(x)[1]
            reference = teacher_forced_logits(model, z, c, lambda n: None)
        else:
            logits, z, _ = model(x, c, mask)
            reference = teacher_forced_logits(model, z, c, lambda n: la_attention_mask(model.token_mask(x, mask), n,
                                                                                         model.layout))
        torch.testing.assert_close(logits[..., :TINY_CODES], reference, atol=1e-5, rtol=0)
        model.aligned_emb.weight.zero_()
        changed = model(x, c)[0] if cls is TamingTransformer else model(x, c, mask)[0]
        model.aligned_emb.weight.copy_(weight.detach().clone().normal_(std=0.02))
    assert not torch.allclose(changed, logits), "the aligned features must reach the logits"
    grouped = {id(p) for g in transformer_param_groups(model, 0.01) for p in g["params"]}
    assert id(model.aligned_emb.weight) in grouped


def test_aligned_condition_refuses_what_it_cannot_align():
    config = tiny_ilat_config(n_layer=1, aligned_condition=True)
    cond = config["cond_stage_config"]
    coarse = {"target": cond["target"], "params": dict(cond["params"], ddconfig=dict(
        cond["params"]["ddconfig"], ch_mult=(1, 1, 1, 1)))}                     # an 4 x 4 condition grid
    with pytest.raises(ValueError, match="on the image-token grid"):
        ILATTransformer(**dict(config, cond_stage_config=coarse))
    with pytest.raises(ValueError, match="needs a condition"):
        ILATTransformer(**dict(config, cond_stage_config="__is_unconditional__"))
    model = tiny_ilat(cls=TamingTransformer, aligned_condition=True)
    with pytest.raises(NotImplementedError, match="aligned condition"):
        model.sample(torch.zeros(1, 64, dtype=torch.long), torch.zeros(1, 64, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="condition tokens for"):
        model.position_features(torch.zeros(1, 10, dtype=torch.long), 10, 64)
    # the sampler checks the features cover its sequence once (its decoding steps do not re-check)
    z, gen = torch.zeros(1, 64, dtype=torch.long), torch.ones(1, 64, dtype=torch.bool)
    S = 64 + 64 - 1
    causal = torch.ones(S, S, dtype=torch.bool).tril()[None]
    with pytest.raises(ValueError, match="pos_features of shape"):
        sample_tokens(model.transformer, z, gen, causal, torch.arange(S)[None] >= 63,
                      prefix=torch.zeros(1, 64, dtype=torch.long), pos_features=torch.zeros(1, S - 1, 32))


@pytest.mark.parametrize("cls", [TamingTransformer, ILATTransformer])
def test_aligned_kernel_adds_the_condition_cells_around_cell_j(batch, cls):
    """`aligned_kernel: 3`: the feature of the row predicting cell (r, q) is aligned_emb(c_rq) plus a
    3x3 convolution of the aligned embeddings around (r, q), zero padded (brute-force reference). The
    convolution starts at zero (the k = 1 features), is trained and decayed, and the KV-cached
    decoding adds the same features as training (cached == teacher-forced logits)."""
    plain = tiny_ilat(cls=cls, aligned_condition=True)
    model = tiny_ilat(cls=cls, aligned_condition=True, aligned_kernel=3)
    x, c, mask = batch
    _, c_idx = model.encode_to_c(c)
    side, L = TINY_IMG // TINY_FACTOR, (TINY_IMG // TINY_FACTOR) ** 2
    first_row = _first_grid_row(model, c_idx.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(model.position_features(c_idx, first_row + 1, L),
                                   plain.position_features(c_idx, first_row + 1, L), rtol=0, atol=0)
        model.aligned_conv.weight.normal_(std=0.05)
        model.aligned_conv.bias.normal_(std=0.05)
        features = model.position_features(c_idx, first_row + 1, L)
    emb, weight, bias = model.aligned_emb.weight, model.aligned_conv.weight, model.aligned_conv.bias
    assert torch.count_nonzero(features[:, :first_row]) == 0
    for b in range(3):
        for j in range(L):
            r, q = divmod(j, side)
            want = emb[c_idx[b, j]] + bias
            for dr in (-1, 0, 1):
                for dq in (-1, 0, 1):
                    if 0 <= r + dr < side and 0 <= q + dq < side:
                        want = want + weight[:, :, dr + 1, dq + 1] @ emb[c_idx[b, (r + dr) * side + q + dq]]
            torch.testing.assert_close(features[b, first_row + j], want, rtol=0, atol=1e-6)
    with torch.no_grad():
        if cls is TamingTransformer:
            r = model.sample_edit(x, mask, c, return_logits=True)
            tf = teacher_forced_logits(model, r.indices, c, lambda n: None)
        else:
            r = model.sample_local(x, mask, c, return_logits=True)
            tf = teacher_forced_logits(model, r.indices, c, lambda n: la_attention_mask(r.token_mask, n, model.layout))
    generated = r.token_mask if cls is ILATTransformer else r.logits.abs().sum(-1) > 0
    assert generated.any()
    torch.testing.assert_close(r.logits[generated], tf[generated], atol=1e-4, rtol=0)
    groups = transformer_param_groups(model, 0.01)
    assert id(model.aligned_conv.weight) in {id(p) for p in groups[0]["params"]}      # decayed
    assert id(model.aligned_conv.bias) in {id(p) for p in groups[1]["params"]}


@pytest.mark.parametrize("kernel", [0, 2, -3, True, 3.0, "3"])
def test_bad_aligned_kernels_are_refused(kernel):
    with pytest.raises(ValueError, match="aligned_kernel must be an odd integer"):
        tiny_ilat(aligned_condition=True, aligned_kernel=kernel)


def test_aligned_kernel_needs_the_aligned_condition():
    with pytest.raises(ValueError, match="needs aligned_condition"):
        tiny_ilat(aligned_kernel=3)
