"""TS-VQGAN encoder and decoder (iLAT, Cao et al., NeurIPS 2021, Sec. 3.1).

`TSEncoder` is taming's `Encoder` with every layer replaced by its two-stream version
(`ilat_ext.modules.two_stream`): given a pixel mask M, every latent with M_q = 0 (`latent_mask`)
is a function of the unmasked pixels alone, so the transformer can be trained on unmasked tokens
without seeing what it must generate (Eq. 2-4). Same constructor arguments and state_dict keys
as upstream, so public taming checkpoints load with strict=True; without a mask it computes
exactly what upstream's Encoder computes.

`Decoder` is taming's `Decoder` with the same two presets (the decoder needs no masks: it runs
after the transformer, Sec. 3.1).

What differs from upstream and why:
- keyword-only `norm_type` ("group" | "instance"), `norm_groups` and `mid_attn`: the iLAT face
  preset uses InstanceNorm and no attention at all (FACTS.md Sec. 1); narrow models (the toy
  configs) want fewer than taming's 32 groups. With the defaults the modules and keys are
  upstream's, and parameter names never change.
- keyword-only options for the authors' released face models, off by default: `norm_eps` and
  `norm_affine` (their `nn.InstanceNorm2d(C)`: eps 1e-5, no parameters), `downsample: conv4x4`
  (TSEncoder: their 4x4 stride-2 padding-1 downsampling, two-stream and exact), `tanh_out`
  (Decoder: their decoders end with tanh). See docs/models.md, "The authors' released models".
- unknown keyword arguments raise TypeError (upstream's `**ignore_kwargs` hides typos); the keys
  that live in the same `ddconfig` for the other half of the autoencoder are accepted.
- `TSEncoder.forward` validates the image and mask (`ilat_ext.masks`) and raises ValueError
  naming the shapes. It does not keep upstream's list of every intermediate activation (`hs`,
  a leftover of the U-Net it was cut from), which lowers its peak memory.
"""
import contextlib
import math
from typing import Dict, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from taming.modules.diffusionmodules.model import Decoder as _UpstreamDecoder
from taming.modules.diffusionmodules.model import Encoder as _UpstreamEncoder
from taming.modules.diffusionmodules import model as _taming_model
from taming.modules.diffusionmodules.model import nonlinearity

from ilat_ext.masks import check_divisible, check_pixel_mask, encoder_masks, latent_mask
from ilat_ext.modules.two_stream import (NORM_TYPES, TSAttnBlock, TSConv2d, TSDownsample, TSResnetBlock, make_norm,
                                         mask_memo)

# ddconfig keys that belong to the decoder (taming's Decoder) and that the encoder ignores, and
# vice versa. Anything else unknown is a typo.
DECODER_ONLY_KEYS = frozenset({"give_pre_end", "tanh_out"})
ENCODER_ONLY_KEYS = frozenset({"double_z", "downsample"})


# ----------------------------------------------------------------------------- helpers
def apply_preset(module: nn.Module, norm_type: str = "group", mid_attn: bool = True,
                 norm_groups: int = 32, norm_eps: float = 1e-6, norm_affine: bool = True) -> nn.Module:
    """Turn one of taming's plain modules (Encoder, Decoder) into a preset, in place: "instance"
    swaps every GroupNorm(32) for GroupNorm(C, C), "group" with norm_groups != 32 for
    GroupNorm(norm_groups, C) (same parameter names); mid_attn=False replaces `mid.attn_1` by an
    identity (its keys disappear). Used by `Encoder` and `Decoder`, and to build upstream's Encoder
    with a TSEncoder's preset for comparisons (tests, benchmark)."""
    _check_norm_type(norm_type)
    if norm_type != "group" or norm_groups != 32 or norm_eps != 1e-6 or not norm_affine:
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.GroupNorm):
                    setattr(parent, name, make_norm(child.num_channels, norm_type, norm_groups, norm_eps, norm_affine))
    if not mid_attn:
        module.mid.attn_1 = nn.Identity()
    return module


@contextlib.contextmanager
def _constructible_norms() -> Iterator[None]:
    """While taming builds an Encoder or Decoder: its `Normalize` as GroupNorm(gcd(32, C)) instead of
    GroupNorm(32), which cannot be built for a channel count that 32 does not divide (a toy ddconfig
    with ch 16). Identical to upstream's wherever 32 divides C; `apply_preset` then builds the
    configured norms either way."""
    upstream = _taming_model.Normalize

    def normalize(in_channels, *args, **kwargs):
        return nn.GroupNorm(num_groups=math.gcd(32, int(in_channels)), num_channels=in_channels, eps=1e-6, affine=True)

    _taming_model.Normalize = normalize
    try:
        yield
    finally:
        _taming_model.Normalize = upstream


