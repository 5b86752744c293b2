"""Pose functions: validation, skeleton drawing and pose masks against brute-force references,
JSON loading, resizing that keeps joints on the pixels they mark."""
import json

import cv2
import numpy as np
import pytest
from scipy import ndimage

from ilat_ext.data.pose import (
    JOINT_NAMES, L_WRIST, LIMBS, NUM_JOINTS, TORSO,
    check_mask_kwargs, check_pose, clean_pose, draw_skeleton_overlay, load_pose_json, make_pair_item,
    normalise_pose, pair_mask, pose_dilation_kernel, pose_mask, render_skeleton, resize_image, resize_pose,
    save_pose_json, scale_pose, square_resize_params,
)


def standing(cx=40.0, top=8.0, h=44.0) -> np.ndarray:
    """A plausible upright pose, person's left on the image's right, all visible."""
    u = h / 10
    xy = [(cx, top), (cx + 1.5 * u, top + 2 * u), (cx - 1.5 * u, top + 2 * u), (cx + 2.5 * u, top + 3.5 * u),
          (cx - 2.5 * u, top + 3.5 * u), (cx + 3 * u, top + 5 * u), (cx - 3 * u, top + 5 * u),
          (cx + u, top + 5.5 * u), (cx - u, top + 5.5 * u), (cx + 1.2 * u, top + 7.7 * u),
          (cx - 1.2 * u, top + 7.7 * u), (cx + 1.4 * u, top + 10 * u), (cx - 1.4 * u, top + 10 * u)]
    return np.concatenate([np.array(xy), np.ones((NUM_JOINTS, 1))], 1).astype(np.float32)


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
    pose = standing()
    pose[L_WRIST] = [np.nan, 1e9, 0]  # invisible joints may hold anything
    out = check_pose(pose, 60, 80)
    assert out.dtype == np.float32 and out.shape == (13, 3)
    check_pose(np.array([[80, 60, 1]] * 13), 60, 80)  # the far corner is inside (corner convention)


def test_check_pose_errors_name_the_problem():
    with pytest.raises(ValueError, match="12 joints, expected 13"):
        check_pose(standing()[:12], 60, 80)
    with pytest.raises(ValueError, match=r"\(13, 3\).*shape \(13, 2\)"):
        check_pose(standing()[:, :2], 60, 80)
    bad = standing()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="joint 3 \\(l_elbow\\).*not finite"):
        check_pose(bad, 60, 80)
    bad = standing()
    bad[5] = [90.0, 10.0, 1]
    with pytest.raises(ValueError, match=r"joint 5 \(l_wrist\).*x=90, y=10.*80x60"):
        check_pose(bad, 60, 80)
    bad = standing()
    bad[0, 1] = -0.5
    with pytest.raises(ValueError, match="head"):
        check_pose(bad, 60, 80)
    bad = standing()
    bad[2, 2] = 0.5
    with pytest.raises(ValueError, match="visibility must be 0 or 1"):
        check_pose(bad, 60, 80)
    with pytest.raises(ValueError, match="visibility must be 0 or 1"):
        check_pose(np.where(np.arange(3) == 2, np.nan, standing()), 60, 80)


def test_clean_pose_hides_and_counts():
    pose = standing().astype(np.float64)
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
    pose = standing(cx=37.3, top=6.6, h=47.1)
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
    pose = standing()
    pose[L_WRIST, 2] = 0
    a = render_skeleton(pose, 60, 80)
    pose[L_WRIST, :2] = [np.nan, np.nan]
    b = render_skeleton(pose, 60, 80)
    full = render_skeleton(standing(), 60, 80)
    assert np.array_equal(a, b)
    assert full.sum() > a.sum()  # the forearm is gone
    assert render_skeleton(np.zeros((13, 3)), 60, 80).sum() == 0


def test_fill_torso_fills_the_quadrilateral():
    pose = standing(h=50)
    plain, filled = render_skeleton(pose, 64, 80), render_skeleton(pose, 64, 80, fill_torso=True)
    cx = pose[list(TORSO), 0].mean()
    cy = pose[list(TORSO), 1].mean()
    assert plain[int(cy), int(cx)] == 0 and filled[int(cy), int(cx)] == 1
    assert np.all(filled >= plain)


def test_overlay_draws_on_a_copy():
    image = np.full((60, 80, 3), 40, np.uint8)
    out = draw_skeleton_overlay(image, standing())
    assert out.shape == image.shape and out.dtype == np.uint8 and np.all(image == 40)
    bone_d, joint_d = _distance_to_skeleton(standing(), 60, 80)
    assert np.all(out[np.minimum(bone_d, joint_d) > 6] == 40)
    assert (out[np.minimum(bone_d, joint_d) < 0.5] != 40).any(axis=-1).all()
    with pytest.raises(ValueError, match="uint8"):
        draw_skeleton_overlay(image.astype(np.float32), standing())


# ----------------------------------------------------------------------------------------- masks


