"""Lightning-2 callbacks behind main.py: run-directory setup, image logging, periodic and SIGUSR1
checkpoints.

Ports of upstream taming's `SetupCallback` and `ImageLogger` (same constructor arguments, so
upstream configs that name `main.ImageLogger` keep working) onto Lightning 2 hooks:
`on_pretrain_routine_start` is gone (never called in 2.x), and batch hooks lost `dataloader_idx`.
"""
import logging
import os
import signal
import time
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.model_helpers import is_overridden

from ilat_ext.checkpoint import remove_stale_temp_files

logger = logging.getLogger(__name__)


class SetupCallback(Callback):
    """Creates logs/<run>/{checkpoints,configs} and saves the merged configs (rank 0 only).

    Files: `configs/<now>-project.yaml` (model + data) and `configs/<now>-lightning.yaml`.
    A resumed run adds a new pair with its own timestamp; `--resume` merges them in name order.
    """

    def __init__(self, resume, now: str, logdir: str, ckptdir: str, cfgdir: str, config, lightning_config):
        super().__init__()
        self.resume = resume
        self.now = now
        self.logdir = logdir
        self.ckptdir = ckptdir
        self.cfgdir = cfgdir
        self.config = config
        self.lightning_config = lightning_config

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            return
        for path in (self.logdir, self.ckptdir, self.cfgdir):
            os.makedirs(path, exist_ok=True)
        project = os.path.join(self.cfgdir, f"{self.now}-project.yaml")
        lightning = os.path.join(self.cfgdir, f"{self.now}-lightning.yaml")
        OmegaConf.save(self.config, project)
        OmegaConf.save(OmegaConf.create({"lightning": self.lightning_config}), lightning)
        logger.info("Project config saved to %s", project)
        logger.info("Lightning config saved to %s", lightning)


