"""ilat_ext.masks: every mask rule against a brute-force loop, and the validators' messages."""
import doctest
import itertools

import pytest
import torch

import ilat_ext.masks as masks_module
from ilat_ext.masks import (check_divisible, check_pixel_mask, downsample_mask, encoder_masks, latent_mask,
                            leaked_ring, receptive_field_mask)


def random_masks(b, h, w, p, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 1, h, w, generator=g) < p).float()


def brute_downsample(mask, f):
    b, _, h, w = mask.shape
    out = torch.zeros(b, 1, h // f, w // f)
    for n, i, j in itertools.product(range(b), range(h // f), range(w // f)):
        out[n, 0, i, j] = float(bool(mask[n, 0, i * f:(i + 1) * f, j * f:(j + 1) * f].any()))
    return out


def brute_touched(mask, k, s, pads, d):
    """Loop over output positions and kernel taps: does any tap read a masked, in-bounds pixel?"""
    (kh, kw), (sh, sw), (dh, dw) = k, s, d
    left, right, top, bottom = pads
    b, _, h, w = mask.shape
    ho, wo = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1
    out = torch.zeros(b, 1, ho, wo, dtype=torch.bool)
    for n, i, j in itertools.product(range(b), range(ho), range(wo)):
        for a, c in itertools.product(range(kh), range(kw)):
            y, x = i * sh - top + a * dh, j * sw - left + c * dw
            if 0 <= y < h and 0 <= x < w and mask[n, 0, y, x] > 0:
                out[n, 0, i, j] = True
    return out


def test_docstring_examples():
    failures, _ = doctest.testmod(masks_module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert failures == 0


@pytest.mark.parametrize("f", [1, 2, 4])
def test_downsample_mask_matches_loop_over_cells(f):
    m = random_masks(3, 8, 12, 0.1, seed=f)
    assert torch.equal(downsample_mask(m, f), brute_downsample(m, f))
    assert torch.equal(downsample_mask(m > 0, f), brute_downsample(m, f) > 0)  # bool in, bool out


def test_encoder_masks_and_latent_mask_match_loops():
    m = random_masks(2, 16, 8, 0.05, seed=3)
    levels = encoder_masks(m, 4)
    assert [tuple(l.shape) for l in levels] == [(2, 1, 16, 8), (2, 1, 8, 4), (2, 1, 4, 2), (2, 1, 2, 1)]
    for i, level in enumerate(levels):
        assert torch.equal(level, brute_downsample(m, 2 ** i))
    lat = latent_mask(m, 8)
    assert lat.dtype == torch.bool and lat.shape == (2, 2, 1)
    assert torch.equal(lat, brute_downsample(m, 8)[:, 0] > 0)


def test_single_pixel_masks_exactly_its_cell():
    m = torch.zeros(1, 1, 16, 16)
    m[0, 0, 9, 4] = 1
    lat = latent_mask(m, 4)
    assert lat.sum() == 1 and lat[0, 2, 1]


GEOMETRIES = [  # kernel, stride, padding (left, right, top, bottom), dilation
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((3, 3), (2, 2), (0, 1, 0, 1), (1, 1)),  # taming's Downsample
    ((4, 4), (2, 2), (1, 1, 1, 1), (1, 1)),  # the released iLAT encoder's downsampling
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((3, 5), (1, 1), (2, 2, 1, 1), (1, 1)),
    ((3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    ((3, 3), (1, 2), (1, 1, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("k,s,pads,d", GEOMETRIES)
def test_receptive_field_and_leaked_ring_match_loops(k, s, pads, d):
    m = random_masks(2, 8, 10, 0.08, seed=sum(k) + sum(s))
    m[1, 0, 7, 9] = 1  # touches the bottom-right border (the side Downsample pads)
    touched = receptive_field_mask(m, k, s, pads, d)
    assert torch.equal(touched, brute_touched(m, k, s, pads, d))
    m_out = torch.zeros_like(touched, dtype=torch.float)
    if touched.shape[2:] == (m.shape[2] // s[0], m.shape[3] // s[1]):
        m_out = downsample_mask(m, s)
    ring = leaked_ring(m, m_out, k, s, pads, d)
    assert torch.equal(ring, brute_touched(m, k, s, pads, d) & (m_out == 0))


def test_ring_of_one_pixel_is_its_3x3_neighbourhood_clipped_at_the_border():
    m = torch.zeros(1, 1, 5, 5)
    m[0, 0, 0, 4] = 1  # top-right corner
    ring = leaked_ring(m, m, 3, padding=1)[0, 0]
    assert ring.nonzero().tolist() == [[0, 3], [1, 3], [1, 4]]


def test_leaked_ring_rejects_a_mask_out_of_the_wrong_size():
    m = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\).*\(1, 1, 4, 4\)"):
        leaked_ring(m, m, 3, stride=2, padding=1)


def test_empty_and_full_masks_have_no_ring():
    for fill in (0.0, 1.0):
        m = torch.full((2, 1, 8, 8), fill)
        assert not leaked_ring(m, m, 3, padding=1).any()
        assert not leaked_ring(m, downsample_mask(m, 2), 3, stride=2, padding=(0, 1, 0, 1)).any()


# ----------------------------------------------------------------------------- validators
def test_check_pixel_mask_accepts_bool_int_float_and_returns_the_image_dtype():
    image = torch.zeros(2, 3, 4, 6, dtype=torch.float64)
    for mask in (torch.ones(2, 1, 4, 6, dtype=torch.bool), torch.ones(2, 1, 4, 6, dtype=torch.int64),
                 torch.ones(2, 1, 4, 6, dtype=torch.float16)):
        out = check_pixel_mask(mask, image)
        assert out.dtype == torch.float64 and out.shape == (2, 1, 4, 6) and bool((out == 1).all())
    assert check_pixel_mask(torch.zeros(1, 1, 2, 2, dtype=torch.bool)).dtype == torch.float32


@pytest.mark.parametrize("shape,pattern", [
    ((2, 3, 4, 6), r"\(B, 1, H, W\).*\(2, 3, 4, 6\)"),  # RGB-shaped mask
    ((2, 4, 6), r"\(B, 1, H, W\).*\(2, 4, 6\)"),  # no channel axis
    ((2, 1, 4, 5), r"\(2, 1, 4, 5\).*\(2, 3, 4, 6\).*\(2, 1, 4, 6\)"),  # spatial size
    ((3, 1, 4, 6), r"\(3, 1, 4, 6\).*\(2, 3, 4, 6\)"),  # batch size
])
def test_check_pixel_mask_names_the_shapes(shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_pixel_mask(torch.zeros(shape), torch.zeros(2, 3, 4, 6))


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, float("nan")])
def test_check_pixel_mask_names_a_non_binary_value(bad):
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 2, 1] = bad
    with pytest.raises(ValueError, match=r"binary.*" + ("nan" if bad != bad else repr(bad).replace(".", r"\."))):
        check_pixel_mask(mask)


def test_check_pixel_mask_rejects_non_tensors():
    with pytest.raises(ValueError, match="torch.Tensor"):
        check_pixel_mask([[0, 1]])


def test_check_divisible():
    check_divisible((256, 192), 16)
    with pytest.raises(ValueError, match=r"\(250, 256\).*factor 16"):
        check_divisible((250, 256), 16)
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\).*factor 3"):
        downsample_mask(torch.zeros(1, 1, 8, 8), 3)
    with pytest.raises(ValueError, match=r"\(12, 16\).*factor 8"):
        encoder_masks(torch.zeros(1, 1, 12, 16), 4)
