"""Pose files and pair items (`ilat_ext.data.pose`): JSON loading, resizing that keeps joints on
the pixels they mark, the pair-item layout. The geometry is tested in test_pose_geometry.py."""
import json

import numpy as np
import pytest

from ilat_ext.data.pose import (
    load_pose_json, make_pair_item, resize_image, resize_pose, save_pose_json, scale_pose, square_resize_params,
)
from ilat_ext.pose_geometry import check_pose, normalise_pose, pair_mask
from tests.helpers import standing_pose


# ------------------------------------------------------------------------------- normalise, I/O


def test_normalise_pose():
    pose = standing_pose()
    pose[4] = [np.nan, np.nan, 0]
    out = normalise_pose(pose, 60, 80)
    assert out.dtype == np.float32 and out.shape == (13, 3)
    assert np.allclose(out[0], [pose[0, 0] / 80, pose[0, 1] / 60, 1])
    assert np.all(out[4] == 0)
    vis = out[:, 2] > 0
    assert np.all((out[vis, :2] >= 0) & (out[vis, :2] <= 1)) and set(np.unique(out[:, 2])) == {0.0, 1.0}


def test_load_pose_json_forms_and_errors(tmp_path):
    pose = standing_pose()
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
    pose = standing_pose()
    out = scale_pose(pose, 2.0, 0.5, 1.0, -1.0)
    assert np.allclose(out[:, 0], pose[:, 0] * 2 + 1) and np.allclose(out[:, 1], pose[:, 1] * 0.5 - 1)
    assert np.array_equal(out[:, 2], pose[:, 2])
    edge = np.array([[80, 60, 1]] * 13, np.float32)
    check_pose(resize_pose(edge, 60, 80, 7, "stretch"), 7, 7)  # no rounding past the border
    with pytest.raises(ValueError, match="resize mode"):
        square_resize_params(60, 80, 64, "crop")


def test_make_pair_item_layout():
    a, b = standing_pose(cx=30), standing_pose(cx=36, h=38)
    cond, target = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)
    item = make_pair_item(cond, target, a, b, skeletons=True)
    assert item["image"].min() == 1.0 and item["cond_image"].max() == -1.0
    assert np.array_equal(item["mask"][..., 0], pair_mask(a, b, 64, 64))
    assert np.array_equal(item["pose"], normalise_pose(b, 64, 64))
    assert np.array_equal(item["cond_pose_px"], a)
    assert item["target_skeleton"].shape == (64, 64, 1)
    assert set(item) == {"image", "cond_image", "pose", "cond_pose", "pose_px", "cond_pose_px", "mask",
                         "cond_skeleton", "target_skeleton"}
