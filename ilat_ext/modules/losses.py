"""VQGAN training loss: pixel + LPIPS reconstruction, codebook loss and a PatchGAN term.

Esser et al., "Taming Transformers for High-Resolution Image Synthesis" (CVPR 2021), Eq. 5-7;
iLAT (Cao et al. 2021) trains its TS-VQGAN with the same loss but a fixed GAN weight of 0.1.

`VQLPIPSWithDiscriminator` has the constructor arguments, `forward` contract and log keys of
`taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator`, so configs and LightningModules
written for upstream work unchanged. Differences from upstream:
- LPIPS comes from `ilat_ext.modules.lpips` (local files only, never a download) and is not built
  at all when `perceptual_weight == 0`, so such configs need no weight files.
- `adaptive_disc_weight=False` uses `disc_weight` as a fixed GAN weight (iLAT's face preset).
- `pixel_loss="l2"` replaces the L1 pixel term by a squared error.
- `pixelloss_weight` scales the pixel term. Upstream stores it but never uses it, so only configs
  that set it to something other than 1.0 see a difference.
- `forward(..., weights=)` takes an optional per-pixel weight map for masked training.
- The reconstruction and LPIPS terms are only computed for the generator step (upstream also
  computes them, unused, in the discriminator step).
- Unknown `disc_loss` / `pixel_loss`, a `cond` that contradicts `disc_conditional`, or an
  `optimizer_idx` other than 0/1 raise ValueError instead of asserting or returning None.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from taming.modules.discriminator.model import NLayerDiscriminator, weights_init
from taming.modules.losses.vqperceptual import adopt_weight, hinge_d_loss, vanilla_d_loss

from ilat_ext.modules.lpips import LPIPS

_DISC_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}
_PIXEL_LOSSES = ("l1", "l2")


class VQLPIPSWithDiscriminator(nn.Module):
    """Generator/discriminator loss for a VQGAN; see the module docstring for upstream differences.

    Generator loss (optimizer_idx 0), with r = pixelloss_weight * |x - x_rec|^(1 or 2)
    + perceptual_weight * LPIPS(x, x_rec) optionally multiplied by a per-pixel weight map:

        mean(r) + d_weight * disc_factor * (-mean(D(x_rec))) + codebook_weight * codebook_loss

    where d_weight is the adaptive weight of Eq. 7 (||grad nll|| / ||grad g||, times disc_weight)
    or the fixed `disc_weight`, and disc_factor is 0 before `disc_start` global steps.
    """

    def __init__(self, disc_start: int, codebook_weight: float = 1.0,
                 pixelloss_weight: float = 1.0, disc_num_layers: int = 3,
                 disc_in_channels: int = 3, disc_factor: float = 1.0, disc_weight: float = 1.0,
                 perceptual_weight: float = 1.0, use_actnorm: bool = False,
                 disc_conditional: bool = False, disc_ndf: int = 64, disc_loss: str = "hinge",
                 adaptive_disc_weight: bool = True, pixel_loss: str = "l1",
                 lpips_weights_dir: Optional[str] = None):
        super().__init__()
        if disc_loss not in _DISC_LOSSES:
            raise ValueError(f"unknown disc_loss {disc_loss!r}; choose one of {sorted(_DISC_LOSSES)}")
        if pixel_loss not in _PIXEL_LOSSES:
            raise ValueError(f"unknown pixel_loss {pixel_loss!r}; choose one of {list(_PIXEL_LOSSES)}")
        if perceptual_weight < 0:
            raise ValueError(f"perceptual_weight must be >= 0, got {perceptual_weight}")

        self.codebook_weight = codebook_weight
        self.pixel_weight = pixelloss_weight
        self.pixel_loss = pixel_loss
        self.perceptual_weight = perceptual_weight
        if perceptual_weight > 0:
            self.perceptual_loss = LPIPS(weights_dir=lpips_weights_dir)

        self.discriminator = NLayerDiscriminator(input_nc=disc_in_channels, n_layers=disc_num_layers,
                                                 use_actnorm=use_actnorm, ndf=disc_ndf
                                                 ).apply(weights_init)
        self.discriminator_iter_start = disc_start
        self.disc_loss = _DISC_LOSSES[disc_loss]
        self.disc_factor = disc_factor
        self.discriminator_weight = disc_weight
        self.adaptive_disc_weight = adaptive_disc_weight
        self.disc_conditional = disc_conditional

    def calculate_adaptive_weight(self, nll_loss: torch.Tensor, g_loss: torch.Tensor,
                                  last_layer: torch.Tensor) -> torch.Tensor:
        """Eq. 7: balance the GAN gradient against the reconstruction gradient at `last_layer`."""
        nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
        d_weight = torch.clamp(d_weight, 0.0, 1e4).detach()
        return d_weight * self.discriminator_weight

    def forward(self, codebook_loss: torch.Tensor, inputs: torch.Tensor,
                reconstructions: torch.Tensor, optimizer_idx: int, global_step: int,
                last_layer: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None,
                split: str = "train", weights: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Loss for one of the two optimizers.

        Args:
            codebook_loss: quantizer loss, any shape (its mean is used).
            inputs, reconstructions: (B, C, H, W) in [-1, 1].
            optimizer_idx: 0 = generator (autoencoder) step, 1 = discriminator step.
            global_step: step counter compared with `disc_start`.
            last_layer: decoder's last weight, needed for the adaptive weight in training.
            cond: (B, C', H, W) concatenated to the discriminator input iff `disc_conditional`.
            split: prefix of the log keys.
            weights: optional (B, 1, H, W) per-pixel weights multiplying the reconstruction loss
                map (pixel term plus the broadcast LPIPS term, so LPIPS is scaled by the map's
                mean); not renormalised. None = uniform. Ignored by the discriminator step.
        Returns:
            (scalar loss, dict of detached scalars keyed "{split}/...").
        """
        self._check_cond(cond)
        if optimizer_idx == 0:
            return self._generator_loss(codebook_loss, inputs, reconstructions, global_step,
                                        last_layer, cond, split, weights)
        if optimizer_idx == 1:
            return self._discriminator_loss(inputs, reconstructions, global_step, cond, split)
        raise ValueError(f"optimizer_idx must be 0 (generator) or 1 (discriminator), got {optimizer_idx!r}")

    def _check_cond(self, cond: Optional[torch.Tensor]) -> None:
        if self.disc_conditional and cond is None:
            raise ValueError("disc_conditional=True needs `cond`")
        if not self.disc_conditional and cond is not None:
            raise ValueError("`cond` was given but disc_conditional=False")

    def _discriminate(self, x: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        if cond is not None:
            x = torch.cat((x, cond), dim=1)
        return self.discriminator(x)

    def _reconstruction_loss(self, inputs, reconstructions, weights):
        """-> (rec_loss map (B, C, H, W), p_loss (B, 1, 1, 1) or a 0-dim zero)."""
        diff = inputs - reconstructions
        rec_loss = self.pixel_weight * (torch.abs(diff) if self.pixel_loss == "l1" else diff ** 2)
        if self.perceptual_weight > 0:
            p_loss = self.perceptual_loss(inputs, reconstructions)
            rec_loss = rec_loss + self.perceptual_weight * p_loss
        else:
            p_loss = inputs.new_zeros(())
        if weights is not None:
            b, _, h, w = inputs.shape
            if weights.dim() != 4 or weights.shape[0] != b or weights.shape[1] != 1 \
                    or tuple(weights.shape[2:]) != (h, w):
                raise ValueError(f"weights must have shape ({b}, 1, {h}, {w}), "
                                 f"got {tuple(weights.shape)}")
            rec_loss = rec_loss * weights
        return rec_loss, p_loss

    def _generator_loss(self, codebook_loss, inputs, reconstructions, global_step, last_layer,
                        cond, split, weights):
        inputs, reconstructions = inputs.contiguous(), reconstructions.contiguous()
        rec_loss, p_loss = self._reconstruction_loss(inputs, reconstructions, weights)
        nll_loss = torch.mean(rec_loss)

        logits_fake = self._discriminate(reconstructions, cond)
        g_loss = -torch.mean(logits_fake)

        if not self.adaptive_disc_weight:
            d_weight = torch.tensor(self.discriminator_weight)
            applied_weight = self.discriminator_weight  # python float: keeps the loss's dtype
        else:
            d_weight = self._adaptive_weight_or_zero(nll_loss, g_loss, last_layer)
            applied_weight = d_weight

        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.discriminator_iter_start)
        loss = nll_loss + applied_weight * disc_factor * g_loss + self.codebook_weight * codebook_loss.mean()

        log = {f"{split}/total_loss": loss.clone().detach().mean(),
               f"{split}/quant_loss": codebook_loss.detach().mean(),
               f"{split}/nll_loss": nll_loss.detach().mean(),
               f"{split}/rec_loss": rec_loss.detach().mean(),
               f"{split}/p_loss": p_loss.detach().mean(),
               f"{split}/d_weight": d_weight.detach(),
               f"{split}/disc_factor": torch.tensor(disc_factor),
               f"{split}/g_loss": g_loss.detach().mean()}
        return loss, log

    def _adaptive_weight_or_zero(self, nll_loss, g_loss, last_layer) -> torch.Tensor:
        # Like upstream, validation (eval mode / no_grad, where no graph exists) logs 0.
        if not (self.training and torch.is_grad_enabled()
                and nll_loss.requires_grad and g_loss.requires_grad):
            return nll_loss.new_zeros(()).detach()
        if last_layer is None:
            raise ValueError("the adaptive GAN weight needs `last_layer` (the decoder's last "
                             "weight) in training; pass it or set adaptive_disc_weight=False")
        try:
            return self.calculate_adaptive_weight(nll_loss, g_loss, last_layer)
        except RuntimeError as e:  # e.g. last_layer is not part of the graph
            raise RuntimeError(f"could not compute the adaptive GAN weight at last_layer: {e}") from e

    def _discriminator_loss(self, inputs, reconstructions, global_step, cond, split):
        logits_real = self._discriminate(inputs.contiguous().detach(), cond)
        logits_fake = self._discriminate(reconstructions.contiguous().detach(), cond)

        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.discriminator_iter_start)
        d_loss = disc_factor * self.disc_loss(logits_real, logits_fake)

        log = {f"{split}/disc_loss": d_loss.clone().detach().mean(),
               f"{split}/logits_real": logits_real.detach().mean(),
               f"{split}/logits_fake": logits_fake.detach().mean()}
        return d_loss, log


class BCELossWithQuant(nn.Module):
    """Upstream's `taming.modules.losses.segmentation.BCELossWithQuant` (absent from the PyPI
    package), the loss of its segmentation VQGAN (`VQSegmentationModel`, upstream's
    `coco_cond_stage.yaml`): binary cross-entropy on the logits of one-hot label maps plus the
    weighted codebook loss.

    `forward(qloss (), target (B, K, H, W) in {0, 1}, prediction (B, K, H, W) logits, split)` ->
    `(loss, {split/total_loss, split/bce_loss, split/quant_loss})`, as upstream.
    """

    def __init__(self, codebook_weight: float = 1.0):
        super().__init__()
        self.codebook_weight = float(codebook_weight)

    def forward(self, qloss: torch.Tensor, target: torch.Tensor, prediction: torch.Tensor,
                split: str) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        bce = nn.functional.binary_cross_entropy_with_logits(prediction, target)
        loss = bce + self.codebook_weight * qloss
        return loss, {f"{split}/total_loss": loss.detach().mean(), f"{split}/bce_loss": bce.detach().mean(),
                      f"{split}/quant_loss": qloss.detach().mean()}
