"""VQGAN (Esser et al. 2021) on Lightning 2: the "Taming" first stage of every comparison.

A subclass of upstream `taming.models.vqgan.VQModel`; encoder, decoder, quantizer and parameter
names are upstream's, so public checkpoints load unchanged. What differs, and why:
- Manual optimisation: Lightning 2 rejects `training_step(..., optimizer_idx)`. The generator
  step goes through Lightning (it advances `global_step`); the discriminator step goes through the
  strategy directly, so `global_step` counts one step per batch, as upstream's did, and
  `disc_start` keeps its meaning. Gradient accumulation (`accumulate_grad_batches`) is done here,
  because Lightning refuses it for manual optimisation.
- `learning_rate` can be passed in; main.py still sets it from `base_learning_rate` as upstream.
- Optional step decay of the learning rate (`lr_decay_every`, `lr_decay_factor`).
- `init_from_ckpt` goes through the safe loader and reports missing/unexpected keys.
- The encoder and decoder classes are class attributes (`encoder_cls`, `decoder_cls`), so
  subclasses such as TSVQModel swap them without building upstream's first.
"""
from typing import Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch
import ilat_ext.compat  # noqa: F401  (makes taming.models importable on Lightning 2)
from taming.models.vqgan import VQModel as _UpstreamVQModel
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import VectorQuantizer

from ilat_ext.models.base import CheckpointMixin
from ilat_ext.util import instantiate_from_config


