"""ToyPoses: determinism, disjoint splits, and the property the pose demo relies on: outside the
pair mask the condition and target frames are the same pixels."""
import numpy as np
import pytest

from ilat_ext.pose_geometry import (
    L_HIP, L_SHOULDER, R_HIP, R_SHOULDER, HEAD, normalise_pose, pair_mask, pose_mask, render_skeleton,
)
from ilat_ext.data.toy_pose import SPLITS, ToyPoses

KEYS = {"image", "cond_image", "pose", "cond_pose", "pose_px", "cond_pose_px", "mask", "video", "frames", "index"}


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _uint8(x):
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def test_item_layout():
    ds = ToyPoses(size=64, length=10, frames_per_video=4)
    for i in (0, 5, 9):
        item = ds[i]
        assert set(item) == KEYS
        for key in ("image", "cond_image"):
            assert item[key].shape == (64, 64, 3) and item[key].dtype == np.float32
            assert -1.0 <= item[key].min() and item[key].max() <= 1.0
        for key in ("pose", "cond_pose", "pose_px", "cond_pose_px"):
            assert item[key].shape == (13, 3) and item[key].dtype == np.float32
        assert np.array_equal(item["pose"], normalise_pose(item["pose_px"], 64, 64))
        assert item["mask"].shape == (64, 64, 1) and set(np.unique(item["mask"])) == {0.0, 1.0}
        assert np.array_equal(item["mask"][..., 0], pair_mask(item["cond_pose_px"], item["pose_px"], 64, 64))
        cond, target = item["frames"]
        assert item["video"] == i // 4 and target == i % 4 and cond != target
        assert 0.05 < item["mask"].mean() < 0.7
    assert len(ds) == 10 and ds.num_videos == 3
    assert set(ToyPoses(size=32, length=2, skeletons=True)[1]) == KEYS | {"cond_skeleton", "target_skeleton"}


def test_poses_are_penn_order_and_plausible():
    ds = ToyPoses(size=64, length=32)
    for v in range(4):
        for f in range(ds.frames_per_video):
            p = ds.video_pose(v, f)
            assert np.all(p[:, 2] == 1)
            # Facing the camera: the person's left is on the image's right; head above the hips.
            assert p[L_SHOULDER, 0] > p[R_SHOULDER, 0] and p[L_HIP, 0] > p[R_HIP, 0]
            assert p[HEAD, 1] < min(p[L_HIP, 1], p[R_HIP, 1])
    assert not np.array_equal(ds.video_pose(0, 0), ds.video_pose(0, 1))


def test_deterministic_and_order_free():
    a, b = ToyPoses(size=64, length=16, seed=3), ToyPoses(size=64, length=16, seed=3)
    for i in (0, 7, 15):
        assert _equal(a[i], a[i]) and _equal(a[i], b[i])
    assert _equal(a[5], ToyPoses(size=64, length=16, seed=3)[5])
    assert not np.array_equal(a[0]["image"], ToyPoses(size=64, length=16, seed=4)[0]["image"])


def test_splits_are_disjoint():
    backgrounds = {}
    for split in SPLITS:
        ds = ToyPoses(size=32, length=8 * 6, split=split)
        backgrounds[split] = [ds.background(v).tobytes() for v in range(ds.num_videos)]
    for s in SPLITS:
        for t in SPLITS:
            if s < t:
                assert not set(backgrounds[s]) & set(backgrounds[t]), (s, t)
    assert not np.array_equal(ToyPoses(size=32, length=4, split="train")[0]["pose_px"],
                              ToyPoses(size=32, length=4, split="test")[0]["pose_px"])


