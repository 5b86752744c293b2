"""Pose geometry (`ilat_ext.pose_geometry`), pure functions against brute-force references: pose
validation, skeleton drawing and pose masks against per-pixel distances; and on a grid, against
loops written out with floats and complex numbers:
`limb_map` (each limb's cover of the cell centres), `limb_warp` (cell -> reference cell along the
limb) and `warp_image` (the reference frame with its limbs moved to the target pose, pixel by pixel).
"""
import doctest
import math

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

import ilat_ext.pose_geometry as pose_geometry
from ilat_ext.pose_geometry import (
    JOINT_NAMES, LIMBS, L_ELBOW, L_SHOULDER, L_WRIST, TORSO, check_mask_kwargs, check_pose, clean_pose, draw_skeleton_overlay, limb_map, limb_warp, pair_mask, pose_dilation_kernel, pose_mask, render_skeleton, warp_image,
)
from tests.helpers import standing_pose


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


def _segment_distance(px, py, a, b):
    """Distance of points (px, py) to segment a-b (all in corner-convention coordinates)."""
    d = b - a
    t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
    return np.hypot(px - (a[0] + t * d[0]), py - (a[1] + t * d[1]))


def _distance_to_skeleton(pose, height, width):
    """Per pixel centre, distance to the nearest drawn bone (LIMBS + neck) and visible joint."""
    py, px = np.mgrid[0:height, 0:width] + 0.5
    vis = pose[:, 2] > 0
    bones = [(pose[a, :2], pose[b, :2]) for a, b in LIMBS if vis[a] and vis[b]]
    if vis[0] and vis[1] and vis[2]:
        bones.append((pose[0, :2], 0.5 * (pose[1, :2] + pose[2, :2])))
    bone_d = np.full((height, width), np.inf)
    for a, b in bones:
        bone_d = np.minimum(bone_d, _segment_distance(px, py, a.astype(np.float64), b.astype(np.float64)))
    joint_d = np.full((height, width), np.inf)
    for j in np.flatnonzero(vis):
        joint_d = np.minimum(joint_d, np.hypot(px - pose[j, 0], py - pose[j, 1]))
    return bone_d, joint_d


# ------------------------------------------------------------------------------------- constants


def test_joint_order_and_limbs():
    assert JOINT_NAMES == ("head", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
                           "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
    names = {tuple(sorted((JOINT_NAMES[a], JOINT_NAMES[b]))) for a, b in LIMBS}
    for pair in [("head", "l_shoulder"), ("l_shoulder", "r_shoulder"), ("l_elbow", "l_shoulder"),
                 ("l_elbow", "l_wrist"), ("r_elbow", "r_wrist"), ("l_hip", "l_shoulder"), ("l_hip", "r_hip"),
                 ("l_hip", "l_knee"), ("l_ankle", "l_knee"), ("r_ankle", "r_knee")]:
        assert tuple(sorted(pair)) in names
    assert len(set(LIMBS)) == len(LIMBS) and all(0 <= j < 13 for limb in LIMBS for j in limb)


# ------------------------------------------------------------------------------------ check_pose


def test_check_pose_accepts_and_returns_float32():
    pose = standing_pose()
    pose[L_WRIST] = [np.nan, 1e9, 0]  # invisible joints may hold anything
    out = check_pose(pose, 60, 80)
    assert out.dtype == np.float32 and out.shape == (13, 3)
    check_pose(np.array([[80, 60, 1]] * 13), 60, 80)  # the far corner is inside (corner convention)


def test_check_pose_errors_name_the_problem():
    with pytest.raises(ValueError, match="12 joints, expected 13"):
        check_pose(standing_pose()[:12], 60, 80)
    with pytest.raises(ValueError, match=r"\(13, 3\).*shape \(13, 2\)"):
        check_pose(standing_pose()[:, :2], 60, 80)
    bad = standing_pose()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="joint 3 \\(l_elbow\\).*not finite"):
        check_pose(bad, 60, 80)
    bad = standing_pose()
    bad[5] = [90.0, 10.0, 1]
    with pytest.raises(ValueError, match=r"joint 5 \(l_wrist\).*x=90, y=10.*80x60"):
        check_pose(bad, 60, 80)
    bad = standing_pose()
    bad[0, 1] = -0.5
    with pytest.raises(ValueError, match="head"):
        check_pose(bad, 60, 80)
    bad = standing_pose()
    bad[2, 2] = 0.5
    with pytest.raises(ValueError, match="visibility must be 0 or 1"):
        check_pose(bad, 60, 80)
    with pytest.raises(ValueError, match="visibility must be 0 or 1"):
        check_pose(np.where(np.arange(3) == 2, np.nan, standing_pose()), 60, 80)


