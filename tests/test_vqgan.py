"""VQModel on Lightning 2: step counting, disc_start, accumulation, public checkpoints."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from ilat_ext.data import ToyFaces
from ilat_ext.models import VQModel
from ilat_ext.models.vqgan import kmeans
from tests.helpers import IMAGENET_F16, public_imagenet_checkpoint, tiny_ddconfig, tiny_vq_lossconfig



class Recorder(Callback):
    def __init__(self, snapshot_at=None):
        self.batches, self.disc_factor, self.snapshot_at, self.snapshot = 0, {}, snapshot_at, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1
        self.disc_factor[trainer.global_step] = float(trainer.callback_metrics["train/disc_factor_step"])
        if trainer.global_step == self.snapshot_at:
            self.snapshot = {k: v.clone() for k, v in pl_module.loss.discriminator.state_dict().items()}


def _fit(model, max_steps, accumulate=1, batch_size=2, snapshot_at=None):
    data = DataLoader(ToyFaces(size=32, length=64, mask=False), batch_size=batch_size)
    rec = Recorder(snapshot_at)
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    model.accumulate_grad_batches = accumulate
    trainer.fit(model, data)
    return trainer, rec


def _tiny(disc_start=0, **kw):
    torch.manual_seed(0)
    return VQModel(tiny_ddconfig(), tiny_vq_lossconfig(disc_start), n_embed=32, embed_dim=8, learning_rate=1e-3, **kw)


def test_one_global_step_per_batch_and_disc_start_keeps_its_meaning():
    model = _tiny(disc_start=3)
    disc0 = {k: v.clone() for k, v in model.loss.discriminator.state_dict().items()}
    trainer, rec = _fit(model, max_steps=6, snapshot_at=3)
    assert trainer.global_step == 6 and rec.batches == 6  # upstream: one step per batch, not two
    # the loss sees the step count before the update: batches 1-3 run at steps 0-2 < disc_start
    assert rec.disc_factor == {1: 0.0, 2: 0.0, 3: 0.0, 4: 1.0, 5: 1.0, 6: 1.0}
    learnable = [k for k in disc0 if k.endswith("weight") or k.endswith("bias")]
    assert all(torch.equal(disc0[k], rec.snapshot[k]) for k in learnable)  # untouched before disc_start
    disc6 = model.loss.discriminator.state_dict()
    assert any(not torch.equal(rec.snapshot[k], disc6[k]) for k in learnable)  # trained after it


def test_accumulation_counts_optimizer_steps():
    model = _tiny(disc_start=0)
    trainer, rec = _fit(model, max_steps=3, accumulate=2)
    assert trainer.global_step == 3 and rec.batches == 6


def test_learning_rate_must_be_set_and_decays_when_asked():
    model = VQModel(tiny_ddconfig(), tiny_vq_lossconfig(), n_embed=32, embed_dim=8)
    with pytest.raises(ValueError, match="learning_rate is not set"):
        model.configure_optimizers()
    model = _tiny(lr_decay_every=2, lr_decay_factor=0.5)
    trainer, _ = _fit(model, max_steps=4)
    assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == [2.5e-4, 2.5e-4]
    with pytest.raises(ValueError, match="lr_decay_every"):
        _tiny(lr_decay_every=0)


def _imagenet_loss(perceptual_weight, fake_weights):
    return {"target": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
            "params": {"disc_start": 250001, "disc_num_layers": 2, "perceptual_weight": perceptual_weight,
                       "lpips_weights_dir": str(fake_weights.dir)}}


def test_public_imagenet_checkpoint_loads_and_reconstructs_like_upstream(tmp_path, fake_weights):
    path = tmp_path / "last.ckpt"
    upstream = public_imagenet_checkpoint(path, fake_weights)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # why the safe loader exists

    with pytest.warns(UserWarning):
        ours = VQModel(IMAGENET_F16, _imagenet_loss(1.0, fake_weights), n_embed=1024, embed_dim=256,
                       ckpt_path=str(path)).eval()
    assert ours.ckpt_load_report.missing == [] and ours.ckpt_load_report.unexpected == []

    face = torch.from_numpy(ToyFaces(size=64, length=2, split="test", mask=False)[1]["image"]).permute(2, 0, 1)[None]
    with torch.no_grad():
        rec_up, _ = upstream(face)
        rec_ours, _ = ours(face)
        _, _, (_, _, idx_up) = upstream.encode(face)
        _, _, (_, _, idx_ours) = ours.encode(face)
    assert torch.equal(idx_up, idx_ours)
    torch.testing.assert_close(rec_ours, rec_up, rtol=0, atol=1e-6)

    # Without the perceptual term, only its (reported, not hidden) keys are left over.
    no_lpips = VQModel(IMAGENET_F16, _imagenet_loss(0.0, fake_weights), n_embed=1024, embed_dim=256,
                       ckpt_path=str(path))
    report = no_lpips.ckpt_load_report
    assert report.missing == []
    assert report.unexpected and all(k.startswith("loss.perceptual_loss.") for k in report.unexpected)


def test_codebook_init_from_data(tmp_path):
    """codebook_init="data" sets the codebook from the first training batch's encoder outputs (every
    code where some position picks it), only when training starts from scratch; the default keeps
    upstream's init; a bad value is refused."""
    faces = ToyFaces(size=32, length=8, mask=False)
    x = torch.stack([torch.from_numpy(faces[i]["image"]).permute(2, 0, 1) for i in range(8)])

    def used(model):
        with torch.no_grad():
            return model.quantize(model.quant_conv(model.encoder(x)))[2][2].unique().numel()
    uniform, data = _tiny(), _tiny(codebook_init="data")
    assert torch.equal(uniform.quantize.embedding.weight, data.quantize.embedding.weight)   # same until training
    data.init_codebook_from(x)
    with torch.no_grad():
        z = data.quant_conv(data.encoder(x)).permute(0, 2, 3, 1).reshape(-1, 8)
    nearest = torch.cdist(data.quantize.embedding.weight, z).min(1).values        # every code sits on an output
    assert (nearest < 0.05 * z.std() * 8 ** 0.5).all()
    assert used(data) == 32                       # each code is the nearest for the position it came from

    trained = _tiny(codebook_init="data")
    before = trained.quantize.embedding.weight.clone()
    _fit(trained, max_steps=1)
    assert not trained._codebook_pending
    assert (trained.quantize.embedding.weight - before).abs().max() > 10 * (1 / 32)   # moved far beyond uniform init
    path = tmp_path / "vq.ckpt"
    torch.save({"state_dict": trained.state_dict()}, path)
    assert not _tiny(codebook_init="data", ckpt_path=str(path))._codebook_pending     # weights from a checkpoint
    with pytest.raises(ValueError, match="codebook_init"):
        _tiny(codebook_init="random")


