"""The transformer backbones under the LA mask: no leak at any depth, the sampler's first pass and
decoding steps equal the full forward, every sampled token comes from one teacher-forced pass; and
our GPT loads upstream minGPT (Taming) checkpoints with identical logits.

Every backbone-level test runs on both backbones (`GPT` and `XTransformer`, the `backbone_name`
fixture of conftest.py) and both sequence layouts ("start" and "taming").
"""
import pytest
import torch
from torch import nn

import ilat_ext  # noqa: F401  (makes upstream taming.* importable before anything below)
from ilat_ext import instantiate_from_config, load_state_dict_report
from ilat_ext.masks import la_attention_mask, la_causal_positions
from ilat_ext.modules.gpt import GPT
from ilat_ext.modules.sampling import sample_tokens
from ilat_ext.modules.xtransformer import XTransformer

LAYOUTS = ["start", "taming"]
BACKBONES = {"gpt": GPT, "xtransformer": XTransformer}


# A 4 x 5 grid (L = 20 tokens), N_COND condition positions. Sequence position n_pre + i holds grid
# token i and position n_pre - 1 + i predicts it ("start": n_pre = N_COND + 1, the start token z_s
# is the last embedding; "taming": n_pre = N_COND, condition tokens as a prefix).
GRID_H, GRID_W, N_COND, VOCAB, EMBD = 4, 5, 3, 13, 16
L = GRID_H * GRID_W


def _backbone(name: str, dtype: torch.dtype, n_layer: int = 3, seed: int = 0) -> nn.Module:
    """A random backbone with peaked logits (weights ~ N(0, 0.25^2), so argmax has no near-ties)."""
    torch.manual_seed(seed)
    model = BACKBONES[name](VOCAB, 32, n_layer, 2, EMBD)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(0.25 * torch.randn(p.shape, generator=g))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.to(dtype).eval()


def _layout_inputs(layout: str, batch: int, dtype: torch.dtype, seed: int = 7):
    """-> (embeddings or None, prefix or None, n_pre) of the part of the sequence before grid token 0."""
    g = torch.Generator().manual_seed(seed)
    if layout == "start":  # [condition features, z_s] as embeddings
        return torch.randn(batch, N_COND + 1, EMBD, generator=g).to(dtype), None, N_COND + 1
    return None, torch.randint(VOCAB, (batch, N_COND), generator=g), N_COND


def _teacher_forced(backbone, z, embeddings, prefix, attn_mask):
    """One forward pass over [embeddings, prefix, z_0 .. z_{L-2}] -> logits (B, S, V)."""
    idx = z[:, :-1] if prefix is None else torch.cat([prefix, z[:, :-1]], dim=1)
    return backbone(idx, embeddings, attn_mask=attn_mask)[0]


def _token_masks():
    """(name, (L,) bool): several runs, grid token 0 masked, a 2-D block, random ones, a lone token."""
    def from_list(idx):
        m = torch.zeros(L, dtype=torch.bool)
        m[idx] = True
        return m
    block = torch.zeros(GRID_H, GRID_W, dtype=torch.bool)
    block[1:3, 1:4] = True
    g = torch.Generator().manual_seed(3)
    return [("runs_with_token_0", from_list([0, 1, 2, 7, 8, 13, 17, 18])),
            ("block", block.flatten()),
            ("random_40", torch.rand(L, generator=g) < 0.4),
            ("random_25", torch.rand(L, generator=g) < 0.25),
            ("lone_and_last", from_list([10, 19]))]


def test_token_masks_cover_the_cases_the_leak_test_claims():
    """The masks of the leak test include multiple runs per mask and one covering grid token 0."""
    masks = dict(_token_masks())
    runs = {k: int((m[1:] & ~m[:-1]).sum() + m[0]) for k, m in masks.items()}
    assert all(n >= 2 for n in runs.values()), runs
    assert masks["runs_with_token_0"][0]
    assert all(m.any() and not m.all() for m in masks.values())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_la_mask_does_not_leak_at_any_depth(backbone_name, layout):
    """Changing a masked grid token t_j (3 layers, float64) leaves bit-identical every row that
    predicts a masked t_i with i <= j, every condition row and every global row; some row that
    predicts a later masked token does change. A plain full attention mask fails the same check."""
    backbone = _backbone(backbone_name, torch.float64)
    g = torch.Generator().manual_seed(11)
    checked = 0
    for name, token_mask in _token_masks():
        masked = token_mask.nonzero().flatten().tolist()
        emb, prefix, n_pre = _layout_inputs(layout, 1, torch.float64)
        la = la_attention_mask(token_mask[None], N_COND, layout)                         # (1, S, S)
        causal = la_causal_positions(token_mask[None], N_COND, layout)[0]                 # (S,)
        S = causal.shape[0]
        full = torch.ones_like(la)
        z = torch.randint(VOCAB, (1, L), generator=g)
        base, base_full = (_teacher_forced(backbone, z, emb, prefix, a)[0] for a in (la, full))
        for j in (j for j in masked if j < L - 1):  # the last grid token is never an input
            other = z.clone()
            other[0, j] = (other[0, j] + 1) % VOCAB
            changed = (_teacher_forced(backbone, other, emb, prefix, la)[0] != base).any(-1)       # (S,)
            protected = ~causal                                 # condition rows and global rows
            protected[[n_pre - 1 + i for i in masked if i <= j]] = True
            assert not changed[protected].any(), (name, j, protected.logical_and(changed).nonzero().flatten())
            assert changed[n_pre + j], (name, j)                # the position holding t_j sees it
            later = [n_pre - 1 + i for i in masked if i > j]
            if later:
                assert changed[later].any(), (name, j)          # not vacuous: later masked tokens see t_j
            leaky = (_teacher_forced(backbone, other, emb, prefix, full)[0] != base_full).any(-1)
            assert leaky[protected].any(), (name, j)            # the check catches a leaky mask
            checked += 1
        assert S == n_pre + L - 1
    assert checked >= 20


