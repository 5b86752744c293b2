"""PennAction over a tiny synthetic copy of the public layout: real .mat labels (scipy.io.savemat
in Penn Action's fields), non-square jpg frames, a corrupt frame and a corrupt label file."""
import warnings

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from ilat_ext.data.penn_action import PennAction, frame_name, read_label
from ilat_ext.pose_geometry import normalise_pose, pair_mask

H, W = 60, 80  # frames are 80 wide, 60 tall
# video -> (train flag, label rows, frames on disk)
VIDEOS = {"0001": (1, 6, 5), "0002": (1, 4, 4), "0003": (-1, 6, 6), "0004": (-1, 3, 3), "0006": (1, 1, 1)}
CORRUPT_FRAME = ("0002", 2)
NO_JOINTS_FRAME = ("0001", 4)
OUTSIDE_JOINT = ("0003", 1, 7)  # (video, frame, joint) labelled visible at x = 85 > W


def colour(video: str, frame: int):
    return (40 * int(video) % 250, 30 * frame + 20, 200)


def _labels(video: str, rows: int, rng):
    x = rng.uniform(0, W, (rows, 13))
    y = rng.uniform(0, H, (rows, 13))
    vis = rng.random((rows, 13)) < 0.8
    vis[:, 0] = True
    x[:, 1], y[:, 1] = W, H  # the far corner: on the border, valid
    if video == NO_JOINTS_FRAME[0]:
        vis[NO_JOINTS_FRAME[1]] = False
    if video == OUTSIDE_JOINT[0]:
        x[OUTSIDE_JOINT[1], OUTSIDE_JOINT[2]] = 85.0
        vis[OUTSIDE_JOINT[1], OUTSIDE_JOINT[2]] = True
    return x, y, vis


