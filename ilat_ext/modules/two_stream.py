"""Two-stream layers of the TS-VQGAN encoder (iLAT, Cao et al., NeurIPS 2021, Sec. 3.1, Eq. 2-3).

Guarantee shared by every layer here: given the layer's input mask M' (B, 1, H, W) (1 = region to
edit), the output at every position that is NOT masked at the output resolution depends only on
input positions that are not masked. Stacked, they make an encoder whose unmasked latents are a
function of the unmasked pixels alone; `tests/test_two_stream.py` checks it bit for bit in float64.

- `TSConv2d` (Eq. 2-3): plain conv everywhere, except on the leaked ring M_l (positions whose
  receptive field touches the mask, `ilat_ext.masks.leaked_ring`), which takes conv(F * (1 - M')).
  The second stream is evaluated only at the ring positions (an im2col of those positions and one
  matrix product), not as a second full convolution; when the ring is a large part of the map a
  dense second convolution is cheaper and is used instead. Which path runs, and which positions
  are computed, depends on the mask only, never on the features, so the guarantee is exact.
- `MaskedGroupNorm`: statistics from unmasked positions only (the released iLAT code normalises
  over the whole map, a weak global leak; FACTS.md Sec. 1). InstanceNorm is the case
  num_groups == channels (`make_norm`).
- `TSAttnBlock`: unmasked queries attend to unmasked keys only; masked queries attend to all.
- `TSResnetBlock`, `TSDownsample`: taming's blocks built from the above.

Parameter names equal those of the taming modules they replace (`weight`, `bias`, `norm1`,
`conv1`, `nin_shortcut`, `q`, `k`, `v`, `proj_out`, ...), so state_dicts are interchangeable.
Without a mask (or with an all-zero mask) every layer is exactly the plain layer.

Masks passed to layers are bool or {0, 1} float (B, 1, H, W) at the layer's INPUT resolution
and are not re-validated here (the encoder validates the pixel mask once). Inputs must be finite:
a NaN or inf under the mask is multiplied by zero in some places, which gives NaN.
"""
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from taming.modules.diffusionmodules.model import nonlinearity

from ilat_ext.masks import downsample_mask, leaked_ring

NORM_TYPES = ("group", "instance")
RING_MODES = ("auto", "sparse", "dense")


# ----------------------------------------------------------------------------- helpers
def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask > 0


# Mask-only results (ring plans, statistics weights, attention index sets), memoised while a
# `mask_memo()` context is open: the layers of one resolution share the encoder's mask and
# compute them once per forward. Nothing here ever depends on the features.
_MEMO: ContextVar[Optional[Dict[tuple, Tuple[torch.Tensor, Any]]]] = ContextVar("ilat_mask_memo", default=None)


@contextmanager
def mask_memo() -> Iterator[None]:
    """Within this context, each layer computes what it derives from a mask tensor once per
    mask tensor (by identity). The masks passed to layers must not change inside it;
    `TSEncoder.forward` opens one around its layers, whose masks it builds itself."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


# While `whole_map_statistics()` is open, MaskedGroupNorm ignores its mask (plain GroupNorm /
# InstanceNorm statistics over the whole map): the authors' release, leak included.
_WHOLE_MAP: ContextVar[bool] = ContextVar("ilat_whole_map_statistics", default=False)


@contextmanager
def whole_map_statistics(enabled: bool = True) -> Iterator[None]:
    """Within this context every `MaskedGroupNorm` normalises with statistics over the whole map,
    masked positions included, as the released iLAT encoder does (its InstanceNorm leaks the
    masked content into every unmasked latent a little; FACTS.md Sec. 1). The convolutions stay
    two-stream. Used by the release path of `ilat_ext.apps.release_edit`; `enabled=False` is a
    no-op, so callers can pass their choice through."""
    token = _WHOLE_MAP.set(bool(enabled) or _WHOLE_MAP.get())
    try:
        yield
    finally:
        _WHOLE_MAP.reset(token)


def _memo(mask: torch.Tensor, key: tuple, build: Callable[[], Any]) -> Any:
    memo = _MEMO.get()
    if memo is None:
        return build()
    full_key = (id(mask),) + key
    if full_key not in memo:
        memo[full_key] = (mask, build())  # holding the mask keeps its id from being reused
    return memo[full_key][1]


def _check_layer_mask(x: torch.Tensor, mask: torch.Tensor, layer: str) -> None:
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] or mask.shape[2:] != x.shape[2:]:
        raise ValueError(f"{layer}: mask of shape {tuple(mask.shape)} does not fit input of shape {tuple(x.shape)}: "
                         f"expected ({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]})")


class RingPlan(NamedTuple):
    """Mask-only description of a TSConv2d's second stream (see `TSConv2d.ring_plan`)."""
    ring: torch.Tensor  # (B, H_out, W_out) bool, M_l of Eq. 2
    size: int  # R, ring positions in the batch
    b: torch.Tensor  # (R,) sample of each ring position
    oy: torch.Tensor  # (R,) output row
    ox: torch.Tensor  # (R,) output column
    samples: List[Tuple[int, torch.Tensor, torch.Tensor]]  # (sample, taps (kh*kw, n) flat input index, dropped taps)