@pytest.mark.parametrize("size,length", [(32, 48), (64, 64), (128, 16)])
def test_background_identical_outside_mask_and_figure_inside(size, length):
    ds = ToyPoses(size=size, length=length, seed=1)
    for i in range(length):
        item = ds[i]
        outside = item["mask"][..., 0] == 0
        assert np.array_equal(_uint8(item["cond_image"])[outside], _uint8(item["image"])[outside]), i
        for key in ("pose_px", "cond_pose_px"):
            # The whole figure (its coverage, anti-aliased edges included) and the skeleton lie in the mask.
            alpha = ds.figure_alpha(item["video"], item[key])
            assert not (alpha > 0)[outside].any(), (i, key)
            assert not render_skeleton(item[key], size, size).astype(bool)[outside].any()
        # And the figure is really there and really moved.
        assert (_uint8(item["cond_image"]) != _uint8(item["image"])).any()


def test_a_thin_mask_would_fail_the_background_check():
    """The check above can fail: with a 1-px dilation the figure spills out of the mask."""
    ds = ToyPoses(size=64, length=16, seed=1, mask_kwargs={"scale": 0.0, "min_kernel": 1, "max_kernel": 1,
                                                           "limb_width": 1, "joint_radius": 0})
    spills = 0
    for i in range(16):
        item = ds[i]
        outside = item["mask"][..., 0] == 0
        spills += int((_uint8(item["cond_image"])[outside] != _uint8(item["image"])[outside]).any())
    assert spills > 0


def test_render_matches_items_and_follows_any_pose():
    ds = ToyPoses(size=64, length=16, frames_per_video=4)
    item = ds[6]
    video, (cond, target) = item["video"], item["frames"]
    assert np.array_equal(_uint8(item["image"]), ds.render(video, ds.video_pose(video, target)))
    assert np.array_equal(_uint8(item["cond_image"]), ds.render(video, ds.video_pose(video, cond)))
    # A new pose (shifted right by 5 px): the figure goes where the pose says, the rest is background.
    pose = ds.video_pose(video, 0).copy()
    pose[:, 0] = np.clip(pose[:, 0] + 5, 0, 64)
    alpha = ds.figure_alpha(video, pose)
    assert alpha.sum() > 20 and not (alpha > 0)[pose_mask(pose, 64, 64) == 0].any()
    rendered = ds.render(video, pose)
    assert np.array_equal(rendered[alpha == 0], ds.background(video)[alpha == 0])
    # No visible joint: nothing drawn.
    assert np.array_equal(ds.render(video, np.zeros((13, 3))), ds.background(video))


def test_argument_checks():
    with pytest.raises(ValueError, match="size"):
        ToyPoses(size=40)
    with pytest.raises(ValueError, match="split"):
        ToyPoses(split="val")
    with pytest.raises(ValueError, match="frames_per_video"):
        ToyPoses(frames_per_video=1)
    with pytest.raises(ValueError, match="unknown mask_kwargs"):
        ToyPoses(mask_kwargs={"kernel_scale": 1})
    with pytest.raises(ValueError, match="backgrounds must be a non-empty subset"):
        ToyPoses(backgrounds=["plaid"])
    with pytest.raises(ValueError, match="backgrounds must be a non-empty subset"):
        ToyPoses(backgrounds=[])
    with pytest.raises(IndexError):
        ToyPoses(length=4)[4]
    with pytest.raises(IndexError):
        ToyPoses(length=4, frames_per_video=2).video_pose(0, 2)
    assert "ToyPoses(size=64" in repr(ToyPoses())


def test_default_scenes_are_smooth_and_textured_ones_stay_available():
    """The default backgrounds (gradients, blotches, large patches, light grain) have far less
    high-frequency energy than the textured stripes and checkers, which `backgrounds=` still gives."""
    def roughness(ds):
        grads = []
        for video in range(12):
            b = ds.background(video).astype(np.float64)
            grads.append(np.abs(np.diff(b, axis=0)).mean() + np.abs(np.diff(b, axis=1)).mean())
        return float(np.mean(grads))

    smooth = ToyPoses(size=64, length=96)
    textured = ToyPoses(size=64, length=96, backgrounds=("stripes", "checker"))
    assert set(smooth.backgrounds) == {"gradient", "blotches", "patches"}
    assert roughness(textured) > 2 * roughness(smooth)
    assert "backgrounds=['stripes', 'checker']" in repr(textured)