def test_clean_pose_hides_and_counts():
    pose = standing_pose().astype(np.float64)
    pose[5] = [90, 10, 1]      # outside
    pose[6] = [np.nan, 3, 1]   # not finite
    pose[7, 2] = 2             # COCO-style visible
    pose[8, 2] = np.nan        # unknown -> invisible
    out, hidden = clean_pose(pose, 60, 80)
    assert hidden == 2
    assert out[5, 2] == 0 and out[6, 2] == 0 and out[7, 2] == 1 and out[8, 2] == 0
    assert np.all(out[[5, 6, 8], :2] == 0)
    check_pose(out, 60, 80)


# ------------------------------------------------------------------------------------ rendering


@pytest.mark.parametrize("limb_width,joint_radius", [(1, 2), (3, 3), (5, 4)])
def test_render_skeleton_matches_brute_force_distances(limb_width, joint_radius):
    pose = standing_pose(cx=37.3, top=6.6, h=47.1)
    pose[L_WRIST, 2] = 0
    height, width = 60, 80
    skel = render_skeleton(pose, height, width, limb_width=limb_width, joint_radius=joint_radius)
    assert skel.dtype == np.uint8 and skel.shape == (height, width) and set(np.unique(skel)) <= {0, 1}
    bone_d, joint_d = _distance_to_skeleton(pose, height, width)
    # Rasterisation differs from exact geometry by up to a pixel diagonal (cv2 rounds thick
    # lines' width up) at the edges.
    inside = (bone_d <= max(limb_width / 2 - 1.0, 0.0)) | (joint_d <= joint_radius - 1.0)
    outside = (bone_d > limb_width / 2 + 1.5) & (joint_d > joint_radius + 1.5)
    assert skel[inside].all(), "a bone or a joint disc is missing"
    assert not skel[outside].any(), "drawn where no bone or joint is"
    # Every visible joint's disc is there, the invisible wrist's is not.
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for j in range(13):
        near = np.hypot(xs - pose[j, 0], ys - pose[j, 1])
        if j == L_WRIST:
            # far from any other drawn element, so nothing there
            assert not skel[near <= 1.0].any()
        else:
            assert skel[near <= joint_radius - 1.0].all()


def test_invisible_joint_skips_its_bones_and_position_does_not_matter():
    pose = standing_pose()
    pose[L_WRIST, 2] = 0
    a = render_skeleton(pose, 60, 80)
    pose[L_WRIST, :2] = [np.nan, np.nan]
    b = render_skeleton(pose, 60, 80)
    full = render_skeleton(standing_pose(), 60, 80)
    assert np.array_equal(a, b)
    assert full.sum() > a.sum()  # the forearm is gone
    assert render_skeleton(np.zeros((13, 3)), 60, 80).sum() == 0


def test_fill_torso_fills_the_quadrilateral():
    pose = standing_pose(h=50)
    plain, filled = render_skeleton(pose, 64, 80), render_skeleton(pose, 64, 80, fill_torso=True)
    cx = pose[list(TORSO), 0].mean()
    cy = pose[list(TORSO), 1].mean()
    assert plain[int(cy), int(cx)] == 0 and filled[int(cy), int(cx)] == 1
    assert np.all(filled >= plain)


