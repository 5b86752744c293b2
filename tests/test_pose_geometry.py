"""Pose geometry, pure functions against loops written out with floats and complex numbers:
`limb_map` (each limb's cover of the cell centres), `limb_warp` (cell -> reference cell along the
limb) and `warp_image` (the reference frame with its limbs moved to the target pose, pixel by pixel).
"""
import math

import pytest
import torch

from ilat_ext.pose_geometry import L_ELBOW, L_SHOULDER, L_WRIST, LIMBS, limb_map, limb_warp, warp_image


def _segment_cover(px, py, ax, ay, bx, by, reach):
    """max(0, 1 - distance(point, segment ab) / reach), written out with floats."""
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else min(1.0, max(0.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    d = math.hypot(px - (ax + t * dx), py - (ay + t * dy))
    return max(0.0, 1.0 - d / reach)


@pytest.mark.parametrize("h, w, reach", [(8, 8, 1.0), (4, 6, 1.5)])
def test_limb_map_is_each_limbs_cover_of_the_cell_centres(h, w, reach):
    """`limb_map` against a loop over cells and limbs; limbs with an invisible end are all zero, and
    a limb through cell centres covers exactly those cells with 1."""
    g = torch.Generator().manual_seed(3)
    pose = torch.rand(2, 13, 3, generator=g)
    pose[..., 2] = 1.0
    pose[1, 4] = 0.0                                     # r_elbow invisible: both its limbs vanish
    pose[0, 1, :2] = pose[0, 3, :2]                      # a zero-length limb (l_shoulder = l_elbow)
    got = limb_map(pose, h, w, reach)
    assert got.shape == (2, len(LIMBS), h, w)
    for b in range(2):
        for k, (a, e) in enumerate(LIMBS):
            visible = pose[b, a, 2] > 0 and pose[b, e, 2] > 0
            ax, ay, bx, by = (float(pose[b, a, 0]) * w, float(pose[b, a, 1]) * h,
                              float(pose[b, e, 0]) * w, float(pose[b, e, 1]) * h)
            for r in range(h):
                for q in range(w):
                    want = _segment_cover(q + 0.5, r + 0.5, ax, ay, bx, by, reach) if visible else 0.0
                    assert abs(float(got[b, k, r, q]) - want) < 1e-5, (b, k, r, q)
    assert got[1, [k for k, limb in enumerate(LIMBS) if 4 in limb]].abs().sum() == 0
    flat = torch.zeros(1, 13, 3)                         # l_shoulder -> l_elbow along row 2's centres
    flat[0, 1] = torch.tensor([0.5 / w, 2.5 / h, 1.0])
    flat[0, 3] = torch.tensor([3.5 / w, 2.5 / h, 1.0])
    limb = limb_map(flat, h, w, 1.0)[0, LIMBS.index((1, 3))]
    assert torch.equal(limb[2, :4], torch.ones(4)) and limb.sum() == 4
    with pytest.raises(ValueError, match=r"must be \(B, 13, 3\)"):
        limb_map(torch.zeros(1, 12, 3), h, w)


def _warp_reference(target, reference, h, w, reach=1.0):
    """`limb_warp` written out with complex numbers: per cell, the set of (source, weight) pairs of
    the limbs that tie for the largest cover (any of them is a right answer)."""
    answers = []
    for b in range(target.shape[0]):
        cells = []
        for r in range(h):
            for q in range(w):
                p = complex(q + 0.5, r + 0.5)
                options = []
                for a, e in LIMBS:
                    if min(float(target[b, a, 2]), float(target[b, e, 2]), float(reference[b, a, 2]),
                           float(reference[b, e, 2])) <= 0:
                        continue
                    at, bt = (complex(float(P[b, j, 0]) * w, float(P[b, j, 1]) * h) for P, j in
                              ((target, a), (target, e)))
                    ar, br = (complex(float(P[b, j, 0]) * w, float(P[b, j, 1]) * h) for P, j in
                              ((reference, a), (reference, e)))
                    cover = _segment_cover(p.real, p.imag, at.real, at.imag, bt.real, bt.imag, reach)
                    lt, lr = abs(bt - at), abs(br - ar)
                    ut = (bt - at) / lt if lt > 1e-6 else 1 + 0j
                    ur = (br - ar) / lr if lr > 1e-6 else 1 + 0j
                    local = (p - at) / ut                                  # along + i * beside
                    on = min(max(local.real, 0.0), lt)
                    along = (on / lt if lt > 1e-6 else 0.0) * lr + local.real - on
                    moved = ar + complex(along, local.imag) * ur
                    row, col = min(max(math.floor(moved.imag), 0), h - 1), min(max(math.floor(moved.real), 0), w - 1)
                    options.append((cover, row * w + col))
                best = max([c for c, _ in options], default=0.0)
                if best <= 0:
                    cells.append(({r * w + q}, 0.0))
                else:
                    cells.append(({s for c, s in options if c >= best - 1e-6}, best))
        answers.append(cells)
    return answers


@pytest.mark.parametrize("h, w, reach", [(8, 8, 1.0), (6, 10, 1.5)])
def test_limb_warp_matches_a_loop_over_cells_and_limbs(h, w, reach):
    """`limb_warp` against a complex-number reference per cell and limb; limbs invisible in either
    pose are skipped; the same pose in both maps every cell to itself."""
    g = torch.Generator().manual_seed(11)
    target, reference = torch.rand(3, 13, 3, generator=g), torch.rand(3, 13, 3, generator=g)
    target[..., 2], reference[..., 2] = 1.0, 1.0
    target[1, 4, 2] = 0.0                                # r_elbow hidden in the target only
    reference[2, 9, 2] = 0.0                             # r_hip hidden in the reference only
    reference[0, 5, :2] = reference[0, 3, :2]            # a zero-length reference forearm
    target[2, 1, :2] = target[2, 3, :2]                  # a zero-length target upper arm
    source, weight = limb_warp(target, reference, h, w, reach)
    assert source.shape == weight.shape == (3, h * w) and source.dtype == torch.long
    for b, cells in enumerate(_warp_reference(target, reference, h, w, reach)):
        for j, (sources, best) in enumerate(cells):
            assert int(source[b, j]) in sources, (b, j, int(source[b, j]), sources)
            assert abs(float(weight[b, j]) - best) < 1e-5, (b, j)
    assert int((weight > 0).sum()) > h * w // 2                                       # the check saw limbs
    same_source, same_weight = limb_warp(target, target, h, w, reach)
    assert torch.equal(same_source, torch.arange(h * w).expand(3, -1))
    torch.testing.assert_close(same_weight, limb_map(target, h, w, reach).amax(1).flatten(1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"reference pose of shape \(3, 12, 3\)"):
        limb_warp(target, reference[:, :12], h, w)
    with pytest.raises(ValueError, match="3 target poses but 2 reference poses"):
        limb_warp(target, reference[:2], h, w)


def test_limb_warp_sends_a_raised_forearm_to_the_hanging_one():
    """Reference: the left arm hangs down; target: the forearm points right. The cells along the
    raised forearm take their tokens from the cells of the hanging forearm, in the same order."""
    side = 16
    reference = torch.zeros(1, 13, 3)
    reference[0, L_SHOULDER] = torch.tensor([0.5, 0.3, 1.0])
    reference[0, L_ELBOW] = torch.tensor([0.5, 0.5, 1.0])
    reference[0, L_WRIST] = torch.tensor([0.5, 0.75, 1.0])
    target = reference.clone()
    target[0, L_WRIST] = torch.tensor([0.75, 0.5, 1.0])
    source, weight = limb_warp(target, reference, side, side)
    forearm_row = 7                                      # centres 0.5 cells above the raised forearm (y = 8)
    rows, cols = [], []
    for col in range(9, 12):
        j = forearm_row * side + col
        assert float(weight[0, j]) == pytest.approx(0.5)
        r, q = divmod(int(source[0, j]), side)
        rows.append(r), cols.append(q)
    assert cols == [8, 8, 8]            # beside the hanging forearm (x = 8), on the side the turn takes them
    assert rows == sorted(rows) and rows[0] >= 8 and rows[-1] <= 12 and len(set(rows)) == 3
    assert float(weight[0, 2 * side + 2]) == 0 and int(source[0, 2 * side + 2]) == 2 * side + 2   # far away: itself


def test_warp_image_moves_a_raised_forearm_pixel_by_pixel():
    """An image whose channels are each pixel's own row and column shows where every pixel of the
    warped image came from: the pixels along the raised forearm come from the hanging forearm, one
    pixel per pixel in the same order, on the side the turn takes them; pixels far from the target
    limbs stay; the same pose in both leaves the image unchanged."""
    side = 32
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                indexing="ij")
    image = torch.stack([rows, cols, rows * side + cols])[None]          # (1, 3, 32, 32)
    reference = torch.zeros(1, 13, 3)
    reference[0, L_SHOULDER] = torch.tensor([0.5, 0.3, 1.0])
    reference[0, L_ELBOW] = torch.tensor([0.5, 0.5, 1.0])                 # (16, 16) px
    reference[0, L_WRIST] = torch.tensor([0.5, 0.75, 1.0])                # hangs to (16, 24)
    target = reference.clone()
    target[0, L_WRIST] = torch.tensor([0.75, 0.5, 1.0])                   # raised to (24, 16)
    warped = warp_image(image, target, reference, reach=2.0)
    assert warped.shape == image.shape
    for k in range(1, 8):
        # the pixel k along the raised forearm, half a pixel below it, comes from the pixel k along
        # the hanging forearm, half a pixel to its left (the raised forearm is the hanging one
        # turned anticlockwise on screen, so "below" turns into "left")
        assert (int(warped[0, 0, 16, 16 + k]), int(warped[0, 1, 16, 16 + k])) == (16 + k, 15), k
        assert (int(warped[0, 0, 15, 16 + k]), int(warped[0, 1, 15, 16 + k])) == (16 + k, 16), k
    far = limb_warp(target, reference, side, side, 2.0)[1][0].view(side, side) == 0
    assert far.float().mean() > 0.5
    assert torch.equal(warped[0][:, far], image[0][:, far])
    assert torch.equal(warp_image(image, reference, reference, reach=2.0), image)
    with pytest.raises(ValueError, match=r"image of shape \(3, 32, 32\) must be \(B, C, H, W\)"):
        warp_image(image[0], target, reference, 2.0)
    with pytest.raises(ValueError, match="2 poses for 1 images"):
        warp_image(image, target.expand(2, -1, -1), reference.expand(2, -1, -1), 2.0)