def _use_preset(module: nn.Module, norm_type: str, norm_groups: int, mid_attn: bool, norm_eps: float = 1e-6,
                norm_affine: bool = True) -> None:
    """Record the preset on one of taming's modules (`Encoder`, `Decoder`) and apply it."""
    module.norm_type, module.norm_groups, module.mid_attn = norm_type, norm_groups, mid_attn
    module.norm_eps, module.norm_affine = float(norm_eps), bool(norm_affine)
    apply_preset(module, norm_type, mid_attn, norm_groups, norm_eps, norm_affine)


def _reject_unknown(cls_name: str, extra: Dict, allowed: Iterable[str]) -> None:
    unknown = sorted(set(extra) - set(allowed))
    if unknown:
        raise TypeError(f"{cls_name} got unexpected keyword argument(s) {unknown} (the other half's ddconfig "
                        f"keys {sorted(allowed)} are accepted and ignored)")


def _check_norm_type(norm_type: str) -> None:
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")


# ----------------------------------------------------------------------------- encoder
class TSEncoder(nn.Module):
    """Two-stream encoder: taming's Encoder whose unmasked latents never see masked pixels.

    forward(x (B, in_channels, H, W), mask (B, 1, H, W) or None) -> (B, z, H/f, W/f), with
    f = 2 ** (len(ch_mult) - 1) and z = 2 * z_channels if double_z else z_channels.
    H and W must be multiples of f; the mask is binary, 1 = region to edit (bool/int/float).
    Masks at every resolution are built once per call (`ilat_ext.masks.encoder_masks`).
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int] = (1, 2, 4, 8), num_res_blocks: int,
                 attn_resolutions: Sequence[int], dropout: float = 0.0, resamp_with_conv: bool = True,
                 in_channels: int, resolution: int, z_channels: int, double_z: bool = True,
                 norm_type: str = "group", norm_groups: int = 32, mid_attn: bool = True, norm_eps: float = 1e-6,
                 norm_affine: bool = True, downsample: str = "taming", **decoder_keys):
        super().__init__()
        _reject_unknown(type(self).__name__, decoder_keys, DECODER_ONLY_KEYS)
        _check_norm_type(norm_type)
        self.downsample_kind = downsample
        self.ch = ch
        self.temb_ch = 0
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels
        self.norm_type = norm_type
        self.norm_groups = norm_groups
        self.mid_attn = mid_attn
        self.norm_eps, self.norm_affine = float(norm_eps), bool(norm_affine)
        norm = dict(norm_type=norm_type, norm_groups=norm_groups, norm_eps=norm_eps, norm_affine=norm_affine)

        # Built in upstream's order, so the same seed gives the same initial weights.
        self.conv_in = TSConv2d(in_channels, self.ch, kernel_size=3, stride=1, padding=1)
        curr_res = resolution
        in_ch_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(self.num_res_blocks):
                block.append(TSResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout, **norm))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(TSAttnBlock(block_in, **norm))
            down = nn.Module()
            down.block = block
            down.attn = attn
            if i_level != self.num_resolutions - 1:
                down.downsample = TSDownsample(block_in, resamp_with_conv, kind=downsample)
                curr_res = curr_res // 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = TSResnetBlock(in_channels=block_in, out_channels=block_in, dropout=dropout, **norm)
        if mid_attn:
            self.mid.attn_1 = TSAttnBlock(block_in, **norm)
        self.mid.block_2 = TSResnetBlock(in_channels=block_in, out_channels=block_in, dropout=dropout, **norm)

        self.norm_out = make_norm(block_in, norm_type, norm_groups, norm_eps, norm_affine)
        self.conv_out = TSConv2d(block_in, 2 * z_channels if double_z else z_channels, kernel_size=3, stride=1,
                                 padding=1)

    @property
    def downsample_factor(self) -> int:
        """f: pixels per latent cell along each side."""
        return 2 ** (self.num_resolutions - 1)

    def latent_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """M_q (B, h, w) bool for a pixel mask (B, 1, H, W): the latents this encoder may let see
        the masked pixels (Eq. 4)."""
        return latent_mask(mask, self.downsample_factor)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"TSEncoder expects an image of shape (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        check_divisible(x.shape[2:], self.downsample_factor)
        masks = [None] * self.num_resolutions
        if mask is not None:
            pixel_mask = check_pixel_mask(mask, x) > 0  # (B, 1, H, W) bool
            if bool(pixel_mask.any()):  # an all-zero mask is the plain encoder, exactly
                masks = encoder_masks(pixel_mask, self.num_resolutions)

        with mask_memo():  # ring plans etc. once per resolution, not once per layer
            h = self.conv_in(x, masks[0])
            for i_level in range(self.num_resolutions):
                m = masks[i_level]
                down = self.down[i_level]
                for i_block in range(self.num_res_blocks):
                    h = down.block[i_block](h, m)
                    if len(down.attn) > 0:
                        h = down.attn[i_block](h, m)
                if i_level != self.num_resolutions - 1:
                    h = down.downsample(h, m)

            m = masks[-1]
            h = self.mid.block_1(h, m)
            if self.mid_attn:
                h = self.mid.attn_1(h, m)
            h = self.mid.block_2(h, m)
            h = nonlinearity(self.norm_out(h, m))
            return self.conv_out(h, m)


# ----------------------------------------------------------------------------- decoder
class Decoder(_UpstreamDecoder):
    """taming's Decoder plus keyword-only `norm_type` ("group" | "instance"), `norm_groups` and
    `mid_attn`.

    forward(z (B, z_channels, h, w)) -> (B, out_ch, h*f, w*f), as upstream. With the defaults it
    IS upstream's decoder (same modules and keys); the presets swap its GroupNorms and drop
    `mid.attn_1` (`apply_preset`). Unknown keyword arguments raise TypeError.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int] = (1, 2, 4, 8), num_res_blocks: int,
                 attn_resolutions: Sequence[int], dropout: float = 0.0, resamp_with_conv: bool = True,
                 in_channels: int, resolution: int, z_channels: int, give_pre_end: bool = False,
                 norm_type: str = "group", norm_groups: int = 32, mid_attn: bool = True, norm_eps: float = 1e-6,
                 norm_affine: bool = True, tanh_out: bool = False, **encoder_keys):
        _reject_unknown(type(self).__name__, encoder_keys, ENCODER_ONLY_KEYS)
        _check_norm_type(norm_type)
        with _constructible_norms():
            super().__init__(ch=ch, out_ch=out_ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                             attn_resolutions=attn_resolutions, dropout=dropout, resamp_with_conv=resamp_with_conv,
                             in_channels=in_channels, resolution=resolution, z_channels=z_channels,
                             give_pre_end=give_pre_end)
        _use_preset(self, norm_type, norm_groups, mid_attn, norm_eps, norm_affine)
        self.tanh_out = bool(tanh_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Upstream's decoder; with `tanh_out` (the authors' released decoders) squashed by tanh."""
        h = super().forward(z)
        return torch.tanh(h) if self.tanh_out and not self.give_pre_end else h


class Encoder(_UpstreamEncoder):
    """taming's (one-stream) Encoder with the same presets as `Decoder`: what `VQModel` builds.

    Upstream's Encoder swallows unknown keyword arguments, so a VQModel given a TS-VQGAN's
    ddconfig (iLAT*: the same weights without two-stream convolutions) would silently build
    GroupNorm(32) and a mid attention where the checkpoint has neither. This one builds the preset
    and raises TypeError on unknown keys. With the defaults it IS upstream's encoder.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int] = (1, 2, 4, 8), num_res_blocks: int,
                 attn_resolutions: Sequence[int], dropout: float = 0.0, resamp_with_conv: bool = True,
                 in_channels: int, resolution: int, z_channels: int, double_z: bool = True,
                 norm_type: str = "group", norm_groups: int = 32, mid_attn: bool = True, norm_eps: float = 1e-6,
                 norm_affine: bool = True, downsample: str = "taming", **decoder_keys):
        _reject_unknown(type(self).__name__, decoder_keys, DECODER_ONLY_KEYS)
        _check_norm_type(norm_type)
        if downsample != "taming":
            raise ValueError(f"the one-stream Encoder has taming's downsampling only, got downsample={downsample!r} "
                             "(use TSVQModel, whose TSEncoder without a mask is the plain encoder)")
        with _constructible_norms():
            super().__init__(ch=ch, out_ch=out_ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                             attn_resolutions=attn_resolutions, dropout=dropout, resamp_with_conv=resamp_with_conv,
                             in_channels=in_channels, resolution=resolution, z_channels=z_channels, double_z=double_z)
        _use_preset(self, norm_type, norm_groups, mid_attn, norm_eps, norm_affine)
