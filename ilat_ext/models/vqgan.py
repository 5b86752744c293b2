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
- Optional codebook initialisation from data (`codebook_init`: "data" or "kmeans") and a
  quantiser warm-up (`quant_warmup_steps`): a plain autoencoder for the first steps, then the
  codebook = k-means of its encoder outputs. Small models trained for minutes (the toy configs)
  need both; see `init_codebook_from`. Checkpoints carry the warm-up's state (whether the codebook
  is still to be set, and the features collected for it), so a run resumed from any step, even the
  warm-up's last, quantises from the same step with the same codebook as one never interrupted.
- The encoder is `ilat_ext.modules.encoder.Encoder`: upstream's, plus the presets (`norm_type`,
  `norm_groups`, `mid_attn`) that upstream's silently ignores.
- `init_from_ckpt` goes through the safe loader and reports missing/unexpected keys.
- The encoder and decoder classes are class attributes (`encoder_cls`, `decoder_cls`), so
  subclasses such as TSVQModel swap them without building upstream's first.
"""
from typing import List, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch
import ilat_ext  # noqa: F401  (its taming.main hook makes taming.models importable on Lightning 2)
from taming.models.vqgan import VQModel as _UpstreamVQModel
from taming.modules.vqvae.quantize import VectorQuantizer

from ilat_ext.models.base import CheckpointMixin
from ilat_ext.modules.encoder import Decoder, Encoder
from ilat_ext.util import instantiate_from_config


CODEBOOK_INITS = ("uniform", "data", "kmeans")
# Warm-up batches whose encoder outputs the k-means codebook is fitted to.
KMEANS_BATCHES = 8


def kmeans(points: torch.Tensor, k: int, iters: int = 20, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Lloyd's k-means: (N, D) points -> (k, D) centres, started from k distinct random points
    (with replacement when N < k). A centre that loses all its points restarts at a random point.

    Example::

        >>> pts = torch.tensor([[0.0], [0.1], [10.0], [10.2]])
        >>> kmeans(pts, 2, generator=torch.Generator().manual_seed(0)).sort(0).values.squeeze(1).tolist()
        [0.05000000074505806, 10.100000381469727]
    """
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"kmeans expects (N, D) points with N >= 1, got {tuple(points.shape)}")
    n = points.shape[0]
    pick = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,), generator=generator)
    centres = points[pick.to(points.device)].clone()
    for _ in range(iters):
        assign = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)
        restart = points[torch.randint(n, (k,), generator=generator).to(points.device)]
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None].to(sums), restart)
    return centres


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
                 lr_decay_factor: float = 0.5, codebook_init: str = "uniform", quant_warmup_steps: int = 0):
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
        if codebook_init not in CODEBOOK_INITS:
            raise ValueError(f"codebook_init must be one of {CODEBOOK_INITS} ('uniform' is upstream's), "
                             f"got {codebook_init!r}")
        if isinstance(quant_warmup_steps, bool) or not isinstance(quant_warmup_steps, int) or quant_warmup_steps < 0:
            raise ValueError(f"quant_warmup_steps must be a non-negative integer, got {quant_warmup_steps!r}")
        if quant_warmup_steps and codebook_init != "kmeans":
            raise ValueError(f"quant_warmup_steps={quant_warmup_steps} needs codebook_init: kmeans (the codebook is "
                             f"set from the warmed-up encoder's outputs), got codebook_init={codebook_init!r}")
        self.codebook_init = codebook_init
        self.quant_warmup_steps = quant_warmup_steps
        # "data"/"kmeans": set the codebook from encoder outputs when quantisation starts, unless the
        # weights come from a checkpoint (ckpt_path, or a resumed run past that step)
        self._codebook_pending = codebook_init != "uniform"
        self._feature_buffer: List[torch.Tensor] = []
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=ignore_keys)
            self._codebook_pending = False

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder + quant_conv: (B, C, H, W) -> continuous z (B, embed_dim, h, w), before quantisation."""
        return self.quant_conv(self.encoder(x))

    @torch.no_grad()
    def init_codebook_from(self, x: torch.Tensor, features: Optional[torch.Tensor] = None) -> None:
        """Codebook from encoder outputs: those of the images x (B, C, H, W), or `features`
        (N, embed_dim) collected over several batches.

        "data": the outputs at random latent positions, plus noise at 1% of their spread.
        "kmeans": the k-means centres of the outputs (`kmeans`), which cover where the outputs
        are dense instead of where a random draw happened to land.

        Upstream initialises the codebook uniformly in (-1/n, 1/n), far from where the encoder's
        outputs lie, so early on every position picks one of a few codes and most codes never
        move (docs/results.md, first-stage choices). Starting from the
        encoder's own outputs puts every code where positions can choose it. Under DDP rank 0's
        codebook is broadcast so that all ranks agree."""
        if features is None:
            z = self.encode_features(x)                                                  # (B, D, h, w)
            features = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        n = self.quantize.n_e
        generator = torch.Generator(device="cpu").manual_seed(0)
        if self.codebook_init == "kmeans":
            codes = kmeans(features.float(), n, generator=generator).to(features)
        else:
            pick = (torch.randperm(features.shape[0], generator=generator)[:n] if features.shape[0] >= n
                    else torch.randint(features.shape[0], (n,), generator=generator)).to(features.device)
            codes = features[pick]
            codes = codes + 0.01 * codes.std() * torch.randn(codes.shape, generator=generator).to(codes)
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            codes = trainer.strategy.broadcast(codes, src=0)
        self.quantize.embedding.weight.copy_(codes)

    def quantizer_warming_up(self) -> bool:
        """True while training runs as a plain autoencoder (`quant_warmup_steps`, codebook not yet set)."""
        return self._codebook_pending and self.global_step < self.quant_warmup_steps

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

    def reconstruct_batch(self, batch, quantize: bool = True):
        """-> (x, xrec, codebook loss) for a batch; the one place subclasses change what goes in.
        quantize=False decodes the continuous features (the warm-up) with a zero codebook loss."""
        x = self.get_input(batch, self.image_key)
        if not quantize:
            return x, self.decode(self._warmup_features(self.encode_features(x))), x.new_zeros(())
        xrec, qloss = self(x)
        return x, xrec, qloss

    def _warmup_features(self, z: torch.Tensor) -> torch.Tensor:
        """Keep a training batch's continuous features (the k-means sample for the codebook); -> z."""
        if self.training:
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            self._feature_buffer = (self._feature_buffer + [flat])[-KMEANS_BATCHES:]
        return z

    def _start_quantizing(self, batch) -> None:
        """Set the codebook ("data"/"kmeans") when quantisation starts (at the end of the warm-up's
        last step, or on the first step without a warm-up) from the warm-up's last batches (or this
        batch's features), unless it came from a checkpoint (a run resumed past that step)."""
        if self.global_step == self.quant_warmup_steps:
            if self._feature_buffer:
                self.init_codebook_from(None, torch.cat(self._feature_buffer))
            else:
                self.init_codebook_from(self.get_input(batch, self.image_key))
        self._feature_buffer = []
        self._codebook_pending = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # Callbacks' on_train_batch_end (where step checkpoints are written) runs before ours, so a
        # checkpoint of the warm-up's last step still has the codebook to set: keep what it is set from.
        checkpoint["ilat_ext"]["quantizer"] = {
            "codebook_pending": bool(self._codebook_pending),
            "features": [f.cpu() for f in self._feature_buffer] if self._codebook_pending else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = (checkpoint.get("ilat_ext") or {}).get("quantizer")
        if state is None:  # written before the warm-up state was saved: decided from the step, as before
            return
        self._codebook_pending = bool(state["codebook_pending"])
        self._feature_buffer = [f.to(self.device) for f in state.get("features") or []]

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # The warm-up's last step sets the codebook at once, so validation at that step is quantized.
        if self._codebook_pending and self.quant_warmup_steps and not self.quantizer_warming_up():
            self._start_quantizing(batch)

    def training_step(self, batch, batch_idx):
        opt_ae, opt_disc = self.optimizers()
        warming_up = self.quantizer_warming_up()
        if self._codebook_pending and not warming_up:
            self._start_quantizing(batch)
        x, xrec, qloss = self.reconstruct_batch(batch, quantize=not warming_up)
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
        x, xrec, qloss = self.reconstruct_batch(batch, quantize=not self.quantizer_warming_up())
        aeloss, log_ae = self.loss(qloss, x, xrec, 0, self.global_step, last_layer=self.get_last_layer(), split="val")
        discloss, log_disc = self.loss(qloss, x, xrec, 1, self.global_step, last_layer=self.get_last_layer(),
                                       split="val")
        self.log("val/rec_loss", log_ae["val/rec_loss"], prog_bar=True, on_epoch=True, sync_dist=True)
        self.log("val/aeloss", aeloss, prog_bar=True, on_epoch=True, sync_dist=True)
        self.log_dict({k: v for k, v in log_ae.items() if k not in ("val/rec_loss",)}, on_epoch=True, sync_dist=True)
        self.log_dict(log_disc, on_epoch=True, sync_dist=True)