def test_out_rows_and_decode_equal_the_full_forward(backbone_name):
    """`out_rows` (the sampler's first pass) gives exactly the full pass's logits at those rows and
    fills the same cache; GPT's functional `decode` step equals a cached forward call."""
    backbone = _backbone(backbone_name, torch.float64)
    z, gen_mask = _sampling_batch()
    emb, prefix, n_pre = _layout_inputs("start", 3, torch.float64)
    allowed = la_attention_mask(gen_mask, N_COND, "start")
    idx = z[:, :-1]
    rows = torch.tensor([[0, 5, 9], [3, 3, 20], [n_pre + L - 2, 1, 2]])
    with torch.no_grad():
        full_cache, rows_cache = backbone.new_cache(), backbone.new_cache()
        full = backbone(idx, emb, attn_mask=allowed, cache=full_cache)[0]
        part = backbone(idx, emb, attn_mask=allowed, cache=rows_cache, out_rows=rows)[0]
        torch.testing.assert_close(part, full.gather(1, rows[:, :, None].expand(-1, -1, full.shape[-1])),
                                   atol=1e-12, rtol=0)
        for k_full, k_rows in zip(full_cache.keys + full_cache.values, rows_cache.keys + rows_cache.values):
            torch.testing.assert_close(k_full, k_rows, atol=1e-12, rtol=0)
        S = allowed.shape[1]
        token = torch.randint(VOCAB, (3, 2), generator=torch.Generator().manual_seed(1))
        positions = torch.tensor([[S - 2, S - 1]] * 3)
        mask = torch.rand(3, 2, S + 2, generator=torch.Generator().manual_seed(2)) < 0.7
        mask[:, :, 0] = True
        a, b = backbone.new_cache(), backbone.new_cache()
        backbone(idx, emb, attn_mask=allowed, cache=a)
        backbone(idx, emb, attn_mask=allowed, cache=b)
        ref = backbone(token, None, attn_mask=mask, positions=positions, cache=a)[0]
        if hasattr(backbone, "decode"):
            torch.testing.assert_close(backbone.decode(token, positions, mask, b), ref, atol=1e-12, rtol=0)
            assert b.length == a.length
    with pytest.raises(ValueError, match="out_rows"):
        backbone(idx, emb, attn_mask=allowed, out_rows=torch.tensor([[S]] * 3))


def _sampling_batch():
    """3 grid masks of different sizes (two runs incl. token 0, a 2-D block, empty) and tokens."""
    gen_mask = torch.zeros(3, L, dtype=torch.bool)
    gen_mask[0] = dict(_token_masks())["runs_with_token_0"]
    gen_mask[1] = dict(_token_masks())["block"]
    z = torch.randint(VOCAB, (3, L), generator=torch.Generator().manual_seed(5))
    return z, gen_mask


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sampler_logits_equal_one_teacher_forced_pass(backbone_name, layout, dtype, atol):
    """Every generated token is drawn from exactly the logits of ONE teacher-forced LA-mask pass over
    the final tokens (cached and uncached); both give the same tokens; known tokens are kept; the
    cached sampler runs one full pass and then one or two positions per call, no more calls than the
    uncached one and far fewer positions in all."""
    backbone = _backbone(backbone_name, dtype)
    z, gen_mask = _sampling_batch()
    emb, prefix, n_pre = _layout_inputs(layout, 3, dtype)
    allowed = la_attention_mask(gen_mask, N_COND, layout)
    sequential = la_causal_positions(gen_mask, N_COND, layout)
    S = allowed.shape[1]
    queries = []  # input positions of every transformer call (forward, or a backbone's decode step)
    hook = backbone.register_forward_hook(
        lambda mod, args, out: queries.append(sum(a.shape[1] for a in args[:2] if a is not None)))
    if hasattr(backbone, "decode"):
        decode = backbone.decode
        backbone.decode = lambda idx, *a: (queries.append(idx.shape[1]), decode(idx, *a))[1]
    results, calls = {}, {}
    try:
        for use_cache in (True, False):
            queries.clear()
            r = sample_tokens(backbone, z, gen_mask, allowed, sequential, emb, prefix, use_cache=use_cache,
                              record_logits=True)
            calls[use_cache] = list(queries)
            results[use_cache] = r
            assert r.steps == len(queries)
            assert torch.equal(r.indices[~gen_mask], z[~gen_mask])
            assert torch.isnan(r.logits[~gen_mask]).all() and torch.isfinite(r.logits[gen_mask]).all()
            with torch.no_grad():
                tf = _teacher_forced(backbone, r.indices, emb, prefix, allowed)[:, n_pre - 1:]   # (B, L, V)
            assert r.logits.dtype == dtype
            torch.testing.assert_close(r.logits[gen_mask], tf[gen_mask], atol=atol, rtol=0)
            assert torch.equal(r.indices[gen_mask], tf[gen_mask].argmax(-1))                   # greedy
    finally:
        hook.remove()
    assert torch.equal(results[True].indices, results[False].indices)
    assert results[False].steps == int(gen_mask.sum(1).max())
    assert calls[False] == [S] * results[False].steps           # uncached: a full pass per token
    # cached: one full pass, then at most one call per generated token, each of one position or
    # two (the last holder of a run of masked tokens + the first predictor of the next run)
    assert calls[True][0] == S and set(calls[True][1:]) <= {1, 2}
    assert results[True].steps <= int(gen_mask.sum(1).max())
    assert sum(calls[True]) < sum(calls[False]) / 2


