"""TSVQModel: Eq. 4, leakage at the model level, upstream compatibility, masked training, presets."""
import glob
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ilat_ext import main as cli
from ilat_ext.masks import latent_mask
from ilat_ext.models import TSVQModel, VQModel
from ilat_ext.util import instantiate_from_config
from tests.helpers import IMAGENET_F16, REPO, public_imagenet_checkpoint, tiny_ddconfig, tiny_vq_lossconfig

GROUP_ATTN = tiny_ddconfig(ch_mult=(1, 2, 2), attn=(8,))
INSTANCE_NO_ATTN = dict(tiny_ddconfig(ch_mult=(1, 2, 2), attn=()), norm_type="instance", mid_attn=False)


def _model(ddconfig, seed=0, **kw):
    torch.manual_seed(seed)
    return TSVQModel(ddconfig, tiny_vq_lossconfig(), n_embed=32, embed_dim=8, learning_rate=1e-3, **kw)


def _masks(batch, h, w, seed=0):
    """Per-sample masks of different shapes: a blob, a thin stroke touching the border, a pixel."""
    m = torch.zeros(batch, 1, h, w, dtype=torch.float64)
    m[0, :, h // 4: h // 2, w // 3: w // 2 + 3] = 1
    if batch > 1:
        m[1, :, :, 0] = 1  # one-pixel-wide stroke along the left border
    if batch > 2:
        m[2, :, h - 1, w // 2] = 1  # a single pixel at the bottom border
    return m


@pytest.mark.parametrize("ddconfig", [GROUP_ATTN, INSTANCE_NO_ATTN], ids=["group+attn", "instance"])
def test_eq4_codes_inside_features_outside_and_no_leak(ddconfig):
    model = _model(ddconfig).double().eval()
    x = torch.rand(3, 3, 32, 48, dtype=torch.float64) * 2 - 1  # non-square
    mask = _masks(3, 32, 48)
    m_q = latent_mask(mask, model.downsample_factor)[:, None]  # (B, 1, 8, 12)
    with torch.no_grad():
        z = model.encode_features(x, mask)
        quant, _, (_, _, idx) = model.encode(x, mask)
        codes = model.quantize.embedding.weight[idx.view(-1)].view(3, 8, 12, 8).permute(0, 3, 1, 2)
        assert torch.equal(torch.where(m_q, z, quant), z)  # outside: the continuous features (Eq. 4)
        torch.testing.assert_close(torch.where(m_q, quant, codes), codes, rtol=0, atol=1e-12)  # inside: codes

        d = torch.randn_like(x) * mask * 5.0  # changes only masked pixels
        z2 = model.encode_features(x + d, mask)
        quant2, _, (_, _, idx2) = model.encode(x + d, mask)
    keep = ~m_q.expand_as(z)
    assert torch.equal(z[keep], z2[keep]) and torch.equal(quant[keep], quant2[keep])
    keep_idx = ~m_q.reshape(-1)
    assert torch.equal(idx.view(-1)[keep_idx], idx2.view(-1)[keep_idx])
    assert not torch.equal(z, z2)  # the edit did reach the masked cells


def test_upstream_vqmodel_leaks_where_ours_does_not():
    ours = _model(GROUP_ATTN).double().eval()
    torch.manual_seed(0)
    upstream = VQModel(GROUP_ATTN, tiny_vq_lossconfig(), n_embed=32, embed_dim=8).double().eval()
    upstream.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    mask = _masks(2, 32, 32)
    d = torch.randn_like(x) * mask
    keep = ~latent_mask(mask, 4)[:, None].expand(2, 8, 8, 8)
    with torch.no_grad():
        leak = (upstream.quant_conv(upstream.encoder(x + d)) - upstream.quant_conv(upstream.encoder(x)))[keep]
    assert leak.abs().max() > 1e-6


def test_without_mask_equals_upstream_vqmodel():
    ours = _model(GROUP_ATTN).eval()
    torch.manual_seed(1)
    upstream = VQModel(GROUP_ATTN, tiny_vq_lossconfig(), n_embed=32, embed_dim=8).eval()
    upstream.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    empty = torch.zeros(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], upstream(x)[0], rtol=0, atol=1e-5)
        z_ours = ours.encode_features(x, empty)
        z_up = upstream.quant_conv(upstream.encoder(x))
    torch.testing.assert_close(z_ours, z_up, rtol=0, atol=1e-5)


def test_public_imagenet_checkpoint_loads_into_tsvqmodel(tmp_path, fake_weights):
    """The public ImageNet f16-1024 layout loads with no missing key, and on its weights an all-zero
    mask gives upstream's numbers (float64): every position quantised to upstream's codes and
    indices, Eq. 4 with nothing masked (upstream's continuous features everywhere), the decoder."""
    path = tmp_path / "last.ckpt"
    upstream = public_imagenet_checkpoint(path, fake_weights)
    model = TSVQModel(IMAGENET_F16, {"target": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
                                     "params": {"disc_start": 0, "disc_num_layers": 2, "perceptual_weight": 0.0}},
                      n_embed=1024, embed_dim=256, ckpt_path=str(path))
    report = model.ckpt_load_report
    assert report.missing == []
    assert all(k.startswith("loss.perceptual_loss.") for k in report.unexpected)  # perceptual term off here
    assert not [k for k in report.unexpected if k.split(".")[0] in ("encoder", "decoder", "quantize")]

    ours, upstream = model.eval().double(), upstream.double()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    empty = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    close = dict(rtol=0, atol=1e-9)
    with torch.no_grad():
        h_up = upstream.quant_conv(upstream.encoder(x))                               # (1, 256, 4, 4)
        quant_up, _, (_, _, idx_up) = upstream.quantize(h_up)                         # upstream's encode
        quant, _, (_, _, idx) = ours.encode_quantized(x, empty)
        assert torch.equal(idx, idx_up) and idx.unique().numel() > 1
        torch.testing.assert_close(quant, quant_up, **close)
        torch.testing.assert_close(ours.encode(x, empty)[0], h_up, **close)           # Eq. 4: nothing masked
        torch.testing.assert_close(ours.decode(quant_up), upstream.decode(quant_up), **close)


def test_bad_inputs_name_the_shapes():
    model = _model(GROUP_ATTN).eval()
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(2, 1, 16, 16\)"):
        model.encode(x, torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\)"):
        model.encode(x, torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="binary"):
        model.encode(x, torch.full((2, 1, 32, 32), 0.5))
    with pytest.raises(ValueError, match="30"):
        model.encode(torch.zeros(1, 3, 30, 32), torch.zeros(1, 1, 30, 32))
    stage2 = _model(GROUP_ATTN, use_masks=True)
    with pytest.raises(KeyError, match="no 'mask' entry"):
        stage2.reconstruct_batch({"image": torch.zeros(1, 32, 32, 3)})


@pytest.mark.parametrize("name", ["tsvqgan", "tsvqgan_face", "sketch_vqgan"])
def test_toy_configs_train_through_main(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    length = "data.params.train.params." + ("length=16" if name == "sketch_vqgan" else "dataset.params.length=16")
    trainer = cli.main(["-l", str(tmp_path / "logs"), "--base", os.path.join(REPO, "configs", "toy", f"{name}.yaml"),
                        "-t", "--max_steps", "2", length, "lightning.trainer.val_check_interval=1.0"])
    assert trainer.global_step == 2
    run = glob.glob(str(tmp_path / "logs" / "*"))[0]
    overview = glob.glob(os.path.join(run, "images", "val", "overview_*.png"))
    assert overview, "validation images were written"
    if name == "tsvqgan":  # the evaluation script reads the run back through the safe loader
        from ilat_ext.cli.eval_tsvqgan import run as evaluate   # scripts/eval_tsvqgan.py's command
        results = evaluate([run, "--num", "4", "--out", str(tmp_path / "eval")])
        assert all(np.isfinite(v) for v in results.values())
        assert os.path.isfile(tmp_path / "eval" / "input_mask_eq4_quantized.png")


def _paper_model(name, **overrides):
    cfg = OmegaConf.load(os.path.join(REPO, "configs", f"{name}.yaml")).model
    cfg.params.ckpt_path = None
    cfg.params.lossconfig.params.perceptual_weight = 0.0
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return instantiate_from_config(cfg)


def test_paper_presets():
    face = _paper_model("tsvqgan_ffhq")
    assert isinstance(face, TSVQModel) and face.downsample_factor == 16
    attention = [n for n, m in face.named_modules() if "Attn" in type(m).__name__]
    assert attention == []  # no attention anywhere
    norms = [m for m in face.encoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels for m in norms)  # InstanceNorm
    assert not face.loss.adaptive_disc_weight and face.loss.discriminator_weight == 0.1
    widths = [face.encoder.down[i].block[0].conv1.out_channels for i in range(5)]
    assert widths == [64, 128, 256, 384, 512] and face.quantize.n_e == 2048
    autoencoder = sum(p.numel() for n, p in face.named_parameters() if not n.startswith("loss."))
    print(f"face TS-VQGAN autoencoder parameters: {autoencoder / 1e6:.1f}M")

    imagenet = _paper_model("tsvqgan_imagenet_finetune")
    upstream_keys = set(VQModel(IMAGENET_F16, tiny_vq_lossconfig(), n_embed=1024, embed_dim=256).state_dict())
    ours = {k for k in imagenet.state_dict() if not k.startswith("loss.")}
    assert ours == {k for k in upstream_keys if not k.startswith("loss.")}
    assert imagenet.lr_decay_every == 50000

    sketch = _paper_model("sketch_vqgan_ffhq")
    assert sketch.encoder.conv_in.in_channels == 1 and sketch.image_key == "sketch"
    sketch_params = sum(p.numel() for n, p in sketch.named_parameters() if not n.startswith("loss."))
    assert sketch_params < autoencoder  # "fewer parameters" than the image model
    with pytest.raises(Exception, match="ckpt_path"):
        instantiate_from_config(OmegaConf.load(os.path.join(REPO, "configs", "tsvqgan_ffhq_stage2.yaml")).model)


def test_norm_groups_preset_and_vqmodel_builds_the_same_preset():
    """norm_groups sets the GroupNorms of both halves (same keys as upstream); a VQModel given the
    preset (iLAT*: the TS-VQGAN's weights without two-stream convolutions) builds it instead of
    ignoring it, loads the TS-VQGAN's weights with no missing or unexpected keys and encodes like
    the TS-VQGAN with an empty mask; a group count that does not divide the channels is refused."""
    preset = dict(tiny_ddconfig(ch_mult=(1, 2, 2), attn=()), norm_groups=4, mid_attn=False)
    ts = _model(preset).eval()
    norms = [m for m in list(ts.encoder.modules()) + list(ts.decoder.modules()) if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 4 for m in norms)
    assert set(ts.state_dict()) == set(_model(tiny_ddconfig(ch_mult=(1, 2, 2), attn=())).state_dict()) - {
        k for k in _model(tiny_ddconfig(ch_mult=(1, 2, 2), attn=())).state_dict() if ".mid.attn_1." in k}
    plain = VQModel(preset, tiny_vq_lossconfig(), n_embed=32, embed_dim=8).eval()
    assert all(m.num_groups == 4 for m in plain.encoder.modules() if isinstance(m, torch.nn.GroupNorm))
    assert not hasattr(plain.encoder.mid.attn_1, "q")                   # no mid attention built
    missing, unexpected = plain.load_state_dict(ts.state_dict(), strict=False)
    assert missing == [] and unexpected == []
    instance = VQModel(INSTANCE_NO_ATTN, tiny_vq_lossconfig(), n_embed=32, embed_dim=8)
    assert all(m.num_groups == m.num_channels for m in instance.encoder.modules() if isinstance(m, torch.nn.GroupNorm))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(plain.encode_features(x), ts.encode_features(x, torch.zeros(2, 1, 32, 32)),
                                   rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="norm_groups"):
        _model(dict(preset, norm_groups=5))
    with pytest.raises(ValueError, match="norm_groups"):                 # instance has no group count
        _model(dict(preset, norm_type="instance"))
    with pytest.raises(TypeError, match="norm_group"):
        VQModel(dict(preset, norm_group=4), tiny_vq_lossconfig(), n_embed=32, embed_dim=8)


def test_widths_that_32_does_not_divide_build_with_their_norm_groups():
    """ch 16 (the toy face preset's widths 16-32) builds in both halves and in a VQModel: upstream's
    constructors make GroupNorm(32) before the preset replaces it, which fails for 16 channels.
    The preset's GroupNorm(4) is what is built, and taming's Normalize is upstream's again after."""
    from taming.modules.diffusionmodules import model as taming_model

    upstream = taming_model.Normalize
    preset = dict(tiny_ddconfig(ch_mult=(1, 2, 2), attn=()), ch=16, norm_groups=4, mid_attn=False)
    ts, plain = _model(preset), VQModel(preset, tiny_vq_lossconfig(), n_embed=32, embed_dim=8)
    for model in (ts, plain):
        norms = [m for m in list(model.encoder.modules()) + list(model.decoder.modules())
                 if isinstance(m, torch.nn.GroupNorm)]
        assert norms and all(m.num_groups == 4 for m in norms)
        assert {m.num_channels for m in norms} == {16, 32}
    assert taming_model.Normalize is upstream
    with pytest.raises(ValueError, match="norm_groups"):                 # 16 channels, 32 groups: refused, clearly
        _model(dict(preset, norm_groups=32))
    assert taming_model.Normalize is upstream                            # restored after a failed build too