def test_overlay_draws_on_a_copy():
    image = np.full((60, 80, 3), 40, np.uint8)
    out = draw_skeleton_overlay(image, standing_pose())
    assert out.shape == image.shape and out.dtype == np.uint8 and np.all(image == 40)
    bone_d, joint_d = _distance_to_skeleton(standing_pose(), 60, 80)
    assert np.all(out[np.minimum(bone_d, joint_d) > 6] == 40)
    assert (out[np.minimum(bone_d, joint_d) < 0.5] != 40).any(axis=-1).all()
    with pytest.raises(ValueError, match="uint8"):
        draw_skeleton_overlay(image.astype(np.float32), standing_pose())


# ----------------------------------------------------------------------------------------- masks


def test_kernel_grows_with_the_person_and_is_odd_and_clipped():
    sizes = []
    for h in (10, 20, 40, 80, 160):
        pose = standing_pose(cx=100, top=10, h=h)
        sizes.append(pose_dilation_kernel(pose, 200, 200))
    assert all(k % 2 == 1 for k in sizes)
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert sizes[-1] == int(round(0.2 * 160)) | 1  # bbox height 160 dominates its width
    pose = standing_pose(cx=100, top=10, h=160)
    assert pose_dilation_kernel(pose, 200, 200, scale=1.0, max_kernel=40) == 39
    assert pose_dilation_kernel(pose, 200, 200, scale=0.0, min_kernel=4) == 5
    assert pose_dilation_kernel(np.zeros((13, 3)), 200, 200) == 3
    assert pose_dilation_kernel(pose, 200, 200, scale=0.5) > pose_dilation_kernel(pose, 200, 200, scale=0.2)


def test_pose_mask_is_the_dilated_skeleton():
    pose = standing_pose(cx=30.2, top=5.7, h=40)
    for kernel in (1, 5, 9):
        mask = pose_mask(pose, 56, 64, kernel=kernel)
        assert mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
        skel = render_skeleton(pose, 56, 64, fill_torso=True).astype(bool)
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel)).astype(bool)
        assert np.array_equal(mask.astype(bool), ndimage.binary_dilation(skel, structure=element))
    default = pose_mask(pose, 56, 64)
    assert np.array_equal(default, pose_mask(pose, 56, 64, kernel=pose_dilation_kernel(pose, 56, 64)))
    assert pose_mask(np.zeros((13, 3)), 56, 64).sum() == 0
    with pytest.raises(ValueError, match="kernel"):
        pose_mask(pose, 56, 64, kernel=0)


def test_pair_mask_is_the_or_of_both_masks():
    a, b = standing_pose(cx=25, h=40), standing_pose(cx=50, top=14, h=30)
    b[3, 2] = 0
    union = pair_mask(a, b, 60, 80)
    expected = np.logical_or(pose_mask(a, 60, 80), pose_mask(b, 60, 80))
    assert np.array_equal(union.astype(bool), expected) and union.dtype == np.float32
    assert pose_mask(a, 60, 80).sum() < union.sum()
    # keywords reach both masks
    assert np.array_equal(pair_mask(a, b, 60, 80, kernel=3).astype(bool),
                          np.logical_or(pose_mask(a, 60, 80, kernel=3), pose_mask(b, 60, 80, kernel=3)))


def test_check_mask_kwargs_rejects_unknown_keys():
    assert check_mask_kwargs({"scale": 0.3})["scale"] == 0.3
    with pytest.raises(ValueError, match="unknown mask_kwargs \\['scal'\\]"):
        check_mask_kwargs({"scal": 0.3})
    with pytest.raises(ValueError, match="limb_width"):
        check_mask_kwargs({"limb_width": 0})


def test_the_module_docstring_examples_run():
    failures, attempted = doctest.testmod(pose_geometry, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert attempted >= 10 and failures == 0