# ============================================================================ Taming parity
def _upstream_gpt(n_unmasked=0, seed=0):
    from taming.modules.transformer.mingpt import GPT as UpstreamGPT
    torch.manual_seed(seed)
    upstream = UpstreamGPT(VOCAB, 24, n_layer=2, n_head=2, n_embd=EMBD, n_unmasked=n_unmasked)
    with torch.no_grad():
        upstream.pos_emb.normal_(std=0.5)  # zeros at init: make positions matter
    return upstream.eval()


def _net2net_checkpoint(upstream):
    """A Net2Net-layout checkpoint: transformer.* (with minGPT's mask buffers) plus another stage."""
    state = {f"transformer.{k}": v.clone() for k, v in upstream.state_dict().items()}
    state["first_stage_model.quantize.embedding.weight"] = torch.zeros(4, 2)
    return {"state_dict": state}


def _transformer_part(checkpoint):
    return {k[len("transformer."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("transformer.")}


@pytest.mark.parametrize("n_unmasked", [0, 3])
def test_public_taming_transformer_checkpoint_loads_with_identical_logits(n_unmasked):
    """A Taming (minGPT) transformer state_dict loads strictly (mask buffers consumed) and our GPT
    reproduces upstream's logits under the default causal mask, also with embeddings prepended."""
    upstream = _upstream_gpt(n_unmasked)
    state = _transformer_part(_net2net_checkpoint(upstream))
    assert sum(k.endswith("attn.mask") for k in state) == 2
    ours = GPT(VOCAB, 24, n_layer=2, n_head=2, n_embd=EMBD).eval()
    report = load_state_dict_report(ours, state, strict=True)
    assert report.missing == [] and report.unexpected == []
    assert sum(k.endswith("attn.mask") for k in state) == 2        # the caller's dict is not mutated
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(VOCAB, (2, 11), generator=g)
    emb = torch.randn(2, 4, EMBD, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], upstream(idx)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(idx, emb)[0], upstream(idx, embeddings=emb)[0], atol=1e-5, rtol=0)
        if n_unmasked:  # the prefix size came from the checkpoint's mask buffers, and it matters
            assert all(block.attn.n_unmasked == n_unmasked for block in ours.blocks)
            for block in ours.blocks:
                block.attn.n_unmasked = 0
            assert not torch.allclose(ours(idx)[0], upstream(idx)[0], atol=1e-3)


def test_mingpt_checkpoint_with_a_non_causal_mask_is_refused():
    """A minGPT mask buffer that is not the causal pattern raises a ValueError naming the key."""
    state = _transformer_part(_net2net_checkpoint(_upstream_gpt()))
    bad = state["blocks.1.attn.mask"].clone()
    bad[..., 5, 9] = 1  # row 5 sees the later column 9 (all ones would be minGPT's n_unmasked = block_size)
    state["blocks.1.attn.mask"] = bad
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.mask"):
        load_state_dict_report(GPT(VOCAB, 24, n_layer=2, n_head=2, n_embd=EMBD), state, strict=True)


def test_upstream_gpt_target_builds_our_gpt():
    """`target: taming.modules.transformer.mingpt.GPT` in an upstream config instantiates our GPT."""
    model = instantiate_from_config({"target": "taming.modules.transformer.mingpt.GPT",
                                     "params": dict(vocab_size=VOCAB, block_size=24, n_layer=2, n_head=2, n_embd=EMBD)})
    assert type(model) is GPT and (model.vocab_size, model.block_size, model.n_layer) == (VOCAB, 24, 2)
    load_state_dict_report(model, _transformer_part(_net2net_checkpoint(_upstream_gpt())), strict=True)