@pytest.fixture(scope="module")
def penn(tmp_path_factory):
    root = tmp_path_factory.mktemp("Penn_Action")
    rng = np.random.default_rng(0)
    labels = {}
    (root / "labels").mkdir()
    for video, (train, rows, on_disk) in VIDEOS.items():
        x, y, vis = _labels(video, rows, rng)
        labels[video] = (x, y, vis)
        scipy.io.savemat(root / "labels" / f"{video}.mat",
                         {"action": "tennis_serve", "pose": "back", "x": x, "y": y, "visibility": vis,
                          "train": train, "bbox": np.zeros((rows, 4)), "dimensions": np.array([H, W, rows]),
                          "nframes": rows})
        folder = root / "frames" / video
        folder.mkdir(parents=True)
        for k in range(on_disk):
            frame = np.zeros((H, W, 3), np.uint8)
            frame[:] = colour(video, k)
            cv2.imwrite(str(folder / frame_name(k)), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (root / "frames" / CORRUPT_FRAME[0] / frame_name(CORRUPT_FRAME[1])).write_bytes(b"\xff\xd8 not a jpeg")
    (root / "labels" / "0005.mat").write_bytes(b"MATLAB garbage" * 10)
    return root, labels


def _build(root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return PennAction(str(root), **kwargs)


def _expected(labels, video, frame, sx, sy, oy=0.0):
    """Brute force: the label's joints mapped by x * sx, (y + oy) * sy; joints labelled visible
    outside the original frame hidden; hidden joints at 0."""
    x, y, vis = (a[frame].astype(np.float64) for a in labels[video])
    vis = (vis > 0) & (x >= 0) & (x <= W) & (y >= 0) & (y <= H)
    out = np.stack([x * sx, (y + oy) * sy, vis.astype(np.float64)], 1)
    out[~vis, :2] = 0
    return out


def _mean_colour(image):
    return np.round((image + 1) * 127.5).reshape(-1, 3).mean(0)


def test_read_label_shapes(penn):
    root, labels = penn
    one = read_label(str(root / "labels" / "0006.mat"))  # one frame: squeeze_me gives (13,) rows
    assert one["poses"].shape == (1, 13, 3) and one["train"] is True
    full = read_label(str(root / "labels" / "0003.mat"))
    x, y, vis = labels["0003"]
    assert full["train"] is False
    assert np.array_equal(full["poses"][..., 0], x) and np.array_equal(full["poses"][..., 2], vis)
    with pytest.raises(ValueError, match="0005.mat"):
        read_label(str(root / "labels" / "0005.mat"))


def test_construction_counts_and_warns(penn):
    root, _ = penn
    with pytest.warns(RuntimeWarning, match=r"1 unreadable label file.*0005\.mat.*\(the first: cannot read label"):
        ds = PennAction(str(root), split="train", size=64)
    assert ds.bad_labels == [str(root / "labels" / "0005.mat")]
    assert list(ds.label_errors) == ds.bad_labels and "cannot read label file" in ds.label_errors[ds.bad_labels[0]]
    assert ds.videos == ["0001", "0002"] and "0006" in ds.skipped_videos
    # 0001: 6 label rows, 5 jpgs, frame 4 without visible joints -> frames 0-3; 0002: 4 (the
    # corrupt jpg is only found when read).
    assert [list(u) for u in ds.usable] == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert len(ds) == ds.num_frames == 8
    assert len(_build(root, split="train", length=20)) == 20


def test_train_pairs_stay_in_their_video_and_scale_joints_exactly(penn):
    root, labels = penn
    ds = _build(root, split="train", size=64)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match="unreadable frame in video '0002'"):
        items = [ds[index] for index in range(len(ds))]  # item 6's target is the corrupt frame
    for item in items:
        video, (cond, target) = item["video"], item["frames"]
        assert cond != target and cond in ds.usable[ds.videos.index(video)]
        for key, frame, px_key in (("image", target, "pose_px"), ("cond_image", cond, "cond_pose_px")):
            assert (video, frame) != CORRUPT_FRAME
            assert np.allclose(_mean_colour(item[key]), colour(video, frame), atol=4)
            expected = _expected(labels, video, frame, 64 / W, 64 / H)
            assert np.allclose(item[px_key], expected, atol=1e-4), (video, frame)
            norm_key = "cond_pose" if key == "cond_image" else "pose"
            assert np.array_equal(item[norm_key], normalise_pose(item[px_key], 64, 64))
        assert item["image"].shape == (64, 64, 3)
        assert np.array_equal(item["mask"][..., 0], pair_mask(item["cond_pose_px"], item["pose_px"], 64, 64))
    assert ds.unreadable_frames == [str(root / "frames" / "0002" / frame_name(2))]
    assert ds.skipped_pairs >= 1
    # Condition frames are drawn per call (dynamic pairs), the target is the index's frame.
    draws = [ds[0]["frames"] for _ in range(20)]
    assert len({int(c) for c, _ in draws}) > 1 and {int(t) for _, t in draws} == {0}


def test_pad_mode_keeps_aspect(penn):
    root, labels = penn
    ds = _build(root, split="test", size=64, resize="pad", n_test_pairs=10)
    item = ds[0]
    video, (cond, target) = item["video"], item["frames"]
    # The 60-row side is padded by 10 rows above and below, then 80 -> 64.
    assert np.allclose(item["pose_px"], _expected(labels, video, target, 64 / 80, 64 / 80, oy=10), atol=1e-4)
    assert np.allclose(item["cond_pose_px"], _expected(labels, video, cond, 64 / 80, 64 / 80, oy=10), atol=1e-4)
    image = np.round((item["image"] + 1) * 127.5)
    assert image[:7].max() == 0 and image[-7:].max() == 0  # the black bands
    assert np.allclose(image[12:52].reshape(-1, 3).mean(0), colour(video, target), atol=4)


def test_test_split_is_fixed_and_only_test_videos(penn):
    root, _ = penn
    a = _build(root, split="test", size=32, n_test_pairs=25, seed=1)
    b = _build(root, split="test", size=32, n_test_pairs=25, seed=1)
    c = _build(root, split="test", size=32, n_test_pairs=25, seed=2)
    assert a.test_pairs == b.test_pairs and a.test_pairs != c.test_pairs and len(a) == 25
    assert set(a.videos) == {"0003", "0004"}
    assert all(cond != target for _, cond, target in a.test_pairs)
    first, again = a[3], b[3]
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert {a[i]["video"] for i in range(len(a))} == {"0003", "0004"}
    assert len(_build(root, split="test", n_test_pairs=25, length=5)) == 5


def test_visible_joint_outside_the_frame_is_hidden_and_counted(penn):
    root, _ = penn
    ds = _build(root, split="test", size=32, n_test_pairs=40, seed=0)
    video, frame, joint = OUTSIDE_JOINT
    index = next(i for i, (v, c, t) in enumerate(ds.test_pairs) if ds.videos[v] == video and t == frame)
    item = ds[index]
    assert item["pose_px"][joint, 2] == 0 and ds.hidden_joints >= 1


def test_errors_name_paths(tmp_path, penn):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PennAction(str(tmp_path / "nowhere"))
    (tmp_path / "frames").mkdir()
    with pytest.raises(FileNotFoundError, match="labels"):
        PennAction(str(tmp_path))
    (tmp_path / "labels").mkdir()
    scipy.io.savemat(tmp_path / "labels" / "0001.mat", {"x": np.ones((3, 13)), "y": np.ones((3, 13)),
                                                        "visibility": np.ones((3, 13), bool), "train": 1})
    with pytest.raises(ValueError, match="no usable test videos"):
        PennAction(str(tmp_path), split="test")
    root, _ = penn
    with pytest.raises(ValueError, match="split"):
        PennAction(str(root), split="validation")
    with pytest.raises(ValueError, match="unknown mask_kwargs"):
        _build(root, mask_kwargs={"dilate": 3})
    with pytest.raises(ValueError, match="resize"):
        _build(root, resize="crop")


def test_skeletons_option(penn):
    root, _ = penn
    item = _build(root, split="test", size=32, n_test_pairs=3, skeletons=True)[0]
    assert item["cond_skeleton"].shape == (32, 32, 1) and item["target_skeleton"].max() == 1.0