def test_kmeans_finds_separated_clusters_and_restarts_empty_centres():
    """Lloyd's k-means on three well-separated blobs recovers their means; with more centres than
    distinct points every centre still ends on a point (empty clusters restart, no NaN)."""
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([m + 0.1 * torch.randn(50, 2, generator=g) for m in means])
    centres = kmeans(points, 3, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(means, centres).min(1).values
    assert (nearest < 0.1).all()
    few = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    many = kmeans(few, 5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(many).all() and (torch.cdist(many, few).min(1).values < 1e-6).all()
    with pytest.raises(ValueError, match="points"):
        kmeans(torch.zeros(0, 2), 3)


class CodebookProbe(Callback):
    """The codebook and whether the quantiser was warming up, before every training batch; the
    buffered warm-up features after every batch (callbacks run before the module's own
    on_train_batch_end, which sets the codebook from them and empties the buffer)."""

    def __init__(self):
        self.codebooks, self.warming, self.buffers = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.codebooks.append(pl_module.quantize.embedding.weight.detach().clone())
        self.warming.append(pl_module.quantizer_warming_up())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.buffers.append([f.clone() for f in pl_module._feature_buffer])


def test_quantizer_warmup_then_kmeans_codebook(tmp_path):
    """quant_warmup_steps=3: steps 0-2 train a plain autoencoder (the codebook is not touched and
    gets no gradient), the end of step 2 sets the codebook to the k-means centres of the warm-up's
    encoder outputs (every code near some output) and steps 3-4 quantise; a model loaded from a
    checkpoint skips both; bad settings are refused."""
    model = _tiny(codebook_init="kmeans", quant_warmup_steps=3)
    init = model.quantize.embedding.weight.detach().clone()
    probe = CodebookProbe()
    data = DataLoader(ToyFaces(size=32, length=64, mask=False), batch_size=2)
    trainer = pl.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[probe])
    trainer.fit(model, data)
    assert probe.warming == [True, True, True, False, False]
    assert all(torch.equal(c, init) for c in probe.codebooks[:3])       # untouched through the warm-up
    assert not torch.equal(probe.codebooks[3], init)                      # set when the warm-up ends
    # ... to exactly `kmeans` of the features the warm-up buffered (its last batches, here all three)
    assert [len(b) for b in probe.buffers[:3]] == [1, 2, 3]
    buffered = probe.buffers[2]
    assert all(f.shape == (2 * 16 * 16, 8) for f in buffered)                # batch 2, 16 x 16 latents
    want = kmeans(torch.cat(buffered).float(), 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(probe.codebooks[3], want, rtol=0, atol=0)
    assert probe.buffers[3] == [] and probe.buffers[4] == []               # quantising: nothing buffered
    assert not torch.equal(probe.codebooks[4], probe.codebooks[3])        # then trained
    assert not model._codebook_pending and model._feature_buffer == []
    x = torch.stack([torch.from_numpy(ToyFaces(size=32, length=8, mask=False)[i]["image"]).permute(2, 0, 1)
                     for i in range(8)])
    with torch.no_grad():
        z = model.encode_features(x).permute(0, 2, 3, 1).reshape(-1, 8)
        used = model.quantize(model.encode_features(x))[2][2].unique().numel()
    assert used > 8                                              # the codes spread over the outputs
    assert torch.cdist(model.quantize.embedding.weight, z).min(1).values.median() < z.std() * 8 ** 0.5

    path = tmp_path / "vq.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = _tiny(codebook_init="kmeans", quant_warmup_steps=3, ckpt_path=str(path))
    assert not loaded._codebook_pending and not loaded.quantizer_warming_up()
    with pytest.raises(ValueError, match="codebook_init: kmeans"):
        _tiny(codebook_init="data", quant_warmup_steps=3)
    with pytest.raises(ValueError, match="quant_warmup_steps"):
        _tiny(codebook_init="kmeans", quant_warmup_steps=-1)
