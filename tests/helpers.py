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


def tiny_ddconfig(resolution: int = 32, ch: int = 32, ch_mult=(1, 2), z_channels: int = 16, attn=(16,)) -> dict:
    return dict(double_z=False, z_channels=z_channels, resolution=resolution, in_channels=3, out_ch=3, ch=ch,
                ch_mult=list(ch_mult), num_res_blocks=1, attn_resolutions=list(attn), dropout=0.0)


def tiny_vq_lossconfig(disc_start: int = 0) -> dict:
    return {"target": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
            "params": {"disc_start": disc_start, "disc_num_layers": 1, "disc_ndf": 8, "perceptual_weight": 0.0}}
