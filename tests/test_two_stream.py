"""TS-VQGAN's two-stream encoder: leak-free bit for bit, and upstream's Encoder when there is no mask.

THE property: for an image x, a pixel mask m and a perturbation d that is zero wherever m = 0,
every latent with M_q = 0 is unchanged (torch.equal, float64) when x becomes x + d. Checked for
each layer alone, for both encoder presets, and shown to fail for upstream's Encoder and for
deliberately leaky variants (so the check can fail).
"""
import doctest

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from taming.modules.diffusionmodules.model import AttnBlock, Encoder, ResnetBlock
from taming.modules.diffusionmodules.model import Decoder as UpstreamDecoder

import ilat_ext.modules.two_stream as two_stream_module
from ilat_ext.masks import downsample_mask, latent_mask
from ilat_ext.modules.encoder import Decoder, TSEncoder, apply_preset
from ilat_ext.modules.two_stream import (MaskedGroupNorm, TSAttnBlock, TSConv2d, TSDownsample, TSResnetBlock,
                                         make_norm, two_stream_conv_reference)

H, W = 16, 24  # non-square on purpose
GROUP_PRESET = dict(ch=32, out_ch=3, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0,
                    resamp_with_conv=True, in_channels=3, resolution=16, z_channels=8, double_z=False)
