"""Test-only callbacks and builders (importable by main.py's DDP children as `tests.helpers`)."""
import os
import signal

import torch
from pytorch_lightning.callbacks import Callback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_VQGAN = os.path.join(REPO, "configs", "toy", "vqgan.yaml")
# main.py overrides for the toy transformer configs: a one-layer, 32-wide GPT, and short runs
TINY_GPT_OVERRIDES = ["model.params.transformer_config.params.n_layer=1", "model.params.transformer_config.params.n_embd=32",
                      "model.params.transformer_config.params.n_head=2"]
SHORT_RUN_OVERRIDES = ["data.params.batch_size=2", "lightning.trainer.val_check_interval=1.0",
                       "lightning.callbacks.image_logger.params.max_images=2"]


class RankWeightsDump(Callback):
    """Saves every rank's parameters at the start and the end of fit to out_dir/rank<r>_{start,end}.pt.

    Parameters, not buffers: BatchNorm running statistics are per process under DDP unless
    `sync_batchnorm` is set (as in any DDP run; the checkpoint holds rank 0's)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def _dump(self, trainer, pl_module, tag: str) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()}
        torch.save({"state_dict": state, "global_step": trainer.global_step, "world_size": trainer.world_size},
                   os.path.join(self.out_dir, f"rank{trainer.global_rank}_{tag}.pt"))

    def on_fit_start(self, trainer, pl_module) -> None:
        self._dump(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module) -> None:
        self._dump(trainer, pl_module, "end")


class SendSignalAt(Callback):
    """Sends SIGUSR1 to this process after `step` optimizer steps; one step later records what
    last.ckpt on disk says (its global_step) in `report_path`."""

    def __init__(self, step: int, ckpt_path: str, report_path: str):
        self.step, self.ckpt_path, self.report_path = step, ckpt_path, report_path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)
        elif trainer.global_step == self.step + 1:
            exists = os.path.exists(self.ckpt_path)
            step = torch.load(self.ckpt_path, weights_only=True)["global_step"] if exists else None
            with open(self.report_path, "w") as f:
                f.write(str(step))


class PrintSteps(Callback):
    """Prints `ILAT_STEP <global_step> <aeloss> <lr>` after every training batch and
    `ILAT_START <global_step>` when training starts, flushed, for tests that watch a main.py
    subprocess (the kill -9 soak test)."""

    def on_train_start(self, trainer, pl_module) -> None:
        print(f"ILAT_START {trainer.global_step}", flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = float(trainer.callback_metrics.get("train/aeloss_step", float("nan")))
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        print(f"ILAT_STEP {trainer.global_step} {loss:.6f} {lr:.8e}", flush=True)


class InterruptAt(Callback):
    """Raises KeyboardInterrupt after `step` optimizer steps, as Ctrl-C would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


IMAGENET_F16 = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
                    ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0)


def public_imagenet_checkpoint(path, fake_weights):
    """The public ImageNet VQGAN f16-1024 layout, built from upstream's own classes: Lightning-1.x
    metadata and a `callbacks` dict keyed by the ModelCheckpoint class object."""
    import ilat_ext  # noqa: F401  (upstream taming.models importable)
    import pytest
    from pytorch_lightning.callbacks import ModelCheckpoint
    from taming.models.vqgan import VQModel as UpstreamVQModel
    from taming.modules.discriminator.model import NLayerDiscriminator, weights_init

    from ilat_ext.modules.lpips import LPIPS

    torch.manual_seed(0)
    upstream = UpstreamVQModel(IMAGENET_F16, {"target": "taming.modules.losses.vqperceptual.DummyLoss"},
                               n_embed=1024, embed_dim=256)
    state = dict(upstream.state_dict())
    disc = NLayerDiscriminator(input_nc=3, n_layers=2, ndf=64).apply(weights_init)
    state.update({f"loss.discriminator.{k}": v for k, v in disc.state_dict().items()})
    with pytest.warns(UserWarning):  # the fake vgg.pth does not have the real md5
        lpips = LPIPS(weights_dir=str(fake_weights.dir))
    state.update({f"loss.perceptual_loss.{k}": v for k, v in lpips.state_dict().items()})
    torch.save({"state_dict": state, "epoch": 3, "global_step": 123456, "pytorch-lightning_version": "1.0.8",
                "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "best_model_path": "x.ckpt"}},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}},
                                      "param_groups": [{"lr": 4.5e-6, "betas": (0.5, 0.9), "params": [0]}]}],
                "lr_schedulers": []}, path)
    return upstream.eval()


