"""Encoder and decoder of the authors' released sketch VQGAN (iLAT, Cao et al. 2021, Sec. 4).

The FFHQ sketch VQGAN of the release (`sketch_ffhq_V1`) is not taming's layout: its encoder opens
with a 13 x 13 convolution on a reflect-padded input, and each level changes width in its 4 x 4
stride-2 downsampling FIRST, then runs constant-width residual blocks; its decoder runs
constant-width blocks at each level and changes width in the nearest x2 upsampling + 3 x 3 conv
LAST, and ends with tanh. Parameter names are the release's (`conv_in.1.*`, `down.{i}.downsample.conv.*`,
`down.{i}.block.{j}.*`, `mid.block_{1,2}.*`, `up.{i}.block.{j}.*`, `up.{i}.upsample.conv.*`,
`conv_out.*`), so `scripts/convert_release.py` maps their weights one to one. There is no
attention anywhere (the release's `use_attention: False`); sketches carry no mask.

Both take the ddconfig of `ilat_ext.modules.encoder` (unknown keys raise TypeError) and build
their residual blocks from `TSResnetBlock` (without a mask it is the plain block).

    SketchEncoder.forward(x (B, in_channels, H, W)) -> (B, z_channels, H/f, W/f), f = 2 ** (len(ch_mult) - 1)
    SketchDecoder.forward(z (B, z_channels, h, w)) -> (B, out_ch, h*f, w*f) in (-1, 1)
"""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from taming.modules.diffusionmodules.model import nonlinearity

from ilat_ext.modules.encoder import DECODER_ONLY_KEYS, ENCODER_ONLY_KEYS, _check_norm_type, _reject_unknown
from ilat_ext.modules.two_stream import TSDownsample, TSResnetBlock, make_norm

# keys of the shared ddconfig that the sketch coder does not use (it has no attention and no
# choice of downsampling: the release's is built in)
_UNUSED = frozenset({"attn_resolutions", "resamp_with_conv", "mid_attn", "downsample", "double_z", "give_pre_end",
                     "tanh_out", "norm_groups"})


class ReflectPadConv(nn.Sequential):
    """ReflectionPad2d(k // 2) then a k x k conv (keys `1.weight`, `1.bias`, as the release's Sequential);
    `in_channels` / `out_channels` are the conv's, like an nn.Conv2d's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 13):
        super().__init__(nn.ReflectionPad2d(kernel_size // 2), nn.Conv2d(in_channels, out_channels, kernel_size))

    @property
    def in_channels(self) -> int:
        return self[1].in_channels

    @property
    def out_channels(self) -> int:
        return self[1].out_channels


class ChannelUpsample(nn.Module):
    """Nearest x2, then a 3 x 3 conv that may change the width (the release's `Upsample_inout`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _norm_kwargs(norm_type: str, norm_eps: float, norm_affine: bool) -> dict:
    _check_norm_type(norm_type)
    return dict(norm_type=norm_type, norm_eps=norm_eps, norm_affine=norm_affine)


class SketchEncoder(nn.Module):
    """The release's sketch encoder: reflect-pad 6 + 13 x 13 conv, then per level a channel-changing
    4 x 4 stride-2 downsample followed by `num_res_blocks` blocks at the new width, two middle blocks,
    norm, swish, 3 x 3 conv to z_channels. Widths ch * ch_mult[i]; len(ch_mult) - 1 downsamplings."""

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int, in_channels: int,
                 resolution: int, z_channels: int, dropout: float = 0.0, norm_type: str = "instance",
                 norm_eps: float = 1e-5, norm_affine: bool = False, **other_keys):
        super().__init__()
        _reject_unknown(type(self).__name__, other_keys, _UNUSED | DECODER_ONLY_KEYS | ENCODER_ONLY_KEYS)
        if other_keys.get("double_z"):
            raise ValueError("the sketch encoder has no double_z output")
        norm = _norm_kwargs(norm_type, norm_eps, norm_affine)
        self.ch, self.in_channels, self.resolution = ch, in_channels, resolution
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = ReflectPadConv(in_channels, ch, 13)
        self.down = nn.ModuleList()
        for i in range(self.num_resolutions - 1):
            level = nn.Module()
            width_in, width = ch * ch_mult[i], ch * ch_mult[i + 1]
            level.downsample = TSDownsample(width_in, True, kind="conv4x4", out_channels=width)
            level.block = nn.ModuleList([TSResnetBlock(in_channels=width, out_channels=width, dropout=dropout, **norm)
                                         for _ in range(num_res_blocks)])
            self.down.append(level)
        width = ch * ch_mult[-1]
        self.mid = nn.Module()
        self.mid.block_1 = TSResnetBlock(in_channels=width, out_channels=width, dropout=dropout, **norm)
        self.mid.block_2 = TSResnetBlock(in_channels=width, out_channels=width, dropout=dropout, **norm)
        self.norm_out = make_norm(width, norm_type, eps=norm_eps, affine=norm_affine)
        self.conv_out = nn.Conv2d(width, z_channels, kernel_size=3, stride=1, padding=1)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.num_resolutions - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SketchEncoder expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h = self.conv_in(x)
        for level in self.down:
            h = level.downsample(h)
            for block in level.block:
                h = block(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class SketchDecoder(nn.Module):
    """The release's sketch decoder: 3 x 3 conv from z_channels, two middle blocks, then per level
    (coarse to fine) `num_res_blocks + 1` blocks at the level's width and a channel-changing
    nearest x2 + 3 x 3 conv; norm, swish, 3 x 3 conv to out_ch, tanh. `up[0]` is the finest level."""

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int, in_channels: int,
                 resolution: int, z_channels: int, dropout: float = 0.0, norm_type: str = "instance",
                 norm_eps: float = 1e-5, norm_affine: bool = False, **other_keys):
        super().__init__()
        _reject_unknown(type(self).__name__, other_keys, _UNUSED | DECODER_ONLY_KEYS | ENCODER_ONLY_KEYS)
        norm = _norm_kwargs(norm_type, norm_eps, norm_affine)
        self.ch, self.resolution = ch, resolution
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, width, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = TSResnetBlock(in_channels=width, out_channels=width, dropout=dropout, **norm)
        self.mid.block_2 = TSResnetBlock(in_channels=width, out_channels=width, dropout=dropout, **norm)
        self.up = nn.ModuleList()
        for i in range(1, self.num_resolutions):
            level = nn.Module()
            width_out = ch * ch_mult[-i - 1]
            level.block = nn.ModuleList([TSResnetBlock(in_channels=width, out_channels=width, dropout=dropout, **norm)
                                         for _ in range(num_res_blocks + 1)])
            level.upsample = ChannelUpsample(width, width_out)
            self.up.insert(0, level)
            width = width_out
        self.norm_out = make_norm(width, norm_type, eps=norm_eps, affine=norm_affine)
        self.conv_out = nn.Conv2d(width, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            h = level.upsample(h)
        return torch.tanh(self.conv_out(nonlinearity(self.norm_out(h))))
