"""Test-only callbacks and builders (importable by main.py's DDP children as `tests.helpers`)."""
import os
import signal

import torch
from pytorch_lightning.callbacks import Callback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_VQGAN = os.path.join(REPO, "configs", "toy", "vqgan.yaml")


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