def tiny_ddconfig(resolution: int = 32, ch: int = 32, ch_mult=(1, 2), z_channels: int = 16, attn=(16,)) -> dict:
    return dict(double_z=False, z_channels=z_channels, resolution=resolution, in_channels=3, out_ch=3, ch=ch,
                ch_mult=list(ch_mult), num_res_blocks=1, attn_resolutions=list(attn), dropout=0.0)


def tiny_vq_lossconfig(disc_start: int = 0) -> dict:
    return {"target": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
            "params": {"disc_start": disc_start, "disc_num_layers": 1, "disc_ndf": 8, "perceptual_weight": 0.0}}


# ------------------------------------------------------------------ a tiny iLAT model and an edit batch
# In the style of diffusers' `get_init_dict()` / `get_dummy_inputs()`: one seeded tiny model and one
# batch that every model-level test starts from. A tiny TS-VQGAN first stage (32 px -> 8 x 8 latent,
# 64 tokens, 32 codes) and a tiny sketch VQGAN condition stage (64 condition tokens, 16 codes); the
# transformer's vocabulary (40) is larger than the codebook, so `vocab_limit` is at work.
TINY_IMG, TINY_FACTOR, TINY_CODES, TINY_COND_CODES, TINY_VOCAB = 32, 4, 32, 16, 40
DUMMY_LOSS = {"target": "taming.modules.losses.vqperceptual.DummyLoss"}
BACKBONE_TARGETS = {"gpt": "ilat_ext.modules.gpt.GPT", "xtransformer": "ilat_ext.modules.xtransformer.XTransformer"}


def tiny_stage_configs(cond_channels: int = 1):
    """-> (first_stage_config, cond_stage_config): TS-VQGAN f4 on 32 px, and a VQGAN f4 on the
    condition (batch key "sketch") with `cond_channels` channels (3: a picture, as the pose
    models' condition frame)."""
    ddconfig = tiny_ddconfig(TINY_IMG, ch=32, ch_mult=(1, 1, 1), attn=())
    first = {"target": "ilat_ext.models.TSVQModel",
             "params": dict(ddconfig=ddconfig, lossconfig=DUMMY_LOSS, n_embed=TINY_CODES, embed_dim=8)}
    sketch = dict(ddconfig, in_channels=cond_channels, out_ch=cond_channels)
    cond = {"target": "ilat_ext.models.VQModel",
            "params": dict(ddconfig=sketch, lossconfig=DUMMY_LOSS, n_embed=TINY_COND_CODES, embed_dim=8,
                           image_key="sketch")}
    return first, cond


def tiny_ilat_config(backbone: str = "gpt", block_size: int = 160, cond_channels: int = 1, n_layer: int = 2,
                     **overrides) -> dict:
    """The constructor keywords of a tiny ILATTransformer / TamingTransformer / PoseILATTransformer;
    `overrides` are further constructor keywords (they replace the defaults)."""
    first, cond = tiny_stage_configs(cond_channels)
    transformer = {"target": BACKBONE_TARGETS[backbone],
                   "params": dict(vocab_size=TINY_VOCAB, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=32)}
    config = dict(transformer_config=transformer, first_stage_config=first, cond_stage_config=cond,
                  cond_stage_key="sketch", learning_rate=1e-3)
    config.update(overrides)
    return config


