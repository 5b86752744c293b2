"""Offline LPIPS and VQGAN loss: file search, weight loading, upstream state-dict and loss parity.

Runs on CPU without network and without the real weight files: fake files with the real key sets
and shapes stand in for `vgg16-397923af.pth` and `vgg.pth`. Every download entry point is patched
to raise, so an accidental download fails the test instead of hanging or succeeding silently.
"""
import os
import types

import pytest
import torch
import torch.nn as nn
import torchvision

import taming.modules.losses.lpips as up_lpips
import taming.modules.losses.vqperceptual as up_vq
from ilat_ext.modules import losses as ours_losses
from ilat_ext.modules.lpips import (LIN_FILE, LIN_MD5, LPIPS, UPSTREAM_LIN_DIR, VGG16_FILE,
                                    MissingWeightsError)
from ilat_ext.modules.losses import VQLPIPSWithDiscriminator


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    """No weight file anywhere: env dir, HOME, TORCH_HOME and cwd all point at empty tmp dirs."""
    dirs = {name: tmp_path / name for name in ("env", "home", "torch", "cwd")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("ILAT_EXT_WEIGHTS_DIR", str(dirs["env"]))
    monkeypatch.setenv("HOME", str(dirs["home"]))
    monkeypatch.setenv("TORCH_HOME", str(dirs["torch"]))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("TORCH_HUB", raising=False)
    monkeypatch.chdir(dirs["cwd"])
    return dirs


def make_lpips(**kwargs):
    # Our fake vgg.pth cannot have the real md5; the warning is expected (and tested below).
    with pytest.warns(UserWarning, match="md5"):
        return LPIPS(**kwargs)


@pytest.fixture
def upstream_lpips_offline(monkeypatch):
    """Upstream's LPIPS class with its two downloads replaced by nothing (structure only)."""
    def vgg16_meta(pretrained=True, **kwargs):
        with torch.device("meta"):
            return torchvision.models.vgg16(weights=None)

    monkeypatch.setattr(up_lpips, "models", types.SimpleNamespace(vgg16=vgg16_meta))
    monkeypatch.setattr(up_lpips.LPIPS, "load_from_pretrained", lambda self, name="vgg_lpips": None)
    return up_lpips.LPIPS


def assert_lpips_matches_files(model, fake):
    sd = model.state_dict()
    for key, value in fake.lin.items():
        assert torch.equal(sd[key], value), key
    n_vgg = 0
    for key, value in sd.items():
        if key.startswith("net."):
            idx_and_name = key.split(".", 2)[2]  # net.slice3.10.weight -> 10.weight
            assert torch.equal(value, fake.vgg[f"features.{idx_and_name}"]), key
            n_vgg += 1
    assert n_vgg == 26  # 13 convs x (weight, bias)


# ----------------------------------------------------------------------------- LPIPS

def test_lpips_missing_files_lists_everything(empty_env):
    with pytest.raises(MissingWeightsError) as info:
        LPIPS()
    err = info.value
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    assert VGG16_FILE in msg and LIN_FILE in msg
    assert LIN_MD5 in msg
    assert "perceptual_weight: 0.0" in msg
    expected_searched = [
        empty_env["env"] / VGG16_FILE,
        empty_env["home"] / ".cache" / "ilat_ext" / VGG16_FILE,
        empty_env["torch"] / "hub" / "checkpoints" / VGG16_FILE,
        empty_env["env"] / LIN_FILE,
        empty_env["home"] / ".cache" / "ilat_ext" / LIN_FILE,
        empty_env["cwd"] / UPSTREAM_LIN_DIR / LIN_FILE,
    ]
    for path in expected_searched:
        assert str(path) in msg, path
    assert set(err.missing) == {VGG16_FILE, LIN_FILE}


def test_lpips_missing_one_file_names_only_that_one(empty_env, fake_weights):
    with pytest.raises(MissingWeightsError) as info:
        LPIPS(vgg_path=fake_weights.dir / VGG16_FILE)
    assert set(info.value.missing) == {LIN_FILE}
    assert str(empty_env["env"] / LIN_FILE) in str(info.value)


def test_lpips_explicit_path_does_not_fall_back(empty_env, fake_weights, monkeypatch):
    monkeypatch.setenv("ILAT_EXT_WEIGHTS_DIR", str(fake_weights.dir))
    wrong = empty_env["cwd"] / "nope.pth"
    with pytest.raises(MissingWeightsError) as info:
        LPIPS(lin_path=wrong)
    assert info.value.missing == {LIN_FILE: [str(wrong)]}


def test_lpips_loads_from_weights_dir(empty_env, fake_weights):
    model = make_lpips(weights_dir=fake_weights.dir)
    assert_lpips_matches_files(model, fake_weights)
    assert model.load_report[VGG16_FILE]["path"] == str(fake_weights.dir / VGG16_FILE)
    assert model.load_report[VGG16_FILE]["unexpected"] == []
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_lpips_loads_from_env_var(empty_env, fake_weights, monkeypatch):
    monkeypatch.setenv("ILAT_EXT_WEIGHTS_DIR", str(fake_weights.dir))
    model = make_lpips()
    assert_lpips_matches_files(model, fake_weights)


def test_lpips_fallback_locations(empty_env, fake_weights):
    """VGG16 from torch hub's cache, vgg.pth from upstream's cwd-relative folder."""
    hub = empty_env["torch"] / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    os.symlink(fake_weights.dir / VGG16_FILE, hub / VGG16_FILE)
    rel = empty_env["cwd"] / UPSTREAM_LIN_DIR
    rel.mkdir(parents=True)
    os.symlink(fake_weights.dir / LIN_FILE, rel / LIN_FILE)
    model = make_lpips()
    assert model.load_report[VGG16_FILE]["path"] == str(hub / VGG16_FILE)
    assert model.load_report[LIN_FILE]["path"] == str(rel / LIN_FILE)
    assert_lpips_matches_files(model, fake_weights)


def test_lpips_weights_dir_beats_env_and_cache(empty_env, fake_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("ILAT_EXT_WEIGHTS_DIR", str(fake_weights.dir))
    first = tmp_path / "first"
    first.mkdir()
    other_lin = {k: v + 1 for k, v in fake_weights.lin.items()}
    torch.save(other_lin, first / LIN_FILE)
    model = make_lpips(weights_dir=first)
    assert model.load_report[LIN_FILE]["path"] == str(first / LIN_FILE)
    assert model.load_report[VGG16_FILE]["path"] == str(fake_weights.dir / VGG16_FILE)
    assert torch.equal(model.lin2.model[1].weight, other_lin["lin2.model.1.weight"])


def test_lpips_rejects_incomplete_lin_file(empty_env, fake_weights, tmp_path):
    bad = dict(fake_weights.lin)
    del bad["lin4.model.1.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="lin4.model.1.weight"):
        make_lpips(weights_dir=fake_weights.dir, lin_path=tmp_path / "bad.pth")


def test_lpips_distance(empty_env, fake_weights):
    model = make_lpips(weights_dir=fake_weights.dir)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert model(x, x).shape == (2, 1, 1, 1)
    assert torch.all(model(x, x) == 0)
    y.requires_grad_(True)
    d = model(x, y)
    assert torch.all(d > 0)
    d.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_lpips_dropout_never_applied(empty_env, fake_weights):
    model = make_lpips(weights_dir=fake_weights.dir)
    x, y = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    ref = model(x, y)
    model.train()  # what Lightning's model.train() does to the loss's submodules
    assert torch.equal(model(x, y), ref)


def test_lpips_state_dict_matches_upstream(empty_env, fake_weights, upstream_lpips_offline):
    ours = make_lpips(weights_dir=fake_weights.dir)
    upstream = upstream_lpips_offline()
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    up_shapes = {k: tuple(v.shape) for k, v in upstream.state_dict().items()}
    assert ours_shapes == up_shapes

    # Same weights -> same distance as upstream's forward.
    upstream.to_empty(device="cpu")
    upstream.load_state_dict(ours.state_dict(), strict=True)
    upstream.eval()
    x, y = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(ours(x, y), upstream(x, y), rtol=1e-6, atol=0)


def test_loss_state_dict_matches_upstream(empty_env, fake_weights, upstream_lpips_offline):
    """A VQGAN checkpoint's `loss.*` keys (discriminator + perceptual_loss) load unchanged."""
    with pytest.warns(UserWarning, match="md5"):
        ours = VQLPIPSWithDiscriminator(disc_start=0, lpips_weights_dir=fake_weights.dir)
    upstream = up_vq.VQLPIPSWithDiscriminator(disc_start=0)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    up_shapes = {k: tuple(v.shape) for k, v in upstream.state_dict().items()}
    assert ours_shapes == up_shapes
    assert any(k.startswith("perceptual_loss.net.slice5.") for k in ours_shapes)


# ----------------------------------------------------------------------------- VQ loss

def tiny_batch(seed=0, batch=2, size=32):
    """Images in [-1, 1], a one-conv "decoder" whose weight is the last layer, a codebook loss."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    z = torch.randn(batch, 4, size, size, generator=g, requires_grad=True)
    decoder = nn.Conv2d(4, 3, 3, padding=1)
    xrec = torch.tanh(decoder(z))
    codebook_loss = 0.25 * (z ** 2).mean()
    return types.SimpleNamespace(x=x, xrec=xrec, last_layer=decoder.weight, decoder=decoder,
                                 codebook=codebook_loss)


class _NoLPIPS(nn.Module):
    """Stand-in for upstream's LPIPS so upstream's loss can be built offline."""


@pytest.fixture
def upstream_loss(monkeypatch):
    monkeypatch.setattr(up_vq, "LPIPS", _NoLPIPS)

    def build(ours, **kwargs):
        up = up_vq.VQLPIPSWithDiscriminator(perceptual_weight=0.0, **kwargs)
        up.discriminator.load_state_dict(ours.discriminator.state_dict())
        return up
    return build


def test_loss_without_perceptual_builds_offline(empty_env, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("LPIPS must not be built when perceptual_weight == 0")
    monkeypatch.setattr(ours_losses, "LPIPS", forbidden)
    loss = VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0)
    assert not hasattr(loss, "perceptual_loss")
    assert not any(k.startswith("perceptual_loss") for k in loss.state_dict())


def test_loss_with_perceptual_and_no_files_explains(empty_env):
    with pytest.raises(MissingWeightsError, match="perceptual_weight: 0.0"):
        VQLPIPSWithDiscriminator(disc_start=0)


@pytest.mark.parametrize("kwargs, bad", [({"disc_loss": "wgan"}, "wgan"), ({"pixel_loss": "l3"}, "l3")])
def test_loss_rejects_unknown_choices(kwargs, bad):
    with pytest.raises(ValueError) as info:
        VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0, **kwargs)
    msg = str(info.value)
    assert repr(bad) in msg
    assert ("hinge" in msg and "vanilla" in msg) if "disc_loss" in kwargs else ("l1" in msg and "l2" in msg)


def test_generator_and_discriminator_steps_train():
    torch.manual_seed(0)
    loss_fn = VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0)
    b = tiny_batch()
    loss, log = loss_fn(b.codebook, b.x, b.xrec, 0, global_step=1, last_layer=b.last_layer)
    assert set(log) == {f"train/{k}" for k in ("total_loss", "quant_loss", "nll_loss", "rec_loss",
                                                 "p_loss", "d_weight", "disc_factor", "g_loss")}
    assert torch.isfinite(loss) and log["train/d_weight"] > 0
    loss.backward()
    assert torch.isfinite(b.decoder.weight.grad).all() and b.decoder.weight.grad.abs().sum() > 0

    loss_fn.zero_grad()
    d_loss, log = loss_fn(b.codebook, b.x, b.xrec, 1, global_step=1, split="val")
    assert set(log) == {"val/disc_loss", "val/logits_real", "val/logits_fake"}
    assert torch.isfinite(d_loss) and d_loss > 0
    d_loss.backward()
    grads = [p.grad for p in loss_fn.discriminator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_disc_start_gates_gan_terms():
    loss_fn = VQLPIPSWithDiscriminator(disc_start=100, perceptual_weight=0.0)
    b = tiny_batch()
    for step, factor in ((99, 0.0), (100, 1.0)):
        loss, log = loss_fn(b.codebook, b.x, b.xrec, 0, global_step=step, last_layer=b.last_layer)
        assert log["train/disc_factor"].item() == factor
        expected = log["train/nll_loss"] + factor * log["train/d_weight"] * log["train/g_loss"] \
            + log["train/quant_loss"]
        torch.testing.assert_close(loss.detach(), expected)
        d_loss, _ = loss_fn(b.codebook, b.x, b.xrec, 1, global_step=step)
        assert (d_loss.item() == 0.0) == (factor == 0.0)


def test_fixed_vs_adaptive_disc_weight():
    torch.manual_seed(0)
    adaptive = VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0, disc_weight=0.1)
    fixed = VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0, disc_weight=0.1,
                                     adaptive_disc_weight=False)
    fixed.discriminator.load_state_dict(adaptive.discriminator.state_dict())
    b = tiny_batch()
    loss_a, log_a = adaptive(b.codebook, b.x, b.xrec, 0, global_step=0, last_layer=b.last_layer)
    # last_layer is not needed for a fixed weight.
    loss_f, log_f = fixed(b.codebook, b.x, b.xrec, 0, global_step=0)
    assert log_f["train/d_weight"] == torch.tensor(0.1)
    assert log_f["train/d_weight"].item() == torch.tensor(0.1).item()
    assert log_a["train/d_weight"] != log_f["train/d_weight"]
    g_loss = -fixed.discriminator(b.xrec).mean()
    assert torch.equal(loss_f, log_f["train/nll_loss"] + 0.1 * 1.0 * g_loss + b.codebook)
    assert loss_f.dtype == torch.float32

    # Fixed weight stays in validation; adaptive weight is 0 there, like upstream.
    for m in (adaptive, fixed):
        m.eval()
    with torch.no_grad():
        _, log_a = adaptive(b.codebook, b.x, b.xrec, 0, global_step=0, split="val")
        _, log_f = fixed(b.codebook, b.x, b.xrec, 0, global_step=0, split="val")
    assert log_a["val/d_weight"] == 0 and log_f["val/d_weight"] == torch.tensor(0.1)


def test_adaptive_weight_needs_last_layer_in_training():
    loss_fn = VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0)
    b = tiny_batch()
    with pytest.raises(ValueError, match="last_layer"):
        loss_fn(b.codebook, b.x, b.xrec, 0, global_step=0)


@pytest.mark.parametrize("train_mode", [True, False])
def test_loss_under_no_grad(train_mode):
    loss_fn = VQLPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0).train(train_mode)
    b = tiny_batch()
    with torch.no_grad():
        xrec = b.decoder(torch.randn(2, 4, 32, 32))
        loss, log = loss_fn(b.codebook.detach(), b.x, xrec, 0, global_step=5,
                            last_layer=b.last_layer, split="val")
        d_loss, _ = loss_fn(b.codebook.detach(), b.x, xrec, 1, global_step=5, split="val")
    assert torch.isfinite(loss) and torch.isfinite(d_loss)
    assert log["val/d_weight"] == 0


@pytest.mark.parametrize("disc_loss", ["hinge", "vanilla"])
@pytest.mark.parametrize("global_step", [3, 10])
@pytest.mark.parametrize("disc_weight", [1.0, 0.3])
def test_loss_equals_upstream(upstream_loss, disc_loss, global_step, disc_weight):
    torch.manual_seed(0)
    cfg = dict(disc_start=5, disc_loss=disc_loss, disc_weight=disc_weight, codebook_weight=0.7,
               disc_num_layers=2)
    ours = VQLPIPSWithDiscriminator(perceptual_weight=0.0, **cfg)
    upstream = upstream_loss(ours, **cfg)
    b = tiny_batch()
    for idx in (0, 1):
        loss_o, log_o = ours(b.codebook, b.x, b.xrec, idx, global_step, last_layer=b.last_layer)
        loss_u, log_u = upstream(b.codebook, b.x, b.xrec, idx, global_step, last_layer=b.last_layer)
        assert torch.equal(loss_o, loss_u), idx
        assert set(log_o) == set(log_u)
        for key in log_o:
            assert log_o[key].item() == log_u[key].item(), key


def test_conditional_discriminator_equals_upstream(upstream_loss):
    torch.manual_seed(0)
    cfg = dict(disc_start=0, disc_in_channels=4, disc_conditional=True)
    ours = VQLPIPSWithDiscriminator(perceptual_weight=0.0, **cfg)
    upstream = upstream_loss(ours, **cfg)
    b = tiny_batch()
    cond = torch.rand(2, 1, 32, 32)
    for idx in (0, 1):
        loss_o, _ = ours(b.codebook, b.x, b.xrec, idx, 0, last_layer=b.last_layer, cond=cond)
        loss_u, _ = upstream(b.codebook, b.x, b.xrec, idx, 0, last_layer=b.last_layer, cond=cond)
        assert torch.equal(loss_o, loss_u), idx
    with pytest.raises(ValueError, match="cond"):
        ours(b.codebook, b.x, b.xrec, 1, 0)


def test_pixel_weights_map():
    loss_fn = VQLPIPSWithDiscriminator(disc_start=10, perceptual_weight=0.0, codebook_weight=0.0)
    b = tiny_batch()
    call = lambda **kw: loss_fn(b.codebook, b.x, b.xrec, 0, 0, last_layer=b.last_layer, **kw)
    loss_none, _ = call()
    loss_ones, _ = call(weights=torch.ones(2, 1, 32, 32))
    assert torch.equal(loss_none, loss_ones)

    # Only the weighted pixels count (disc_factor is 0 before disc_start, codebook weight 0).
    w = torch.zeros(2, 1, 32, 32)
    w[:, :, :8] = 1.0
    loss_w, _ = call(weights=w)
    expected = ((b.x - b.xrec).abs() * w).mean()
    torch.testing.assert_close(loss_w, expected)

    with pytest.raises(ValueError, match="weights must have shape"):
        call(weights=torch.ones(2, 3, 32, 32))


def test_l2_pixel_loss_and_pixel_weight():
    loss_fn = VQLPIPSWithDiscriminator(disc_start=10, perceptual_weight=0.0, codebook_weight=0.0,
                                       pixel_loss="l2", pixelloss_weight=2.0)
    b = tiny_batch()
    loss, log = loss_fn(b.codebook, b.x, b.xrec, 0, 0, last_layer=b.last_layer)
    torch.testing.assert_close(loss, 2.0 * ((b.x - b.xrec) ** 2).mean())


def test_perceptual_term(empty_env, fake_weights):
    with pytest.warns(UserWarning, match="md5"):
        loss_fn = VQLPIPSWithDiscriminator(disc_start=10, perceptual_weight=0.5, codebook_weight=0.0,
                                           lpips_weights_dir=fake_weights.dir)
    b = tiny_batch()
    loss, log = loss_fn(b.codebook, b.x, b.xrec, 0, 0, last_layer=b.last_layer)
    p = loss_fn.perceptual_loss(b.x, b.xrec)  # (B, 1, 1, 1)
    assert log["train/p_loss"] > 0
    torch.testing.assert_close(log["train/p_loss"], p.mean().detach())
    torch.testing.assert_close(loss, ((b.x - b.xrec).abs() + 0.5 * p).mean())
    loss.backward()
    assert torch.isfinite(b.decoder.weight.grad).all()