def to_uint8_grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (H', W', C) uint8 grid; one-channel images stay grey."""
    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    grid = ((grid + 1.0) / 2.0).clamp(0, 1)
    grid = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def overview_grid(images: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, int]:
    """Side-by-side panel: one row per sample, one column per key (input | mask | ...).

    Tensors are (N, C, H, W) in [-1, 1]; one-channel tensors are repeated to RGB, tensors with
    other channel counts are left out; keys with a different spatial size are resized to the first
    key's size. Returns the (N * K, 3, H, W) panel and K, the number of columns.
    """
    keys = [k for k, v in images.items() if isinstance(v, torch.Tensor) and v.dim() == 4]
    if not keys:
        raise ValueError("overview_grid needs at least one (N, C, H, W) tensor")
    n = min(images[k].shape[0] for k in keys)
    size = images[keys[0]].shape[-2:]
    columns = []
    for key in keys:
        x = images[key][:n].float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        elif x.shape[1] != 3:
            continue
        if x.shape[-2:] != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="nearest")
        columns.append(x)
    panel = torch.stack(columns, dim=1)  # (N, K, 3, H, W)
    return panel.reshape(-1, *panel.shape[2:]), len(columns)


def save_overview(images: Mapping[str, torch.Tensor], path: str, min_size: int = 128) -> None:
    """Write `overview_grid(images)` as a PNG; small (toy) images are enlarged to `min_size`."""
    panel, ncols = overview_grid(images)
    if panel.shape[-1] < min_size:
        panel = torch.nn.functional.interpolate(panel, scale_factor=min_size // panel.shape[-1], mode="nearest")
    Image.fromarray(to_uint8_grid(panel, nrow=ncols)).save(path)


class ImageLogger(Callback):
    """Calls `pl_module.log_images(batch, split=...)` and writes PNG grids.

    Written to `<logger.save_dir>/images/<split>/<key>_gs-<step>_e-<epoch>_b-<batch>.png`, one file
    per key as upstream does, plus `overview_...png` with all keys side by side. Training images
    are logged every `batch_frequency` optimizer steps (and at steps 1, 2, 4, ... before that when
    `increase_log_steps`, else at step 1); validation images on the first batch of each validation
    run. When training ends, both splits are logged once more at the final step
    (`log_on_train_end`), so even a short run leaves its final reconstructions on disk.
    """

    def __init__(self, batch_frequency: int, max_images: int, clamp: bool = True,
                 increase_log_steps: bool = True, log_on_batch_idx: bool = False, log_on_train_end: bool = True):
        super().__init__()
        if batch_frequency < 1:
            raise ValueError(f"batch_frequency must be >= 1, got {batch_frequency}")
        self.batch_freq = int(batch_frequency)
        self.max_images = int(max_images)
        self.clamp = clamp
        self.log_on_batch_idx = log_on_batch_idx
        self.log_steps = [2 ** n for n in range(int(np.log2(self.batch_freq)) + 1)] if increase_log_steps else [1]
        self.log_on_train_end = log_on_train_end
        self._last_train_step = -1
        self._last_train_batch = None

    @staticmethod
    def _root(trainer: pl.Trainer) -> str:
        if trainer.logger is not None and trainer.logger.save_dir is not None:
            return trainer.logger.save_dir
        return trainer.default_root_dir

    @rank_zero_only
    def log_local(self, save_dir: str, split: str, images: Dict[str, torch.Tensor],
                  global_step: int, current_epoch: int, batch_idx: int) -> None:
        root = os.path.join(save_dir, "images", split)
        os.makedirs(root, exist_ok=True)
        stem = f"gs-{global_step:06}_e-{current_epoch:06}_b-{batch_idx:06}"
        for key, value in images.items():
            Image.fromarray(to_uint8_grid(value, nrow=4)).save(os.path.join(root, f"{key}_{stem}.png"))
        save_overview(images, os.path.join(root, f"overview_{stem}.png"))

    def log_img(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int, split: str) -> None:
        if self.max_images <= 0 or not callable(getattr(pl_module, "log_images", None)):
            return
        was_training = pl_module.training
        if was_training:
            pl_module.eval()
        with torch.no_grad():
            images = pl_module.log_images(batch, split=split)
        if was_training:
            pl_module.train()
        images = {k: v for k, v in images.items() if isinstance(v, torch.Tensor)}
        for key in images:
            value = images[key][: self.max_images].detach().float().cpu()
            images[key] = value.clamp(-1.0, 1.0) if self.clamp else value
        if not images:
            return
        self.log_local(self._root(trainer), split, images, pl_module.global_step, pl_module.current_epoch, batch_idx)
        logger = trainer.logger
        if isinstance(logger, pl.loggers.TensorBoardLogger) and trainer.global_rank == 0:
            for key, value in images.items():
                grid = torchvision.utils.make_grid((value + 1.0) / 2.0, nrow=4)
                logger.experiment.add_image(f"{split}/{key}", grid.clamp(0, 1), global_step=pl_module.global_step)

    def check_frequency(self, step: int) -> bool:
        if step % self.batch_freq == 0 or step in self.log_steps:
            if step in self.log_steps:
                self.log_steps.remove(step)
            return True
        return False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = batch_idx if self.log_on_batch_idx else pl_module.global_step
        self._last_train_batch = (batch, batch_idx)
        if step == self._last_train_step:  # accumulation: several batches per optimizer step
            return
        if self.check_frequency(step):
            self._last_train_step = step
            self.log_img(trainer, pl_module, batch, batch_idx, split="train")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            self.log_img(trainer, pl_module, batch, batch_idx, split="val")

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.log_on_train_end:
            return
        if self._last_train_batch is not None and self._last_train_step != pl_module.global_step:
            batch, batch_idx = self._last_train_batch
            self.log_img(trainer, pl_module, batch, batch_idx, split="train")
        val_loaders = trainer.val_dataloaders
        datamodule = trainer.datamodule
        if val_loaders is None and datamodule is not None and is_overridden("val_dataloader", datamodule):
            val_loaders = datamodule.val_dataloader()
        if isinstance(val_loaders, (list, tuple)):
            val_loaders = val_loaders[0] if val_loaders else None
        if val_loaders is not None:
            batch = next(iter(val_loaders))
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            self.log_img(trainer, pl_module, batch, 0, split="val")


class SignalCheckpoint(Callback):
    """SIGUSR1 saves `last.ckpt` at the end of the current training batch (upstream's `melk`);
    so does an exception or Ctrl-C during fit, so that `--resume` can pick the run up.

    The handler only sets a flag: saving from inside a signal handler could interleave with an
    optimizer step. Under DDP every rank agrees on the flag before saving.
    """

    def __init__(self, ckpt_path: str, signum: int = signal.SIGUSR1):
        super().__init__()
        self.ckpt_path = ckpt_path
        self.signum = signum
        self._requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self._requested = True

    def on_fit_start(self, trainer, pl_module) -> None:
        try:
            self._previous = signal.signal(self.signum, self._handler)
        except ValueError:  # not the main thread: signals cannot be installed
            self._previous = None

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.global_step > 0:
            logger.warning("%s during fit: saving %s", type(exception).__name__, self.ckpt_path)
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        requested = self._requested
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self._requested = False
            logger.warning("Signal received: saving %s", self.ckpt_path)
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)


class PeriodicCheckpoint(Callback):
    """Rewrites `last.ckpt` every `every_n_steps` optimizer steps and/or every `every_minutes`
    minutes of training, and once more when training ends, so that a process killed without warning
    (SIGKILL, a lost node, the OOM killer), which no signal handler sees, loses at most one interval.

    Args:
        ckpt_path (str): the file to rewrite (main.py: `<run>/checkpoints/last.ckpt`).
        every_n_steps (int, defaults to None): save when `global_step` is a multiple of it.
        every_minutes (float, defaults to 30.0): save when this much wall-clock time has passed
            since the last save (or the start of training); 0 or None turns the clock off.

    Saving goes through `trainer.save_checkpoint`, i.e. main.py's `SafeCheckpointIO`, which writes a
    temp file, fsyncs and renames it: the previous `last.ckpt` stays whole if a write fails. The save
    happens in `on_train_batch_end`, where Lightning's own step checkpoints are made, so a resume
    continues the loops, optimizers and schedulers exactly. At the start of fit, temp files that a
    killed writer left in the folder are removed. Under DDP rank 0's clock decides for all ranks.
    """

    def __init__(self, ckpt_path: str, every_n_steps: Optional[int] = None, every_minutes: Optional[float] = 30.0):
        super().__init__()
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int)
                                          or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be a positive integer or None, got {every_n_steps!r}")
        if every_minutes is not None and (isinstance(every_minutes, bool) or not isinstance(every_minutes, (int, float))
                                          or every_minutes < 0):
            raise ValueError(f"every_minutes must be a non-negative number or None, got {every_minutes!r}")
        self.ckpt_path = ckpt_path
        self.every_n_steps = every_n_steps
        self.every_minutes = float(every_minutes) if every_minutes else None
        self._last_saved_step: Optional[int] = None
        self._last_save_time = time.monotonic()

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.global_rank == 0:
            for path in remove_stale_temp_files(os.path.dirname(os.path.abspath(self.ckpt_path))):
                logger.warning("Removed %s, left by a checkpoint write that was killed", path)

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_saved_step = trainer.global_step  # a resumed run's checkpoint already holds this step
        self._last_save_time = time.monotonic()

    def _clock_due(self, trainer) -> bool:
        if self.every_minutes is None:
            return False
        due = time.monotonic() - self._last_save_time >= 60.0 * self.every_minutes
        if trainer.world_size > 1:  # every rank must take part in the save: rank 0's clock decides
            due = bool(trainer.strategy.broadcast(due, src=0))
        return due

    def _save(self, trainer, why: str) -> None:
        started = time.monotonic()
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        self._last_saved_step = trainer.global_step
        self._last_save_time = time.monotonic()
        if trainer.global_rank == 0:
            logger.info("Saved %s at step %d (%s, %.1f s)", self.ckpt_path, trainer.global_step, why,
                        self._last_save_time - started)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_saved_step:  # accumulating, or this step is saved already
            return
        if self.every_n_steps is not None and step % self.every_n_steps == 0:
            self._save(trainer, f"every {self.every_n_steps} steps")
        elif self._clock_due(trainer):
            self._save(trainer, f"every {self.every_minutes:g} minutes")

    def on_train_end(self, trainer, pl_module) -> None:
        # The final step, unless Lightning's ModelCheckpoint has just written it to the same file.
        step = trainer.global_step
        checkpoint = trainer.checkpoint_callback
        written = (checkpoint is not None and getattr(checkpoint, "_last_global_step_saved", None) == step
                   and os.path.abspath(getattr(checkpoint, "last_model_path", "") or "") == os.path.abspath(self.ckpt_path))
        if step != self._last_saved_step and step > 0 and not written:
            self._save(trainer, "end of training")