def tiny_ilat(cls=None, head_scale: float = 10.0, seed: int = 0, **overrides):
    """A tiny model in eval mode, seeded. head_scale > 1 makes greedy argmax robust (no near-ties);
    1 keeps minGPT's flat init. `overrides` go to `tiny_ilat_config`."""
    if cls is None:
        from ilat_ext.models import ILATTransformer as cls
    config = tiny_ilat_config(**overrides)
    torch.manual_seed(seed)
    model = cls(**config)
    with torch.no_grad():
        model.transformer.head.weight.mul_(head_scale)
    return model.eval()


def tiny_pose_model(**overrides):
    """A tiny PoseILATTransformer (condition frame under the batch key "sketch")."""
    from ilat_ext.models import PoseILATTransformer
    return tiny_ilat(cls=PoseILATTransformer, **overrides)


def dummy_edit_batch():
    """x (3, 3, 32, 32), sketch c (3, 1, 32, 32), masks (3, 1, 32, 32): a block (3 x 2 cells), two
    regions incl. the top-left cell (grid token 0) and a 2-row band, and an empty mask."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, TINY_IMG, TINY_IMG, generator=g) * 2 - 1
    c = torch.rand(3, 1, TINY_IMG, TINY_IMG, generator=g) * 2 - 1
    mask = torch.zeros(3, 1, TINY_IMG, TINY_IMG)
    mask[0, :, 8:20, 4:12] = 1
    mask[1, :, 0:3, 0:7] = 1
    mask[1, :, 20:28, 10:30] = 1
    return x, c, mask


def dataset_batch(x, c, mask) -> dict:
    """The datasets' layout of an edit batch: (B, H, W, C) tensors."""
    return {"image": x.permute(0, 2, 3, 1), "sketch": c.permute(0, 2, 3, 1), "mask": mask.permute(0, 2, 3, 1)}


def dummy_pose_batch(ref, mask, pose, ref_pose) -> dict:
    """A batch as the pose datasets give it (images channels-last); the condition frame is "sketch"
    and the target frame the reference flipped left-right."""
    return {"sketch": ref.permute(0, 2, 3, 1), "mask": mask.permute(0, 2, 3, 1), "image": ref.flip(3).permute(0, 2, 3, 1),
            "pose": pose, "cond_pose": ref_pose}


def teacher_forced_logits(model, indices, c, allowed, n_codes: int = TINY_CODES):
    """The model's transformer on [condition part, indices[:, :-1]] -> logits (B, L, n_codes).

    allowed: n_cond -> (B, S, S) attention mask, or None for the backbone's causal mask."""
    _, c_idx = model.encode_to_c(c)
    emb, prefix, n_cond = model.sequence_inputs(c_idx)
    idx = indices[:, :-1] if prefix is None else torch.cat([prefix, indices[:, :-1]], dim=1)
    n_pre = (0 if emb is None else emb.shape[1]) + (0 if prefix is None else prefix.shape[1])
    features = model.position_features(c_idx, n_pre, indices.shape[1])   # None unless aligned_condition
    logits = model.transformer(idx, emb, attn_mask=allowed(n_cond), pos_features=features)[0]
    return logits[:, n_pre - 1:, :n_codes]


def standing_pose(cx=40.0, top=8.0, h=44.0):
    """A plausible upright pose (13, 3) in pixels, person's left on the image's right, all visible."""
    import numpy as np
    from ilat_ext.pose_geometry import NUM_JOINTS
    u = h / 10
    xy = [(cx, top), (cx + 1.5 * u, top + 2 * u), (cx - 1.5 * u, top + 2 * u), (cx + 2.5 * u, top + 3.5 * u),
          (cx - 2.5 * u, top + 3.5 * u), (cx + 3 * u, top + 5 * u), (cx - 3 * u, top + 5 * u),
          (cx + u, top + 5.5 * u), (cx - u, top + 5.5 * u), (cx + 1.2 * u, top + 7.7 * u),
          (cx - 1.2 * u, top + 7.7 * u), (cx + 1.4 * u, top + 10 * u), (cx - 1.4 * u, top + 10 * u)]
    return np.concatenate([np.array(xy), np.ones((NUM_JOINTS, 1))], 1).astype(np.float32)
