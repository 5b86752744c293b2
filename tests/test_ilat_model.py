"""ILATTransformer and the Taming baseline end to end on a tiny model (tests/helpers.py's
`tiny_ilat`, conftest.py's `models` and `batch`): local sampling draws from the training forward's
logits, non-greedy draws, empty masks, Eq. 4 decoding, Taming's edit and Taming*, input errors,
the training step (Eq. 6), optimiser groups and the learning-rate schedule.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ilat_ext.masks import la_attention_mask, latent_mask
from ilat_ext.models import ILATTransformer, TamingTransformer
from tests.helpers import TINY_CODES, TINY_FACTOR, TINY_IMG, dataset_batch, teacher_forced_logits, tiny_ilat

LAYOUTS = ["start", "taming"]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ilat_sample_local_logits_equal_training_forward(models, batch, backbone_name, layout, aligned):
    """ILATTransformer.sample_local draws every masked token from the logits of the teacher-forced
    LA-mask pass over its result (what training computes), and keeps the encoder's tokens elsewhere;
    with `aligned_condition` the cached decoding adds the same aligned features as training."""
    model = models(backbone=backbone_name, layout=layout, aligned_condition=aligned)
    x, c, mask = batch
    with torch.no_grad():
        r = model.sample_local(x, mask, c, return_logits=True)
        z, _ = model.encode_target(x, mask)
        tf = teacher_forced_logits(model, r.indices, c, lambda n: la_attention_mask(r.token_mask, n, layout))
    assert torch.equal(r.token_mask, latent_mask(mask, TINY_FACTOR).flatten(1))
    assert r.token_mask.sum(1).tolist() == [6, 2 + 12, 0]
    assert r.logits.shape == (3, 64, TINY_CODES) and int(r.indices.max()) < TINY_CODES
    torch.testing.assert_close(r.logits[r.token_mask], tf[r.token_mask], atol=1e-4, rtol=0)
    assert torch.equal(r.indices[~r.token_mask], z[~r.token_mask])
    assert torch.equal(r.indices[r.token_mask], r.logits[r.token_mask].argmax(-1))


def test_non_greedy_sampling(models, batch, backbone_name):
    """top_k=1 at any temperature is greedy; a seeded draw is reproducible; two seeds differ (masked
    tokens only, on a flat minGPT-initialised model with 20 masked tokens)."""
    model = models(backbone=backbone_name, head_scale=1.0)
    x, c, mask = batch
    greedy = model.sample_local(x, mask, c)
    top1 = model.sample_local(x, mask, c, greedy=False, temperature=0.7, top_k=1, seed=3)
    assert torch.equal(top1.indices, greedy.indices) and torch.equal(top1.image, greedy.image)
    a = model.sample_local(x, mask, c, greedy=False, temperature=1.0, seed=5)
    b = model.sample_local(x, mask, c, greedy=False, temperature=1.0, seed=5)
    other = model.sample_local(x, mask, c, greedy=False, temperature=1.0, seed=6)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.image, b.image)
    assert not torch.equal(a.indices, other.indices)
    keep = ~a.token_mask
    assert torch.equal(a.indices[keep], greedy.indices[keep]) and torch.equal(other.indices[keep], greedy.indices[keep])
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(model.sample_local(x, mask, c, greedy=False, generator=gen).indices, a.indices)


@pytest.mark.parametrize("cls", [ILATTransformer, TamingTransformer])
def test_empty_mask_returns_the_input_without_a_transformer_call(models, batch, monkeypatch, cls):
    """An all-zero mask gives back the input image exactly, with 0 steps and no transformer call."""
    model = models(cls=cls)
    x, c, _ = batch

    def refuse(*args, **kwargs):
        raise AssertionError("the transformer was called for an empty mask")
    monkeypatch.setattr(model.transformer, "forward", refuse)
    empty = torch.zeros(3, 1, TINY_IMG, TINY_IMG)
    edits = [model.sample_local(x, empty, c), model.sample_local(x, empty, c, use_cache=False)]
    if cls is TamingTransformer:
        edits.append(model.sample_edit(x, empty, c))
    for r in edits:
        assert torch.equal(r.image, x) and r.image is not x
        assert r.steps == 0 and not r.token_mask.any()


@pytest.mark.parametrize("cls", [ILATTransformer, TamingTransformer])
def test_an_element_with_an_empty_mask_comes_back_unchanged(models, batch, cls):
    """In a batch where only some masks are empty, those elements are the input, bit for bit (as a
    batch of empty masks is); the others are edited."""
    model = models(cls=cls)
    x, c, mask = batch
    assert not mask[2].any() and mask[0].any()
    modes = [model.sample_local] + ([model.sample_edit] if cls is TamingTransformer else [])
    for sample in modes:
        r = sample(x, mask, c)
        assert torch.equal(r.image[2], x[2])
        assert not torch.equal(r.image[0], x[0])


def test_eq4_decoding_keeps_the_unmasked_latents(models, batch):
    """The edit decodes where(M_q, codebook[indices], encode_features(x, mask)) (Eq. 4), bit for bit;
    the kept latents ignore the pixels inside the mask, so repainting them changes nothing at all."""
    model = models()
    fs = model.first_stage_model
    x, c, mask = batch
    B, h = x.shape[0], TINY_IMG // TINY_FACTOR
    with torch.no_grad():
        r = model.sample_local(x, mask, c)
        m_q = r.token_mask.view(B, 1, h, h)
        features = fs.encode_features(x, mask)                                      # (B, D, h, w)
        codes = fs.quantize.embedding.weight[r.indices].view(B, h, h, -1).permute(0, 3, 1, 2)
        edited = m_q.flatten(1).any(1)                               # element 2's mask is empty: the input
        assert torch.equal(r.image[edited], fs.decode(torch.where(m_q, codes, features))[edited])
        assert torch.equal(r.image[~edited], x[~edited])
        assert not torch.equal(r.image[edited], fs.decode(codes)[edited])   # the kept region is not quantized
        repainted = torch.where(mask.bool(), -x.flip(-1), x)
        features2 = fs.encode_features(repainted, mask)
        keep = (~m_q).expand_as(features)
        assert torch.equal(features2[keep], features[keep])
        assert not torch.equal(features2, features)                  # the repaint reached the masked cells
        r2 = model.sample_local(repainted, mask, c)
    assert torch.equal(r2.indices, r.indices) and torch.equal(r2.image, r.image)


@pytest.mark.parametrize("aligned", [False, True])
def test_taming_edit_and_taming_star(models, batch, backbone_name, aligned):
    """Taming's edit keeps the tokens before the first masked one and regenerates all the rest from
    one causal teacher-forced pass (cached == uncached); Taming* changes the masked tokens only."""
    model = models(cls=TamingTransformer, backbone=backbone_name, aligned_condition=aligned)
    x, c, mask = batch
    with torch.no_grad():
        z, _ = model.encode_target(x, mask)
        m_q = model.token_mask(x, mask)
        r = model.sample_edit(x, mask, c, return_logits=True)
        r_nc = model.sample_edit(x, mask, c, use_cache=False)
        causal = lambda n: None  # noqa: E731  (the backbone's default causal mask)
        tf = teacher_forced_logits(model, r.indices, c, causal)
        star = model.sample_local(x, mask, c)
        star_nc = model.sample_local(x, mask, c, use_cache=False)
    first = torch.tensor([int(row.nonzero()[0]) if row.any() else len(row) for row in m_q])
    regenerate = torch.arange(m_q.shape[1])[None] >= first[:, None]
    assert first.tolist() == [17, 0, 64]
    assert torch.equal(r.token_mask, regenerate)
    assert torch.equal(r.indices[~regenerate], z[~regenerate])
    assert torch.equal(r.indices, r_nc.indices) and torch.equal(r.image, r_nc.image)
    torch.testing.assert_close(r.logits[regenerate], tf[regenerate], atol=1e-4, rtol=0)
    assert torch.equal(r.indices[regenerate], tf[regenerate].argmax(-1))
    assert torch.equal(star.token_mask, m_q)
    assert torch.equal(star.indices[~m_q], z[~m_q])
    assert torch.equal(star.indices, star_nc.indices) and torch.equal(star.image, star_nc.image)
    assert not torch.equal(star.indices, r.indices)  # Taming* is not Taming's edit


# ============================================================================ errors
def test_bad_inputs_raise_naming_the_problem(models, batch):
    """Wrong mask size, too long a sequence, wrong condition, bad layout / lm_rate, wrong extra width."""
    model = models()
    x, c, mask = batch
    small_mask = mask[:, :, :16, :16]
    with pytest.raises(ValueError, match=r"does not fit image of shape \(3, 3, 32, 32\)"):
        model.sample_local(x, small_mask, c)
    with pytest.raises(ValueError, match="does not fit image"):
        model(x, c, small_mask)
    short = models(block_size=100)  # start layout: 1 + 64 + 64 = 129 positions
    with pytest.raises(ValueError, match="block_size 100"):
        short(x, c, mask)
    with pytest.raises(ValueError, match="block_size 100"):
        short.sample_local(x, mask, c)
    with pytest.raises(ValueError, match="condition has 3 channels, the condition stage expects 1"):
        model.sample_local(x, mask, c.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="condition has 3 channels"):
        model(x, c.expand(-1, 3, -1, -1), mask)
    with pytest.raises(ValueError, match=r"condition of shape \(1, 1, 32, 32\) must be .* B = 3"):
        model.sample_local(x, mask, c[:1])
    with pytest.raises(ValueError, match=r"condition of shape \(3, 32, 32\)"):
        model(x, c[:, 0], mask)
    with pytest.raises(ValueError, match="layout must be one of"):
        tiny_ilat(layout="bogus")
    for rate in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"lm_rate must be in \[0, 1\]"):
            tiny_ilat(lm_rate=rate)
    with pytest.raises(ValueError, match=r"extra condition features of shape \(3, 2, 33\) must be"):
        model.sample_local(x, mask, c, extra=torch.zeros(3, 2, 33))
    with pytest.raises(ValueError, match="extra condition features"):
        model(x, c, mask, extra=torch.zeros(3, 2, 33))
    with pytest.raises(ValueError, match="need the 'start' layout"):
        models(layout="taming").sample_local(x, mask, c, extra=torch.zeros(3, 2, 32))
    with pytest.raises(ValueError, match="takes no extra condition features"):
        models(cls=TamingTransformer).sample_local(x, mask, c, extra=torch.zeros(3, 2, 32))


# ============================================================================ training
@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_step_loss_is_the_masked_tokens_cross_entropy(batch, backbone_name, layout):
    """Eq. 6: the loss is the cross-entropy over the masked tokens only; an all-empty mask batch
    gives exactly 0 with a graph (backward works, zero gradients)."""
    model = tiny_ilat(backbone=backbone_name, layout=layout, head_scale=1.0)
    model.train()
    x, c, mask = batch
    loss = model.shared_step(dataset_batch(x, c, mask), 0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    logits, target, weight = model(x, c, mask)
    m_q = latent_mask(mask, TINY_FACTOR).flatten(1)
    assert torch.equal(weight, m_q.float())
    torch.testing.assert_close(loss, F.cross_entropy(logits[m_q], target[m_q]), atol=1e-6, rtol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in model.first_stage_model.parameters())
    model.zero_grad(set_to_none=True)

    empty = model.shared_step(dataset_batch(x, c, torch.zeros_like(mask)), 0)
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    grads = [p.grad for p in model.transformer.parameters()]
    assert all(g is not None for g in grads) and all(not g.any() for g in grads)


def test_lm_rate_one_trains_as_a_plain_causal_lm(batch):
    """lm_rate=1 in training mode: loss weight on every token and the plain causal mask."""
    model = tiny_ilat(lm_rate=1.0, head_scale=1.0).train()
    x, c, mask = batch
    logits, target, weight = model(x, c, mask)
    assert weight.eq(1).all()
    with torch.no_grad():
        causal = teacher_forced_logits(model, target, c, lambda n: None)
    torch.testing.assert_close(logits[..., :TINY_CODES].detach(), causal, atol=1e-5, rtol=0)


def test_optimizer_groups_and_warmup_decay_schedule(backbone_name):
    """AdamW groups hold every trainable parameter once, decay on Linear weights only (not cond_emb,
    z_start, pos_emb, norms, biases), no frozen stage parameter; the per-step LambdaLR factor rises
    linearly over warmup_steps then falls linearly to 0 at decay_steps."""
    model = tiny_ilat(backbone=backbone_name, warmup_steps=4, decay_steps=10, weight_decay=0.05)
    out = model.configure_optimizers()
    optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert out["lr_scheduler"]["interval"] == "step"
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)

    decay, no_decay = ([id(p) for p in group["params"]] for group in optimizer.param_groups)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]
    grouped = decay + no_decay
    assert len(grouped) == len(set(grouped))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(grouped) == trainable
    stages = (model.first_stage_model, model.cond_stage_model)
    frozen = {id(p) for stage in stages for p in stage.parameters()}
    assert frozen and not frozen & set(grouped)
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad}
    assert set(decay) == linear_weights
    named = dict(model.named_parameters())
    for name in ("cond_emb.weight", "z_start", "transformer.pos_emb", "transformer.ln_f.weight",
                 "transformer.ln_f.bias", "transformer.tok_emb.weight"):
        assert id(named[name]) in no_decay, name
    assert all(id(p) in no_decay for n, p in named.items() if n.endswith(".bias") and p.requires_grad)

    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0, 0.0]
    lrs = []
    for _ in expected:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1e-3 * f for f in expected])


def test_decay_steps_can_follow_the_trainers_max_steps():
    """decay_steps: max_steps decays to 0 at the attached trainer's max_steps (what --max_steps sets),
    the same factors as the number itself; without a usable max_steps it says what to do."""
    from types import SimpleNamespace

    def factors(model, n):
        out = model.configure_optimizers()
        optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
        lrs = []
        for _ in range(n):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return lrs

    follow = tiny_ilat(warmup_steps=2, decay_steps="max_steps")
    follow._trainer = SimpleNamespace(max_steps=8)
    assert factors(follow, 10) == pytest.approx(factors(tiny_ilat(warmup_steps=2, decay_steps=8), 10))
    assert factors(follow, 10)[-2:] == [0.0, 0.0] and factors(follow, 10)[2] == pytest.approx(1e-3)
    follow._trainer = SimpleNamespace(max_steps=2)        # no longer than the warm-up: never leaves it
    assert factors(follow, 4) == pytest.approx(factors(tiny_ilat(warmup_steps=2, decay_steps=3), 4))
    for max_steps, needle in ((-1, "max_steps is -1"), (0, "max_steps is 0"), (None, "no trainer")):
        follow._trainer = None if max_steps is None else SimpleNamespace(max_steps=max_steps)
        with pytest.raises(ValueError, match=needle):
            follow.configure_optimizers()


@pytest.mark.parametrize("warmup, decay", [(-1, None), (1.5, None), (4, 4), (4, 2), (0, "max"), (0, 2.0), (0, True)])
def test_bad_schedules_are_refused(warmup, decay):
    with pytest.raises(ValueError, match="warmup_steps|decay_steps"):
        tiny_ilat(warmup_steps=warmup, decay_steps=decay)
