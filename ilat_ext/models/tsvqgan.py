"""TS-VQGAN (iLAT, Cao et al. 2021, Sec. 3.1, Eq. 1-4, Fig. 3a).

A VQGAN whose encoder is two-stream (`ilat_ext.modules.encoder.TSEncoder`): the features of every
latent position outside the edited region depend only on unmasked pixels, so editing the region
cannot change them. Decoding follows Eq. 4 (local quantized decoding):

    z_hat = M_q * q(z) + (1 - M_q) * z          (M_q = 1 where a latent cell touches the mask)

codebook vectors inside the edited region, the continuous encoder features outside, so what is
kept is reconstructed without quantisation error. The authors' release leaks through InstanceNorm
statistics and never reaches Eq. 4 with its configs (FACTS.md); ours does both.

Training: stage 1 without masks (`use_masks: false`, a plain VQGAN), stage 2 with masks from the
batch (`use_masks: true`; see `ilat_ext.data.mask_sources` for free-form and file masks with a mix of
partial, empty and full masks). Same Lightning-2 manual optimisation as `ilat_ext.models.VQModel`.
"""
from typing import Optional, Sequence, Tuple

import torch

from ilat_ext.masks import check_pixel_mask, latent_mask
from ilat_ext.models.vqgan import VQModel
from ilat_ext.modules.encoder import Decoder, TSEncoder


class TSVQModel(VQModel):
    """Upstream VQModel's constructor plus `mask_key`, `use_masks` and VQModel's extras.

    `ddconfig` may also hold `norm_type` ("group" | "instance"), `norm_groups` (int, default 32)
    and `mid_attn` (bool): the face preset uses InstanceNorm and no attention anywhere.

    encode(x (B, C, H, W), mask=None (B, 1, H, W), 1 = region to edit)
        -> (quant (B, embed_dim, h, w), codebook loss, (perplexity, one_hot, indices (B*h*w, 1)))
    With a mask, `quant` is Eq. 4's local quantized latent (indices cover every position, for the
    transformer); without one it is fully quantized, as upstream.
    """

    encoder_cls = TSEncoder
    decoder_cls = Decoder

    def __init__(self, ddconfig, lossconfig, n_embed: int, embed_dim: int, ckpt_path: Optional[str] = None,
                 ignore_keys: Sequence[str] = (), image_key: str = "image", mask_key: str = "mask",
                 use_masks: bool = False, colorize_nlabels: Optional[int] = None, monitor: Optional[str] = None,
                 learning_rate: Optional[float] = None, adam_betas: Tuple[float, float] = (0.5, 0.9),
                 lr_decay_every: Optional[int] = None, lr_decay_factor: float = 0.5, codebook_init: str = "uniform",
                 quant_warmup_steps: int = 0):
        super().__init__(ddconfig, lossconfig, n_embed, embed_dim, ckpt_path=ckpt_path, ignore_keys=ignore_keys,
                         image_key=image_key, colorize_nlabels=colorize_nlabels, monitor=monitor,
                         learning_rate=learning_rate, adam_betas=adam_betas, lr_decay_every=lr_decay_every,
                         lr_decay_factor=lr_decay_factor, codebook_init=codebook_init,
                         quant_warmup_steps=quant_warmup_steps)
        self.mask_key = mask_key
        self.use_masks = bool(use_masks)
        self.downsample_factor = 2 ** (len(ddconfig["ch_mult"]) - 1)

    # ------------------------------------------------------------------ encoding (Eq. 1-4)
    def encode_features(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Two-stream encoder + quant_conv: (B, C, H, W) -> continuous z (B, embed_dim, h, w)."""
        return self.quant_conv(self.encoder(x, mask))

    def encode(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        z = self.encode_features(x, mask)
        quant, emb_loss, info = self.quantize(z)  # straight-through q(z) at every position
        if mask is not None:
            m_q = latent_mask(mask, self.downsample_factor)[:, None]  # (B, 1, h, w) bool
            quant = torch.where(m_q, quant, z)  # Eq. 4
        return quant, emb_loss, info

    def encode_quantized(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """Every position quantized (what plain Taming decodes), features from the same encoder."""
        return self.quantize(self.encode_features(x, mask))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        quant, diff, _ = self.encode(x, mask)
        return self.decode(quant), diff

    # ------------------------------------------------------------------ training
    def get_mask(self, batch, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The batch's (B, H, W, 1) mask as (B, 1, H, W), validated against x; None in stage 1."""
        if not self.use_masks:
            return None
        if self.mask_key not in batch:
            raise KeyError(f"use_masks is on but the batch has no '{self.mask_key}' entry "
                           f"(keys: {sorted(batch)}); wrap the dataset in ilat_ext.data.mask_sources.MaskedDataset")
        mask = self.get_input(batch, self.mask_key)
        return check_pixel_mask(mask, x)

    def reconstruct_batch(self, batch, quantize: bool = True):
        x = self.get_input(batch, self.image_key)
        mask = self.get_mask(batch, x)
        if not quantize:  # the quantiser's warm-up: continuous features everywhere
            return x, self.decode(self._warmup_features(self.encode_features(x, mask))), x.new_zeros(())
        xrec, qloss = self(x, mask)
        return x, xrec, qloss

    @torch.no_grad()
    def log_images(self, batch, **kwargs):
        """inputs | mask | reconstructions (Eq. 4) | reconstructions_quantized, (N, C, H, W) in [-1, 1]."""
        x = self.get_input(batch, self.image_key).to(self.device)
        mask = self.get_mask(batch, x) if self.mask_key in batch else None
        log = {"inputs": x}
        if mask is not None:
            log["mask"] = mask * 2.0 - 1.0
        log["reconstructions"] = self(x, mask)[0]
        log["reconstructions_quantized"] = self.decode(self.encode_quantized(x, mask)[0])
        return log