INSTANCE_PRESET = dict(GROUP_PRESET, attn_resolutions=(), norm_type="instance", mid_attn=False)


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine every parallel
    region waits for a busy core: one thread keeps this file fast and its timing stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stroke_masks(h=H, w=W):
    """(6, 1, h, w): single pixel, one-pixel stroke, border blocks (both corners), empty, full."""
    m = torch.zeros(6, 1, h, w)
    m[0, 0, h // 2, w // 3] = 1
    m[1, 0, 3, 2:w - 3] = 1  # thin horizontal stroke
    for i in range(min(h, w) - 4):  # and a thin diagonal one
        m[1, 0, 4 + i, 4 + i] = 1
    m[2, 0, h - 3:, w - 5:] = 1  # bottom-right: the side taming's Downsample pads
    m[3, 0, :2, :1] = 1  # top-left corner
    m[5] = 1
    return m


def perturb_inside(x, mask, seed, scale=10.0):
    """x + d with d = 0 wherever mask = 0 (exactly), large inside."""
    g = torch.Generator().manual_seed(seed)
    d = scale * torch.randn(x.shape, generator=g, dtype=x.dtype)
    return x + torch.where(mask.bool(), d, torch.zeros((), dtype=x.dtype))


def assert_unchanged_outside(fn, x, mask, mask_out, trials=2, expect_leak=False):
    """Perturb x inside `mask`; outputs where mask_out == 0 must be bit-identical (or must not be,
    with expect_leak). Also checks that the perturbation reached the masked outputs."""
    with torch.no_grad():
        ref = fn(x, mask)
        keep = (mask_out == 0).expand_as(ref)
        leaked = False
        for t in range(trials):
            out = fn(perturb_inside(x, mask, seed=100 + t), mask)
            leaked |= not torch.equal(out[keep], ref[keep])
            if bool((mask_out > 0).any()):
                assert not torch.equal(out[~keep], ref[~keep]), "the perturbation never reached the output"
    assert leaked == expect_leak, "leak detected" if leaked else "no leak detected"


def latent_keep_fn(encoder):
    f = encoder.downsample_factor
    return lambda mask: latent_mask(mask, f)[:, None].float()


def build_encoder(preset, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    enc = TSEncoder(**preset).to(dtype).eval()
    with torch.no_grad():  # non-trivial affine parameters, so a wrong norm cannot hide
        for m in enc.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return enc


def plain_like(ts_encoder, preset):
    """taming's Encoder holding the TSEncoder's weights (face preset: InstanceNorm, no mid attention)."""
    preset = dict(preset)
    norm_type, mid_attn = preset.pop("norm_type", "group"), preset.pop("mid_attn", True)
    enc = apply_preset(Encoder(**preset), norm_type, mid_attn)
    enc.load_state_dict(ts_encoder.state_dict(), strict=True)
    return enc.to(next(ts_encoder.parameters()).dtype).eval()


def exact_contract(weight2d, bias, cols):
    """(O, K) x (K, N) with a fixed, shape-independent order: bias, then one term per k."""
    acc = torch.zeros(weight2d.shape[0], cols.shape[1], dtype=cols.dtype) if bias is None else \
        bias[:, None].expand(-1, cols.shape[1]).clone()
    for k in range(weight2d.shape[1]):
        acc = acc + weight2d[:, k:k + 1] * cols[k:k + 1]  # separate mul and add: no FMA contraction
    return acc


class ExactTSConv2d(TSConv2d):
    """TSConv2d whose arithmetic is local in the output position (each output is the same
    sequence of operations whatever the map size), so the sparse ring path and the naive two-conv
    form must agree bit for bit. The BLAS behind real convolutions sums in an order that depends
    on the matrix shapes, so there they agree to rounding only (tested below with a tolerance)."""

    def _contract(self, cols):
        g, O = self.groups, self.out_channels
        w = self.weight.reshape(g, O // g, -1)
        cols = cols.view(g, -1, cols.shape[-1])
        b = [None] * g if self.bias is None else self.bias.view(g, O // g)
        return torch.cat([exact_contract(w[i], b[i], cols[i]) for i in range(g)])

    def _conv_forward(self, x, weight, bias):
        top, left = self.padding
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=(top, left), stride=self.stride)
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        return torch.stack([self._contract(c) for c in cols]).view(x.shape[0], self.out_channels, ho, wo)


CONV_GEOMETRIES = [  # (kernel_size, stride, padding, dilation, groups)
    (3, 1, 1, 1, 1),
    (1, 1, 0, 1, 1),
    (4, 2, 1, 1, 1),
    (3, 2, 1, 1, 1),
    ((3, 5), 1, (1, 2), 1, 1),
    (3, 1, 2, 2, 1),
    (3, 1, 1, 1, 2),
]


def conv_case(cls, geometry, dtype=torch.float64, bias=True):
    k, s, p, d, g = geometry
    torch.manual_seed(sum(map(hash, map(str, geometry))) % 1000)
    conv = cls(4, 6, k, stride=s, padding=p, dilation=d, groups=g, bias=bias).to(dtype)
    x = torch.randn(3, 4, 8, 12, dtype=dtype)
    mask = torch.zeros(3, 1, 8, 12)
    mask[0, 0, 2, 3] = 1
    mask[0, 0, 5:, 9:] = 1
    mask[1, 0, 0, :] = 1  # a border stroke; sample 2 has no mask at all
    return conv, x, mask


# ----------------------------------------------------------------------------- docs
def test_docstring_examples():
    failures, _ = doctest.testmod(two_stream_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0


# ----------------------------------------------------------------------------- TSConv2d
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_conv_alone_is_leak_free(geometry, mode):
    conv, x, mask = conv_case(TSConv2d, geometry)
    conv.ring_mode = mode
    assert_unchanged_outside(conv, x, mask, conv.output_mask(mask))


@pytest.mark.parametrize("geometry", [g for g in CONV_GEOMETRIES if g[0] != 1])  # a 1x1 conv cannot leak
def test_plain_conv_leaks(geometry):
    conv, x, mask = conv_case(TSConv2d, geometry)
    assert_unchanged_outside(lambda x_, m: conv(x_), x, mask, conv.output_mask(mask), expect_leak=True)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_ring_equals_naive_two_convs_bit_for_bit_with_local_arithmetic(geometry, bias):
    conv, x, mask = conv_case(ExactTSConv2d, geometry, bias=bias)
    expected = two_stream_conv_reference(conv, x, mask, conv.output_mask(mask))
    conv.ring_mode = "sparse"
    assert torch.equal(conv(x, mask), expected)
    conv.max_gather = 40  # a few positions per product: chunking must not change anything
    assert torch.equal(conv(x, mask), expected)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_sparse_ring_equals_naive_two_convs_with_real_convolutions(geometry):
    conv, x, mask = conv_case(TSConv2d, geometry)
    m_out = conv.output_mask(mask)
    expected = two_stream_conv_reference(conv, x, mask, m_out)
    ring = conv.leaked_ring(mask > 0, m_out > 0).expand_as(expected)
    for mode in ("sparse", "dense", "auto"):
        conv.ring_mode = mode
        out = conv(x, mask)
        assert torch.equal(out[~ring], conv(x)[~ring])  # stream 1 off the ring, untouched
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    x32, conv32 = x.float(), conv.float()
    conv32.ring_mode = "sparse"
    torch.testing.assert_close(conv32(x32, mask), two_stream_conv_reference(conv32, x32, mask, m_out),
                               rtol=1e-5, atol=1e-5)


def test_sparse_ring_gradients_equal_the_naive_ones():
    conv, x, mask = conv_case(TSConv2d, CONV_GEOMETRIES[0])
    grads = []
    for mode in ("sparse", "dense"):
        conv.zero_grad()
        conv.ring_mode = mode
        xg = x.clone().requires_grad_()
        (conv(xg, mask) ** 2).sum().backward()
        grads.append((xg.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    small = TSConv2d(2, 3, 3, padding=1).double()
    m = torch.zeros(1, 1, 4, 5)
    m[0, 0, 1, 2] = 1
    assert torch.autograd.gradcheck(lambda t: small(t, m), torch.randn(1, 2, 4, 5, dtype=torch.float64,
                                                                       requires_grad=True))


def test_conv_without_mask_or_with_an_empty_mask_is_the_plain_conv():
    conv, x, _ = conv_case(TSConv2d, CONV_GEOMETRIES[0], dtype=torch.float32)
    plain = nn.Conv2d(4, 6, 3, padding=1)
    plain.load_state_dict(conv.state_dict(), strict=True)
    assert torch.equal(conv(x), plain(x))
    assert torch.equal(conv(x, torch.zeros(3, 1, 8, 12)), plain(x))
    assert list(conv.state_dict()) == ["weight", "bias"]


def test_conv_with_other_geometry_needs_mask_out():
    conv = TSConv2d(2, 2, 3, padding=0)
    with pytest.raises(ValueError, match="mask_out"):
        conv(torch.zeros(1, 2, 6, 6), torch.zeros(1, 1, 6, 6))
    with pytest.raises(ValueError, match=r"\(1, 1, 5, 6\).*\(1, 2, 6, 6\)"):
        conv(torch.zeros(1, 2, 6, 6), torch.zeros(1, 1, 5, 6))


@pytest.mark.parametrize("with_conv", [True, False])
def test_downsample_alone_is_leak_free_and_upstream_without_mask(with_conv):
    from taming.modules.diffusionmodules.model import Downsample
    torch.manual_seed(0)
    down = TSDownsample(4, with_conv).double()
    upstream = Downsample(4, with_conv).double()
    upstream.load_state_dict(down.state_dict(), strict=True)
    x = torch.randn(3, 4, 8, 12, dtype=torch.float64)
    _, _, mask = conv_case(TSConv2d, CONV_GEOMETRIES[0])
    assert torch.equal(down(x), upstream(x))
    assert_unchanged_outside(down, x, mask, downsample_mask(mask, 2))


# ----------------------------------------------------------------------------- normalisation
def brute_masked_group_norm(x, mask, norm):
    out = torch.empty_like(x)
    b, c = x.shape[:2]
    g = norm.num_groups
    for n in range(b):
        keep = ~mask[n, 0].bool()
        if not keep.any():
            keep = torch.ones_like(keep)
        for i in range(g):
            chans = x[n, i * c // g:(i + 1) * c // g]
            vals = chans[:, keep]
            mean, var = vals.mean(), vals.var(unbiased=False)
            out[n, i * c // g:(i + 1) * c // g] = (chans - mean) / torch.sqrt(var + norm.eps)
    return out * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("groups", [2, 8])  # group norm, and instance norm (one group per channel)
def test_masked_group_norm_uses_unmasked_statistics(groups):
    torch.manual_seed(0)
    norm = MaskedGroupNorm(groups, 8, eps=1e-6).double()
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    nn.init.uniform_(norm.bias, -0.5, 0.5)
    x = 3 + 2 * torch.randn(6, 8, 5, 7, dtype=torch.float64)
    mask = stroke_masks(5, 7)
    expected = brute_masked_group_norm(x, mask, norm)
    torch.testing.assert_close(norm(x, mask), expected, rtol=0, atol=1e-12)
    # the autograd path (no in-place buffer reuse) computes the same
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(norm(xg, mask), expected, rtol=0, atol=1e-12)
    # full-mask sample: plain statistics
    torch.testing.assert_close(norm(x, mask)[5], F.group_norm(x, groups, norm.weight, norm.bias, 1e-6)[5])
    assert_unchanged_outside(norm, x, mask, mask)


def test_masked_group_norm_without_mask_is_nn_group_norm_exactly_and_has_its_gradients():
    norm = make_norm(64, "group")
    x = torch.randn(2, 64, 4, 6)
    expected = F.group_norm(x, 32, norm.weight, norm.bias, 1e-6)
    assert torch.equal(norm(x), expected) and torch.equal(norm(x, torch.zeros(2, 1, 4, 6)), expected)
    assert list(norm.state_dict()) == ["weight", "bias"] and make_norm(64, "instance").num_groups == 64
    small = MaskedGroupNorm(2, 4).double()
    m = torch.zeros(2, 1, 3, 3)
    m[0, 0, 1, 1] = 1
    m[1] = 1
    assert torch.autograd.gradcheck(lambda t: small(t, m), torch.randn(2, 4, 3, 3, dtype=torch.float64,
                                                                       requires_grad=True))
    with pytest.raises(ValueError, match="norm_type"):
        make_norm(64, "batch")


def test_plain_group_norm_statistics_leak():
    norm = MaskedGroupNorm(2, 8).double()
    x = torch.randn(6, 8, 5, 7, dtype=torch.float64)
    mask = stroke_masks(5, 7)
    assert_unchanged_outside(lambda x_, m: norm(x_), x, mask, mask, expect_leak=True)


# ----------------------------------------------------------------------------- attention and blocks
def test_attention_alone_is_leak_free():
    torch.manual_seed(0)
    attn = TSAttnBlock(32).double()
    x = torch.randn(6, 32, 5, 7, dtype=torch.float64)
    mask = stroke_masks(5, 7)
    assert_unchanged_outside(attn, x, mask, mask)


def test_unmasked_queries_attending_to_masked_keys_leak():
    class GlobalAttention(TSAttnBlock):  # masked statistics, but every query sees every key
        def forward(self, x, mask=None):
            h_ = self.norm(x, mask)
            b, c, h, w = h_.shape
            q, k, v = (layer(h_).reshape(b, c, h * w) for layer in (self.q, self.k, self.v))
            return x + self.proj_out(self.attend(q, k, v).reshape(b, c, h, w))

    torch.manual_seed(0)
    attn = GlobalAttention(32).double()
    x = torch.randn(6, 32, 5, 7, dtype=torch.float64)
    mask = stroke_masks(5, 7)
    assert_unchanged_outside(attn, x, mask, mask, expect_leak=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_attention_matches_upstream_without_mask_and_with_an_empty_or_full_mask(dtype, tol):
    torch.manual_seed(0)
    ours, upstream = TSAttnBlock(32).to(dtype), AttnBlock(32).to(dtype)
    upstream.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 32, 6, 5, dtype=dtype)
    assert torch.equal(ours(x), upstream(x))  # operation for operation
    torch.testing.assert_close(ours(x, torch.zeros(2, 1, 6, 5)), upstream(x), rtol=tol, atol=tol)
    torch.testing.assert_close(ours(x, torch.ones(2, 1, 6, 5)), upstream(x), rtol=tol, atol=tol)


@pytest.mark.parametrize("cin,cout,conv_shortcut", [(32, 32, False), (32, 64, False), (32, 64, True)])
def test_resnet_block_alone_is_leak_free_and_upstream_without_mask(cin, cout, conv_shortcut):
    torch.manual_seed(0)
    ours = TSResnetBlock(in_channels=cin, out_channels=cout, conv_shortcut=conv_shortcut).double()
    upstream = ResnetBlock(in_channels=cin, out_channels=cout, conv_shortcut=conv_shortcut, dropout=0.0,
                           temb_channels=0).double()
    upstream.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(6, cin, 5, 7, dtype=torch.float64)
    assert torch.equal(ours(x), upstream(x, None))
    mask = stroke_masks(5, 7)
    assert_unchanged_outside(ours, x, mask, mask)


# ----------------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("preset", [GROUP_PRESET, INSTANCE_PRESET], ids=["group+attention", "instance"])
@pytest.mark.parametrize("mode", ["auto", "sparse", "dense"])
def test_encoder_is_leak_free(preset, mode):
    enc = build_encoder(preset)
    for m in enc.modules():
        if isinstance(m, TSConv2d):
            m.ring_mode = mode
    x = torch.randn(6, 3, H, W, dtype=torch.float64)
    masks = stroke_masks()
    keep = latent_keep_fn(enc)
    assert_unchanged_outside(enc, x, masks, keep(masks))
    # a batch of random free-form masks, different per sample
    from ilat_ext.data.mask_shapes import free_form_mask
    import numpy as np
    rng = np.random.default_rng(0)
    free = torch.from_numpy(np.stack([free_form_mask(H, W, rng, area_range=(0.05, 0.3)) for _ in range(3)]))[:, None]
    assert_unchanged_outside(enc, x[:3], free, keep(free))


def test_encoder_is_leak_free_in_training_mode_with_dropout():
    enc = build_encoder(dict(GROUP_PRESET, dropout=0.5)).train()
    x = torch.randn(6, 3, H, W, dtype=torch.float64)
    masks = stroke_masks()

    def seeded(x_, m):  # the same dropout draws for both inputs
        torch.manual_seed(7)
        return enc(x_, m)
    assert_unchanged_outside(seeded, x, masks, latent_keep_fn(enc)(masks))


@pytest.mark.parametrize("preset", [GROUP_PRESET, INSTANCE_PRESET], ids=["group+attention", "instance"])
def test_upstream_encoder_with_the_same_weights_leaks(preset):
    enc = build_encoder(preset)
    plain = plain_like(enc, preset)
    x = torch.randn(6, 3, H, W, dtype=torch.float64)
    masks = stroke_masks()
    assert_unchanged_outside(lambda x_, m: plain(x_), x, masks, latent_keep_fn(enc)(masks), expect_leak=True)


class PlainStatisticsNorm(MaskedGroupNorm):
    def forward(self, x, mask=None):
        return nn.GroupNorm.forward(self, x)


class OneStreamConv(TSConv2d):
    def forward(self, x, mask=None, mask_out=None):
        return self._conv_forward(x, self.weight, self.bias)


@pytest.mark.parametrize("leaky_cls,base_cls", [(PlainStatisticsNorm, MaskedGroupNorm), (OneStreamConv, TSConv2d)],
                         ids=["plain-norm-statistics", "one-stream-conv"])
def test_leak_check_catches_a_leaky_encoder(leaky_cls, base_cls):
    enc = build_encoder(INSTANCE_PRESET)
    for m in enc.modules():
        if type(m) is base_cls:
            m.__class__ = leaky_cls
    x = torch.randn(6, 3, H, W, dtype=torch.float64)
    masks = stroke_masks()
    assert_unchanged_outside(enc, x, masks, latent_keep_fn(enc)(masks), expect_leak=True)


def test_encoder_without_mask_is_upstream_with_its_state_dict():
    torch.manual_seed(0)
    upstream = Encoder(**GROUP_PRESET)
    torch.manual_seed(1)
    ours = TSEncoder(**GROUP_PRESET)
    result = ours.load_state_dict(upstream.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, H, W)
    expected = upstream(x)
    for mask in (None, torch.zeros(2, 1, H, W), torch.zeros(2, 1, H, W, dtype=torch.bool)):
        torch.testing.assert_close(ours(x, mask), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x, torch.ones(2, 1, H, W)), expected, rtol=1e-4, atol=1e-4)  # full mask


def test_face_preset_without_mask_is_upstream_with_instance_norm_and_no_attention():
    ours = build_encoder(INSTANCE_PRESET, dtype=torch.float32)
    upstream = plain_like(ours, INSTANCE_PRESET)
    x = torch.randn(2, 3, H, W)
    torch.testing.assert_close(ours(x), upstream(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x, torch.zeros(2, 1, H, W)), upstream(x), rtol=1e-5, atol=1e-5)


def test_encoder_keys_and_initialisation_are_upstreams():
    torch.manual_seed(0)
    upstream = Encoder(**GROUP_PRESET)
    torch.manual_seed(0)
    ours = TSEncoder(**GROUP_PRESET)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), upstream.state_dict().values()))
    face = TSEncoder(**INSTANCE_PRESET)  # no attention anywhere: no attention keys
    assert list(face.state_dict()) == [k for k in upstream.state_dict() if "attn" not in k]
    assert all(m.num_groups == m.num_channels for m in face.modules() if isinstance(m, nn.GroupNorm))
    no_mid = TSEncoder(**GROUP_PRESET, mid_attn=False)
    assert list(no_mid.state_dict()) == [k for k in upstream.state_dict() if not k.startswith("mid.attn_1.")]


def test_encoder_arguments():
    with pytest.raises(TypeError, match="attn_resolution"):
        TSEncoder(**{k: v for k, v in GROUP_PRESET.items() if k != "attn_resolutions"}, attn_resolution=(8,),
                  attn_resolutions=())
    with pytest.raises(ValueError, match="norm_type"):
        TSEncoder(**GROUP_PRESET, norm_type="batch")
    TSEncoder(**GROUP_PRESET, give_pre_end=False)  # the decoder's key in the same ddconfig


@pytest.mark.parametrize("x_shape,mask_shape,pattern", [
    ((2, 3, 16, 24), (2, 3, 16, 24), r"\(B, 1, H, W\).*\(2, 3, 16, 24\)"),
    ((2, 3, 16, 24), (2, 16, 24), r"\(B, 1, H, W\).*\(2, 16, 24\)"),
    ((2, 3, 16, 24), (2, 1, 16, 20), r"\(2, 1, 16, 20\).*\(2, 3, 16, 24\)"),
    ((2, 3, 16, 24), (1, 1, 16, 24), r"\(1, 1, 16, 24\).*\(2, 3, 16, 24\)"),
    ((2, 3, 18, 24), None, r"\(18, 24\).*factor 4"),
    ((2, 1, 16, 24), None, r"\(B, 3, H, W\).*\(2, 1, 16, 24\)"),
])
def test_encoder_rejects_bad_inputs_naming_the_shapes(x_shape, mask_shape, pattern):
    enc = TSEncoder(**GROUP_PRESET)
    mask = None if mask_shape is None else torch.zeros(mask_shape)
    with pytest.raises(ValueError, match=pattern):
        enc(torch.zeros(x_shape), mask)
    with pytest.raises(ValueError, match=r"binary.*0\.5"):
        enc(torch.zeros(2, 3, 16, 24), torch.full((2, 1, 16, 24), 0.5))


# ----------------------------------------------------------------------------- decoder
def test_decoder_defaults_are_upstream_and_face_preset_has_instance_norm_and_no_attention():
    ddconfig = {k: v for k, v in GROUP_PRESET.items()}
    torch.manual_seed(0)
    upstream = UpstreamDecoder(**ddconfig)
    torch.manual_seed(0)
    ours = Decoder(**ddconfig)  # double_z (an encoder key) is accepted
    assert list(ours.state_dict()) == list(upstream.state_dict())
    z = torch.randn(1, 8, 4, 6)
    assert torch.equal(ours(z), upstream(z))
    face = Decoder(**INSTANCE_PRESET)
    norms = [m for m in face.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels for m in norms)
    assert not any(".attn" in k for k in face.state_dict())
    assert face(z).shape == (1, 3, H, W)
    with pytest.raises(TypeError, match="z_channel"):
        Decoder(**ddconfig, z_channel=8)


def test_encoder_runs_under_autocast_with_float32_norm_statistics():
    torch.manual_seed(0)
    enc = TSEncoder(**GROUP_PRESET).eval()
    x = torch.randn(2, 3, H, W)
    masks = stroke_masks()[:2]
    expected = enc(x, masks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(x, masks)
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_encoder_memo_of_mask_only_results_changes_nothing(monkeypatch):
    enc = build_encoder(GROUP_PRESET)
    x = torch.randn(6, 3, H, W, dtype=torch.float64)
    masks = stroke_masks()
    with_memo = enc(x, masks)
    monkeypatch.setattr(two_stream_module, "_memo", lambda mask, key, build: build())
    assert torch.equal(enc(x, masks), with_memo)
    with torch.inference_mode():
        assert torch.equal(enc(x, masks), with_memo)