class VQModel(CheckpointMixin, _UpstreamVQModel):
    """Upstream's constructor plus `learning_rate`, `adam_betas`, `lr_decay_every`, `lr_decay_factor`.

    `encode(x)` -> `(quant (B, embed_dim, h, w), emb_loss, (perplexity, one_hot, indices (B*h*w, 1)))`,
    `decode(quant)` -> `(B, out_ch, H, W)`, as upstream.
    """

    # A GAN step leaves the discriminator out of the generator's backward pass and vice versa.
    ddp_find_unused_parameters = True
    # Subclasses swap the autoencoder's halves (TSVQModel: two-stream encoder).
    encoder_cls = Encoder
    decoder_cls = Decoder

    def __init__(self, ddconfig, lossconfig, n_embed: int, embed_dim: int, ckpt_path: Optional[str] = None,
                 ignore_keys: Sequence[str] = (), image_key: str = "image", colorize_nlabels: Optional[int] = None,
                 monitor: Optional[str] = None, learning_rate: Optional[float] = None,
                 adam_betas: Tuple[float, float] = (0.5, 0.9), lr_decay_every: Optional[int] = None,
                 lr_decay_factor: float = 0.5, codebook_init: str = "uniform"):
        # Upstream's __init__, with the encoder/decoder classes as hooks (so subclasses do not
        # build modules only to throw them away) and without its checkpoint loading.
        pl.LightningModule.__init__(self)
        ddconfig = dict(ddconfig)
        self.image_key = image_key
        self.encoder = self.encoder_cls(**ddconfig)
        self.decoder = self.decoder_cls(**ddconfig)
        self.loss = instantiate_from_config(lossconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim, beta=0.25)
        self.quant_conv = torch.nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        if colorize_nlabels is not None:
            self.register_buffer("colorize", torch.randn(3, int(colorize_nlabels), 1, 1))
        if monitor is not None:
            self.monitor = monitor
        self.automatic_optimization = False
        self.learning_rate = learning_rate
        self.adam_betas = tuple(adam_betas)
        if lr_decay_every is not None and int(lr_decay_every) < 1:
            raise ValueError(f"lr_decay_every must be a positive number of steps, got {lr_decay_every}")
        self.lr_decay_every = lr_decay_every
        self.lr_decay_factor = float(lr_decay_factor)
        self.accumulate_grad_batches = 1
        if codebook_init not in ("uniform", "data"):
            raise ValueError(f"codebook_init must be 'uniform' (upstream) or 'data', got {codebook_init!r}")
        self.codebook_init = codebook_init
        # "data": set the codebook from the first training batch's encoder outputs, unless the
        # weights come from a checkpoint (ckpt_path, or a resumed run at step > 0)
        self._codebook_pending = codebook_init == "data"
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=ignore_keys)
            self._codebook_pending = False

    @torch.no_grad()
    def init_codebook_from(self, x: torch.Tensor) -> None:
        """Codebook = the (pre-quantisation) encoder outputs at random latent positions of the
        images x (B, C, H, W), plus noise at 1% of their spread.

        Upstream initialises the codebook uniformly in (-1/n, 1/n), far from where the encoder's
        outputs lie, so early on every position picks one of a few codes and most codes never
        move (on the toy faces 13 of 256 codes are in use after 200 steps). Starting from the
        encoder's own outputs puts every code where positions can choose it. Under DDP rank 0's
        codebook is broadcast so that all ranks agree."""
        z = self.quant_conv(self.encoder(x))                                             # (B, D, h, w)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        n = self.quantize.n_e
        generator = torch.Generator(device="cpu").manual_seed(0)
        pick = (torch.randperm(flat.shape[0], generator=generator)[:n] if flat.shape[0] >= n
                else torch.randint(flat.shape[0], (n,), generator=generator)).to(flat.device)
        codes = flat[pick]
        codes = codes + 0.01 * codes.std() * torch.randn(codes.shape, generator=generator).to(codes)
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            codes = trainer.strategy.broadcast(codes, src=0)
        self.quantize.embedding.weight.copy_(codes)

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        if self.learning_rate is None:
            raise ValueError(f"{type(self).__name__}.learning_rate is not set: pass learning_rate= or let "
                             "main.py set it from model.base_learning_rate")
        ae_params = (list(self.encoder.parameters()) + list(self.decoder.parameters())
                     + list(self.quantize.parameters()) + list(self.quant_conv.parameters())
                     + list(self.post_quant_conv.parameters()))
        opt_ae = torch.optim.Adam(ae_params, lr=self.learning_rate, betas=self.adam_betas)
        opt_disc = torch.optim.Adam(self.loss.discriminator.parameters(), lr=self.learning_rate, betas=self.adam_betas)
        if self.lr_decay_every is None:
            return [opt_ae, opt_disc]
        schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=int(self.lr_decay_every), gamma=self.lr_decay_factor)
                      for o in (opt_ae, opt_disc)]
        return [opt_ae, opt_disc], schedulers

    def _should_step(self, batch_idx: int) -> bool:
        n = self.accumulate_grad_batches
        if n <= 1:
            return True
        last_batch = self.trainer is not None and self.trainer.is_last_batch
        return (batch_idx + 1) % n == 0 or last_batch

    def _backward_and_step(self, optimizer, loss: torch.Tensor, batch_idx: int, counts_as_step: bool) -> None:
        """Backward (scaled for accumulation) and, on the last batch of a group, one step.

        Only the counted optimizer goes through Lightning's wrapper, which advances global_step;
        the other is stepped through the strategy (same precision/AMP handling, no count)."""
        self.toggle_optimizer(optimizer)
        self.manual_backward(loss / self.accumulate_grad_batches)
        if self._should_step(batch_idx):
            if counts_as_step:
                optimizer.step()
            else:
                self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None)
            optimizer.zero_grad(set_to_none=True)
        self.untoggle_optimizer(optimizer)

    def reconstruct_batch(self, batch):
        """-> (x, xrec, codebook loss) for a batch; the one place subclasses change what goes in."""
        x = self.get_input(batch, self.image_key)
        xrec, qloss = self(x)
        return x, xrec, qloss

    def training_step(self, batch, batch_idx):
        opt_ae, opt_disc = self.optimizers()
        if self._codebook_pending:
            if self.global_step == 0:
                self.init_codebook_from(self.get_input(batch, self.image_key))
            self._codebook_pending = False
        x, xrec, qloss = self.reconstruct_batch(batch)
        step = self.global_step

        aeloss, log_ae = self.loss(qloss, x, xrec, 0, step, last_layer=self.get_last_layer(), split="train")
        self._backward_and_step(opt_ae, aeloss, batch_idx, counts_as_step=True)
        discloss, log_disc = self.loss(qloss, x, xrec, 1, step, last_layer=self.get_last_layer(), split="train")
        self._backward_and_step(opt_disc, discloss, batch_idx, counts_as_step=False)

        if self.lr_decay_every is not None and self._should_step(batch_idx):
            for scheduler in self.lr_schedulers():
                scheduler.step()
        self.log("train/aeloss", aeloss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/discloss", discloss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log_dict(log_ae, on_step=True, on_epoch=True)
        self.log_dict(log_disc, on_step=True, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        x, xrec, qloss = self.reconstruct_batch(batch)
        aeloss, log_ae = self.loss(qloss, x, xrec, 0, self.global_step, last_layer=self.get_last_layer(), split="val")
        discloss, log_disc = self.loss(qloss, x, xrec, 1, self.global_step, last_layer=self.get_last_layer(),
                                       split="val")
        self.log("val/rec_loss", log_ae["val/rec_loss"], prog_bar=True, on_epoch=True, sync_dist=True)
        self.log("val/aeloss", aeloss, prog_bar=True, on_epoch=True, sync_dist=True)
        self.log_dict({k: v for k, v in log_ae.items() if k not in ("val/rec_loss",)}, on_epoch=True, sync_dist=True)
        self.log_dict(log_disc, on_epoch=True, sync_dist=True)