# ----------------------------------------------------------------------------- normalisation
class MaskedGroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose statistics come from unmasked positions only.

    Per sample and group, mean and (biased) variance are taken over the unmasked positions of the
    group's channels, then applied to ALL positions (masked ones included), followed by the affine
    transform. A sample whose mask is full has nothing to protect and uses plain statistics. With
    no mask, or an all-zero mask, this is exactly nn.GroupNorm (the parent's forward runs).

    forward(x (B, C, H, W), mask (B, 1, H, W) or None) -> (B, C, H, W).
    """

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None or _WHOLE_MAP.get():
            return super().forward(x)
        _check_layer_mask(x, mask, type(self).__name__)
        mask = _as_bool(mask)
        if not _memo(mask, ("any",), lambda: bool(mask.any())):
            return super().forward(x)
        if x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type):
            # Statistics in float32, as autocast does for nn.GroupNorm.
            with torch.autocast(x.device.type, enabled=False):
                return self._masked(x.float(), mask).to(x.dtype)
        return self._masked(x, mask)

    @staticmethod
    def statistics_weights(mask: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """(keep (B, 1, H, W) in {0, 1}, positions per sample (B, 1)): the positions that give the
        statistics, i.e. the unmasked ones, or all of them for a sample whose mask is full."""
        B = mask.shape[0]
        full = mask.flatten(1).all(1)  # (B,) bool
        keep = (~mask | full.view(B, 1, 1, 1)).to(dtype)
        return keep, keep.view(B, -1).sum(1, keepdim=True)

    def _masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        G, N = self.num_groups, H * W
        keep, positions = _memo(mask, ("keep", x.dtype), lambda: self.statistics_weights(mask, x.dtype))
        count = positions * (C // G)  # (B, 1) values per group
        # Sums over unmasked positions as a matrix-vector product (no (B, C, H, W) temporary).
        # Masked entries meet an exact 0 weight, so the sums are bit-identical whatever they hold.
        mean = torch.bmm(x.reshape(B, C, N), keep.view(B, N, 1)).view(B, G, C // G).sum(-1) / count  # (B, G)
        mean_c = mean.repeat_interleave(C // G, 1).view(B, C, 1, 1)
        # Two-pass variance (no E[x^2] - E[x]^2 cancellation) over the centred, masked values.
        # Without autograd the one (B, C, H, W) buffer is reused in place for the output:
        # allocating large tensors, not arithmetic, dominates a normalisation on CPU.
        track = torch.is_grad_enabled() and (x.requires_grad or (self.affine and self.weight.requires_grad))
        centred = x - mean_c
        kept = centred * keep if track else centred.mul_(keep)
        var = torch.linalg.vector_norm(kept.reshape(B, G, -1), dim=-1).square() / count  # (B, G)
        scale = torch.rsqrt(var + self.eps).repeat_interleave(C // G, 1)  # (B, C)
        if self.affine:
            scale = scale * self.weight
        shift = -mean_c.view(B, C) * scale + (self.bias if self.affine else 0)
        if track:
            return torch.addcmul(shift.view(B, C, 1, 1), x, scale.view(B, C, 1, 1))
        return torch.addcmul(shift.view(B, C, 1, 1), x, scale.view(B, C, 1, 1), out=centred)


def make_norm(channels: int, norm_type: str = "group", groups: int = 32, eps: float = 1e-6,
              affine: bool = True) -> MaskedGroupNorm:
    """The encoder's normalisation: "group" = taming's GroupNorm(32, eps 1e-6, affine), or `groups`
    groups; "instance" = one group per channel (the iLAT face preset). Parameters are `weight`,
    `bias` whatever the groups, so checkpoints load across presets. `eps` and `affine=False`
    describe the authors' released face models (`nn.InstanceNorm2d(C)`: eps 1e-5, no parameters).

    Narrow models want fewer groups: with ch = 32, GroupNorm(32) is InstanceNorm, which
    normalises every channel of every image on its own and so throws away the flat colours the
    toy faces are made of (their autoencoder trains markedly slower; see configs/toy).

    Example::

        >>> make_norm(64, "instance").num_groups, make_norm(64).num_groups, make_norm(64, groups=4).num_groups
        (64, 32, 4)
    """
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
    if norm_type == "instance":
        if groups != 32:
            raise ValueError(f"norm_groups={groups!r} applies to norm_type 'group'; 'instance' has one group per channel")
        groups = channels
    elif isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or channels % groups:
        raise ValueError(f"norm_groups must be a positive integer that divides every normalised channel count, "
                         f"got {groups!r} for {channels} channels")
    return MaskedGroupNorm(num_groups=groups, num_channels=channels, eps=float(eps), affine=bool(affine))


# ----------------------------------------------------------------------------- convolution
class TSConv2d(nn.Conv2d):
    """Two-stream convolution (Eq. 3), a drop-in nn.Conv2d: forward(x) alone is the plain conv.

    forward(x (B, C, H, W), mask (B, 1, H, W) at the input resolution or None,
            mask_out (B, 1, H_out, W_out) or None) -> (B, O, H_out, W_out)

    Stream 1 = conv(x) everywhere; on the leaked ring M_l (Eq. 2, computed from the mask alone
    by `ilat_ext.masks.leaked_ring` with this conv's kernel, stride, padding and dilation) the
    output is replaced by stream 2 = conv(x * (1 - M')). `mask_out` defaults to
    `downsample_mask(mask, stride)` (`output_mask`), which needs H_out = H / stride; convs with
    other geometry (e.g. taming's Downsample, padded by hand) pass it explicitly.

    Stream 2 is evaluated according to `ring_mode` (an attribute, not a parameter):
    "sparse" gathers the receptive fields of the ring positions only (im2col on R positions, one
    (O x K) @ (K x R) product, R ~ a few % of the map for free-form masks); "dense" runs a second
    full convolution on x * (1 - M') (the naive form); "auto" (default) picks "dense" when the
    ring exceeds `dense_fraction` of the output positions. All choices depend on the mask only.
    Sparse and dense agree to rounding (the BLAS sums in a shape-dependent order); they are
    bit-identical under any arithmetic that is local in the output position (see the tests).
    """

    ring_mode: str = "auto"
    # The sparse product costs ~1.3x a dense conv per position (measured on CPU, 16-256 px maps);
    # the dense form costs a second conv plus two full-size passes.
    dense_fraction: float = 0.75
    max_gather: int = 2 ** 22  # elements of gathered columns per matrix product (16 MiB in float32)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"TSConv2d supports padding_mode='zeros' only, got {self.padding_mode!r}")

    # -- geometry (mask only)
    @property
    def pads(self) -> Tuple[int, int, int, int]:
        """Zero padding as (left, right, top, bottom)."""
        return tuple(int(p) for p in self._reversed_padding_repeated_twice)  # type: ignore[return-value]

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        left, right, top, bottom = self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """M' at the output resolution: max-pool with kernel = stride (`ilat_ext.masks.downsample_mask`)."""
        h, w = mask.shape[-2:]
        sh, sw = self.stride
        if h % sh or w % sw or self.output_size(h, w) != (h // sh, w // sw):
            raise ValueError(f"TSConv2d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}) "
                             f"maps {h}x{w} to {self.output_size(h, w)}, not to the input size / stride; "
                             "pass mask_out explicitly")
        return downsample_mask(mask, (sh, sw))

    def leaked_ring(self, mask: torch.Tensor, mask_out: torch.Tensor) -> torch.Tensor:
        """M_l (B, 1, H_out, W_out) bool for this conv's geometry (Eq. 2)."""
        return leaked_ring(mask, mask_out, self.kernel_size, self.stride, self.pads, self.dilation)

    def ring_plan(self, mask: torch.Tensor, mask_out: torch.Tensor) -> "RingPlan":
        """Where stream 2 is needed and what it reads (mask only; memoised inside `mask_memo()`)."""
        ring = self.leaked_ring(mask, mask_out)[:, 0]  # (B, H_out, W_out) bool
        B, H, W = mask.shape[0], mask.shape[2], mask.shape[3]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        left, _, top, _ = self.pads
        idx = ring.reshape(B, -1).nonzero()  # (R, 2) sample, flat output position; sorted by sample
        b, pos = idx[:, 0], idx[:, 1]
        oy, ox = pos // ring.shape[-1], pos % ring.shape[-1]
        iy = oy[:, None] * sh - top + torch.arange(kh, device=mask.device) * dh  # (R, kh) input rows
        ix = ox[:, None] * sw - left + torch.arange(kw, device=mask.device) * dw  # (R, kw) input cols
        inside = ((iy >= 0) & (iy < H))[:, :, None] & ((ix >= 0) & (ix < W))[:, None, :]  # (R, kh, kw)
        flat = iy.clamp(0, H - 1)[:, :, None] * W + ix.clamp(0, W - 1)[:, None, :]  # (R, kh, kw)
        # Zero padding and masked inputs both read as 0: this is F * (1 - M') of Eq. 3.
        drop = ~inside | mask.reshape(B, -1)[b[:, None, None], flat]  # (R, kh, kw)
        samples, start = [], 0
        for sample, count in enumerate(torch.bincount(b, minlength=B).tolist()):
            if count:  # taps ordered (kh, kw) x positions, as the columns of the product
                taps = slice(start, start + count)
                samples.append((sample, flat[taps].permute(1, 2, 0).reshape(kh * kw, count),
                                drop[taps].permute(1, 2, 0).reshape(kh * kw, count)))
            start += count
        return RingPlan(ring, b.numel(), b, oy, ox, samples)

    # -- forward
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                mask_out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None:
            return self._conv_forward(x, self.weight, self.bias)
        _check_layer_mask(x, mask, type(self).__name__)
        mask = _as_bool(mask)
        if mask_out is None:
            if self.kernel_size == (1, 1) and self.pads == (0, 0, 0, 0):
                # Each output reads one input, inside its own output cell: nothing can leak.
                return self._conv_forward(x, self.weight, self.bias)
            geometry = ("conv", self.kernel_size, self.stride, self.pads, self.dilation)
            plan = _memo(mask, geometry, lambda: self.ring_plan(mask, self.output_mask(mask)))
        else:
            plan = self.ring_plan(mask, _as_bool(mask_out))
        out = self._conv_forward(x, self.weight, self.bias)  # stream 1
        if plan.size == 0:  # empty mask, full mask, or a ring hidden under mask_out
            return out
        mode = self.ring_mode
        if mode not in RING_MODES:
            raise ValueError(f"ring_mode must be one of {RING_MODES}, got {mode!r}")
        if mode == "dense" or (mode == "auto" and plan.size > self.dense_fraction * plan.ring.numel()):
            stream2 = self._conv_forward(x.masked_fill(mask, 0), self.weight, self.bias)
            return torch.where(plan.ring[:, None], stream2, out)
        out[plan.b, :, plan.oy, plan.ox] = self._ring_stream2(x, plan).t()  # (R, O) into (B, O, H_out, W_out)
        return out

    def _ring_stream2(self, x: torch.Tensor, plan: "RingPlan") -> torch.Tensor:
        """Stream 2 at the ring positions only: (O, R), in the order of plan.b / oy / ox."""
        B, C = x.shape[:2]
        K = C * self.kernel_size[0] * self.kernel_size[1]
        chunk = max(1, self.max_gather // K)  # positions per product: bounds the columns' memory
        x_flat = x.reshape(B, C, -1)
        values = []
        for sample, flat, drop in plan.samples:  # flat, drop: (kh*kw, n) for this sample
            for lo in range(0, flat.shape[1], chunk):
                taps, dropped = flat[:, lo:lo + chunk], drop[:, lo:lo + chunk]
                # Columns ordered (c, kh, kw) x n, as weight.view(O, C * kh * kw) expects.
                cols = x_flat[sample].index_select(1, taps.reshape(-1))  # (C, kh*kw*n)
                cols = cols.masked_fill_(dropped.reshape(1, -1), 0)
                values.append(self._contract(cols.view(K, taps.shape[1])))  # (O, n)
        return torch.cat(values, 1)

    def _contract(self, cols: torch.Tensor) -> torch.Tensor:
        """(C/g * kh * kw * g, R) columns -> (O, R) outputs: the conv as a matrix product."""
        O, g = self.out_channels, self.groups
        weight = self.weight.reshape(g, O // g, -1)
        cols = cols.view(g, -1, cols.shape[-1])
        if self.bias is None:
            return torch.bmm(weight, cols).view(O, -1)
        return torch.baddbmm(self.bias.view(g, O // g, 1), weight, cols).view(O, -1)


def two_stream_conv_reference(conv: nn.Conv2d, x: torch.Tensor, mask: torch.Tensor,
                              mask_out: torch.Tensor) -> torch.Tensor:
    """The naive Eq. 3 with two full convolutions, for tests and documentation:
    conv(x) * (1 - M_l) + conv(x * (1 - M')) * M_l.

    Example::

        >>> conv = nn.Conv2d(1, 1, 3, padding=1, bias=False); _ = nn.init.ones_(conv.weight)
        >>> x = torch.ones(1, 1, 3, 3); m = torch.zeros(1, 1, 3, 3); m[0, 0, 1, 1] = 1
        >>> two_stream_conv_reference(conv, x, m, m)[0, 0]   # ring: in-bounds inputs minus the masked one
        tensor([[3., 5., 3.],
                [5., 9., 5.],
                [3., 5., 3.]], grad_fn=<SelectBackward0>)
    """
    mask, mask_out = _as_bool(mask), _as_bool(mask_out)
    ring = leaked_ring(mask, mask_out, conv.kernel_size, conv.stride,
                       tuple(conv._reversed_padding_repeated_twice), conv.dilation)
    return torch.where(ring, conv._conv_forward(x.masked_fill(mask, 0), conv.weight, conv.bias),
                       conv._conv_forward(x, conv.weight, conv.bias))


# ----------------------------------------------------------------------------- blocks
DOWNSAMPLE_KINDS = ("taming", "conv4x4")


class TSDownsample(nn.Module):
    """taming's Downsample (pad (0, 1, 0, 1), then 3x3 stride-2 conv, or 2x2 average pooling), or,
    with kind="conv4x4", the authors' released encoder's 4x4 stride-2 conv with padding 1 (`out_channels`
    may then differ from `in_channels`: the sketch VQGAN's channel-changing downsample).

    forward(x (B, C, H, W), mask (B, 1, H, W) or None) -> (B, C_out, H/2, W/2). The output mask is
    `downsample_mask(mask, 2)`; the conv's ring is computed on the mask padded like x (for 4x4 the
    conv pads symmetrically and TSConv2d's own geometry is exact). Average pooling reads only the
    output cell's own 2 x 2 pixels and cannot leak.
    """

    def __init__(self, in_channels: int, with_conv: bool, kind: str = "taming", out_channels: Optional[int] = None):
        super().__init__()
        if kind not in DOWNSAMPLE_KINDS:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_KINDS}, got {kind!r}")
        self.with_conv = with_conv
        self.kind = kind
        out_channels = in_channels if out_channels is None else int(out_channels)
        if out_channels != in_channels and not (with_conv and kind == "conv4x4"):
            raise ValueError("a channel-changing downsample needs kind='conv4x4' with a conv")
        if self.with_conv:
            if kind == "conv4x4":
                self.conv = TSConv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
            else:
                self.conv = TSConv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.with_conv:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.kind == "conv4x4":
            if mask is not None:
                _check_layer_mask(x, mask, type(self).__name__)
            return self.conv(x, mask)
        pad = (0, 1, 0, 1)  # no asymmetric padding in torch conv (as upstream)
        x_pad = F.pad(x, pad, mode="constant", value=0)
        if mask is None:
            return self.conv(x_pad)
        _check_layer_mask(x, mask, type(self).__name__)
        mask = _as_bool(mask)
        return self.conv(x_pad, F.pad(mask, pad), downsample_mask(mask, 2))


class TSResnetBlock(nn.Module):
    """taming's ResnetBlock without the timestep embedding (the encoder has none), two-stream.

    forward(x (B, C_in, H, W), mask (B, 1, H, W) or None) -> (B, C_out, H, W).
    """

    def __init__(self, *, in_channels: int, out_channels: Optional[int] = None, conv_shortcut: bool = False,
                 dropout: float = 0.0, norm_type: str = "group", norm_groups: int = 32, norm_eps: float = 1e-6,
                 norm_affine: bool = True):
        super().__init__()
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.use_conv_shortcut = conv_shortcut
        self.norm1 = make_norm(in_channels, norm_type, norm_groups, norm_eps, norm_affine)
        self.conv1 = TSConv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = make_norm(out_channels, norm_type, norm_groups, norm_eps, norm_affine)
        self.dropout = nn.Dropout(dropout)  # elementwise, its randomness is independent of x
        self.conv2 = TSConv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if self.in_channels != self.out_channels:
            if self.use_conv_shortcut:
                self.conv_shortcut = TSConv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
            else:
                self.nin_shortcut = TSConv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = nonlinearity(self.norm1(x, mask))
        h = self.conv1(h, mask)
        h = self.dropout(nonlinearity(self.norm2(h, mask)))
        h = self.conv2(h, mask)
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x, mask) if self.use_conv_shortcut else self.nin_shortcut(x, mask)
        return x + h


class TSAttnBlock(nn.Module):
    """taming's AttnBlock (single-head self-attention over H*W positions) with masked attention.

    forward(x (B, C, H, W), mask (B, 1, H, W) or None) -> (B, C, H, W). Unmasked queries attend
    to unmasked keys only; masked queries attend to all keys (they are the region being edited).
    Computed per sample as two dense attentions, unmasked queries x unmasked keys and masked
    queries x all keys, so no L x L mask is built and the work is |U|^2 + |M| L <= L^2. A full
    or empty mask gives plain attention, and without a mask the arithmetic is upstream's,
    operation for operation (bmm, scale, softmax, bmm).
    """

    def __init__(self, in_channels: int, norm_type: str = "group", norm_groups: int = 32, norm_eps: float = 1e-6,
                 norm_affine: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.norm = make_norm(in_channels, norm_type, norm_groups, norm_eps, norm_affine)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

    @staticmethod
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Upstream's attention maths: q (B, C, L_q), k and v (B, C, L_k) -> (B, C, L_q)."""
        w_ = torch.bmm(q.permute(0, 2, 1), k) * (int(q.shape[1]) ** (-0.5))  # (B, L_q, L_k)
        w_ = F.softmax(w_, dim=2)
        return torch.bmm(v, w_.permute(0, 2, 1))

    @staticmethod
    def query_sets(mask: torch.Tensor) -> Optional[List[Optional[Tuple[torch.Tensor, torch.Tensor]]]]:
        """Per sample, (unmasked, masked) position indices, or None where the mask is empty or
        full (plain attention); None overall when no sample needs the split. Mask only."""
        masked = mask.reshape(mask.shape[0], -1)  # (B, L) bool
        counts = masked.sum(1).tolist()
        if all(n in (0, masked.shape[1]) for n in counts):
            return None
        return [None if n in (0, masked.shape[1]) else ((~m).nonzero()[:, 0], m.nonzero()[:, 0])
                for m, n in zip(masked, counts)]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h_ = self.norm(x, mask)
        b, c, h, w = h_.shape
        q, k, v = (layer(h_).reshape(b, c, h * w) for layer in (self.q, self.k, self.v))  # (B, C, L)
        if mask is not None:
            mask = _as_bool(mask)
            sets = _memo(mask, ("attention",), lambda: self.query_sets(mask))
        if mask is None or sets is None:
            return x + self.proj_out(self.attend(q, k, v).reshape(b, c, h, w))
        samples = []
        for i, split in enumerate(sets):
            qi, ki, vi = q[i:i + 1], k[i:i + 1], v[i:i + 1]
            if split is None:
                samples.append(self.attend(qi, ki, vi))
                continue
            u, m = split
            # Unmasked queries see unmasked keys only: a function of unmasked features alone.
            out_u = self.attend(qi[:, :, u], ki[:, :, u], vi[:, :, u])  # (1, C, |U|)
            out_m = self.attend(qi[:, :, m], ki, vi)  # (1, C, |M|)
            samples.append(torch.zeros_like(qi).index_copy(2, u, out_u).index_copy(2, m, out_m))
        return x + self.proj_out(torch.cat(samples).reshape(b, c, h, w))