def test_kernel_grows_with_the_person_and_is_odd_and_clipped():
    sizes = []
    for h in (10, 20, 40, 80, 160):
        pose = standing(cx=100, top=10, h=h)
        sizes.append(pose_dilation_kernel(pose, 200, 200))
    assert all(k % 2 == 1 for k in sizes)
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert sizes[-1] == int(round(0.2 * 160)) | 1  # bbox height 160 dominates its width
    pose = standing(cx=100, top=10, h=160)
    assert pose_dilation_kernel(pose, 200, 200, scale=1.0, max_kernel=40) == 39
    assert pose_dilation_kernel(pose, 200, 200, scale=0.0, min_kernel=4) == 5
    assert pose_dilation_kernel(np.zeros((13, 3)), 200, 200) == 3
    assert pose_dilation_kernel(pose, 200, 200, scale=0.5) > pose_dilation_kernel(pose, 200, 200, scale=0.2)


def test_pose_mask_is_the_dilated_skeleton():
    pose = standing(cx=30.2, top=5.7, h=40)
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
    a, b = standing(cx=25, h=40), standing(cx=50, top=14, h=30)
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


# ------------------------------------------------------------------------------- normalise, I/O


def test_normalise_pose():
    pose = standing()
    pose[4] = [np.nan, np.nan, 0]
    out = normalise_pose(pose, 60, 80)
    assert out.dtype == np.float32 and out.shape == (13, 3)
    assert np.allclose(out[0], [pose[0, 0] / 80, pose[0, 1] / 60, 1])
    assert np.all(out[4] == 0)
    vis = out[:, 2] > 0
    assert np.all((out[vis, :2] >= 0) & (out[vis, :2] <= 1)) and set(np.unique(out[:, 2])) == {0.0, 1.0}


def test_load_pose_json_forms_and_errors(tmp_path):
    pose = standing()
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(pose.tolist()))
    assert np.allclose(load_pose_json(plain, 60, 80), pose)
    joints = pose.tolist()
    joints[5] = [None, None, 0]
    joints[6][2] = 2  # COCO-style "visible"
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"joints": joints, "note": "x"}))
    out = load_pose_json(wrapped, 60, 80)
    assert out.dtype == np.float32 and out[5, 2] == 0 and out[6, 2] == 1
    saved = tmp_path / "saved.json"
    save_pose_json(saved, out, 60, 80, person="p1")
    assert json.loads(saved.read_text())["person"] == "p1"
    assert np.allclose(np.nan_to_num(load_pose_json(saved, 60, 80)), np.nan_to_num(out))

    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_pose_json(missing, 60, 80)
    short = tmp_path / "short.json"
    short.write_text(json.dumps(pose.tolist()[:12]))
    with pytest.raises(ValueError, match="short.json.*12 joints"):
        load_pose_json(short, 60, 80)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(pose.tolist()))
    with pytest.raises(ValueError, match="outside.json.*outside the 30x30"):
        load_pose_json(outside, 30, 30)
    broken = tmp_path / "broken.json"
    broken.write_text("[[1, 2,")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        load_pose_json(broken, 60, 80)


# -------------------------------------------------------------------------------------- resizing


@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_resize_keeps_joints_on_their_pixels(mode):
    """A white 4x4 block in a black 60x80 frame, its centre as a joint: after resizing, the joint
    must be at the block's centroid in the resized image."""
    height, width, size = 60, 80, 64
    for top, left in ((4, 6), (30, 70), (52, 10)):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[top:top + 4, left:left + 4] = 255
        pose = np.zeros((13, 3), np.float32)
        pose[0] = [left + 2.0, top + 2.0, 1]  # the block's centre, corner convention
        image = resize_image(frame, size, mode)
        moved = resize_pose(pose, height, width, size, mode)
        assert image.shape == (size, size, 3)
        weight = image[..., 0].astype(np.float64)
        ys, xs = np.mgrid[0:size, 0:size] + 0.5
        centroid = np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()
        assert np.allclose(moved[0, :2], centroid, atol=0.25), (moved[0, :2], centroid)
    sx, sy, ox, oy = square_resize_params(height, width, size, mode)
    if mode == "stretch":
        assert (sx, sy, ox, oy) == (64 / 80, 64 / 60, 0.0, 0.0)
    else:
        assert (sx, sy, ox, oy) == (0.8, 0.8, 0.0, 8.0)  # 10 rows of padding above, x 0.8


def test_scale_pose_and_edge_joint_stays_valid():
    pose = standing()
    out = scale_pose(pose, 2.0, 0.5, 1.0, -1.0)
    assert np.allclose(out[:, 0], pose[:, 0] * 2 + 1) and np.allclose(out[:, 1], pose[:, 1] * 0.5 - 1)
    assert np.array_equal(out[:, 2], pose[:, 2])
    edge = np.array([[80, 60, 1]] * 13, np.float32)
    check_pose(resize_pose(edge, 60, 80, 7, "stretch"), 7, 7)  # no rounding past the border
    with pytest.raises(ValueError, match="resize mode"):
        square_resize_params(60, 80, 64, "crop")


def test_make_pair_item_layout():
    a, b = standing(cx=30), standing(cx=36, h=38)
    cond, target = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)
    item = make_pair_item(cond, target, a, b, skeletons=True)
    assert item["image"].min() == 1.0 and item["cond_image"].max() == -1.0
    assert np.array_equal(item["mask"][..., 0], pair_mask(a, b, 64, 64))
    assert np.array_equal(item["pose"], normalise_pose(b, 64, 64))
    assert np.array_equal(item["cond_pose_px"], a)
    assert item["target_skeleton"].shape == (64, 64, 1)
    assert set(item) == {"image", "cond_image", "pose", "cond_pose", "pose_px", "cond_pose_px", "mask",
                         "cond_skeleton", "target_skeleton"}
