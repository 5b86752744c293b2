"""SDF builder: a tiny DeepFashion/Places sample in tmp_path, built through the script."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ilat_ext.data.pose import load_pose_json
from ilat_ext.pose_geometry import pair_mask, render_skeleton
from ilat_ext.data.sdf import SDFPairs, build_sdf, openpose18_to_penn13, read_keypoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PH, PW = 48, 32  # person images: 32 wide, 48 tall
# person folder -> [(image name, has mask, has keypoints)]
PEOPLE = {
    "img/MEN/Denim/id_00000001": [("01_1_front.jpg", True, True), ("01_2_side.jpg", True, True),
                                  ("01_3_back.jpg", True, True), ("01_4_full.jpg", True, False)],
    "img/MEN/Denim/id_00000002": [("01_1_front.jpg", True, True), ("02_1_front.jpg", True, True)],
    "img/WOMEN/Dresses/id_00000003": [("01_1_front.jpg", True, True), ("01_2_side.jpg", True, True)],
    "img/WOMEN/Dresses/id_00000004": [("01_1_front.jpg", True, True), ("01_2_side.jpg", False, True)],
    "img/WOMEN/Dresses/id_00000005": [("01_1_front.jpg", True, True)],
}


def person_pose(rng) -> np.ndarray:
    u = rng.uniform(3.6, 4.2)
    cx, top = PW / 2 + rng.uniform(-1.5, 1.5), 5.0
    xy = [(cx, top), (cx + 1.5 * u, top + 2 * u), (cx - 1.5 * u, top + 2 * u), (cx + 2.5 * u, top + 3.5 * u),
          (cx - 2.5 * u, top + 3.5 * u), (cx + 3 * u, top + 5 * u), (cx - 3 * u, top + 5 * u),
          (cx + u, top + 5.5 * u), (cx - u, top + 5.5 * u), (cx + 1.2 * u, top + 7.7 * u),
          (cx - 1.2 * u, top + 7.7 * u), (cx + 1.4 * u, top + 10 * u), (cx - 1.4 * u, top + 10 * u)]
    xy = np.array(xy) + rng.uniform(-1.2, 1.2, (13, 2))
    return np.concatenate([np.clip(xy, 1, [PW - 1, PH - 1]), np.ones((13, 1))], 1)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdf_inputs")
    df, seg, places = root / "deepfashion", root / "segmentation", root / "places"
    rng = np.random.default_rng(0)
    keypoints = {}
    for k, (person, images) in enumerate(PEOPLE.items()):
        (df / person).mkdir(parents=True)
        (seg / person).mkdir(parents=True)
        for name, has_mask, has_keypoints in images:
            pose = person_pose(rng)
            # The person is a thick stick figure; its mask is exactly where it is drawn.
            mask = render_skeleton(pose, PH, PW, limb_width=5, joint_radius=4, fill_torso=True)
            image = np.full((PH, PW, 3), 255, np.uint8)
            image[mask > 0] = (30 + 40 * k, 200 - 30 * k, 90)
            cv2.imwrite(str(df / person / name), image)
            if has_mask:
                cv2.imwrite(str(seg / person / (os.path.splitext(name)[0] + ".png")), mask * 255)
            if has_keypoints:
                keypoints[f"{person}/{name}"] = pose.tolist()
    places.mkdir()
    for i in range(6):
        noise = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
        cv2.imwrite(str(places / f"scene_{i}.png"), noise)
    (places / "broken.jpg").write_bytes(b"not an image")
    (root / "keypoints.json").write_text(json.dumps(keypoints))
    output = root / "sdf"
    cmd = [sys.executable, "scripts/build_sdf.py", "--deepfashion", str(df), "--segmentation", str(seg),
           "--keypoints", str(root / "keypoints.json"), "--places", str(places), "--output", str(output),
           "--n_train", "12", "--n_test", "4", "--size", "32", "--seed", "0", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "output": output, "summary": json.loads(proc.stdout.strip().splitlines()[-1]),
            "stdout": proc.stdout, "cmd": cmd, "env": env}


def _pairs(output, split):
    return [line.strip() for line in (output / f"{split}.flist").read_text().splitlines() if line.strip()]


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_counts_and_layout(sample):
    summary, output = sample["summary"], sample["output"]
    skipped = summary["skipped"]
    assert skipped["images"] == 11 and skipped["no_mask"] == 1 and skipped["no_keypoints"] == 1
    assert skipped["persons_with_one_image"] == 2  # id 4 (one image lacks a mask) and id 5
    assert summary["pairs"] == {"train": 12, "test": 4} and summary["persons"] == {"train": 2, "test": 1}
    assert "1 without a mask, 1 without keypoints" in sample["stdout"]
    for split, n in (("train", 12), ("test", 4)):
        pairs = _pairs(output, split)
        assert len(pairs) == n and all(p.startswith(split + "/") for p in pairs)
        for pair in pairs:
            files = set(os.listdir(output / pair))
            assert files == {"cond.png", "target.png", "cond_mask.png", "target_mask.png",
                             "cond_pose.json", "target_pose.json"}


def test_pairs_share_person_and_background_and_split_by_person(sample):
    output = sample["output"]
    persons = {}
    for split in ("train", "test"):
        persons[split] = set()
        for pair in _pairs(output, split):
            folder = output / pair
            cond, target = (json.loads((folder / f"{r}_pose.json").read_text()) for r in ("cond", "target"))
            assert cond["person"] == target["person"] and cond["source"] != target["source"]
            assert cond["background"] == target["background"] != "broken.jpg"
            assert cond["source"].startswith(cond["person"] + "/")
            persons[split].add(cond["person"])
            a, b = _rgb(folder / "cond.png"), _rgb(folder / "target.png")
            ma, mb = (cv2.imread(str(folder / f"{r}_mask.png"), cv2.IMREAD_GRAYSCALE) for r in ("cond", "target"))
            assert a.shape == (32, 32, 3) and ma.shape == (32, 32)
            background = (ma == 0) & (mb == 0)
            assert background.mean() > 0.3
            assert np.array_equal(a[background], b[background])  # same background, same placement
            assert (a != b).any()  # the person moved
            # Joints were moved with the pixels: each visible joint lies on its person.
            for info, m in ((cond, ma), (target, mb)):
                for x, y, v in info["joints"]:
                    if v:
                        assert m[min(int(y), 31), min(int(x), 31)] > 0, (pair, x, y)
    assert persons["train"] and persons["test"] and not persons["train"] & persons["test"]
    meta = json.loads((output / "meta.json").read_text())
    assert set(meta["split_persons"]["test"]) == persons["test"]


def test_sdf_pairs_items(sample):
    output = sample["output"]
    ds = SDFPairs(str(output), "test", size=32)
    assert len(ds) == 4
    item = ds[1]
    assert {"image", "cond_image", "pose", "cond_pose", "pose_px", "cond_pose_px", "mask", "video", "frames",
            "pair", "index"} == set(item)
    folder = output / item["pair"]
    assert np.allclose(item["pose_px"], load_pose_json(folder / "target_pose.json", 32, 32))
    assert np.array_equal(np.round((item["image"] + 1) * 127.5).astype(np.uint8), _rgb(folder / "target.png"))
    assert np.array_equal(item["mask"][..., 0], pair_mask(item["cond_pose_px"], item["pose_px"], 32, 32))
    assert item["video"] == json.loads((folder / "target_pose.json").read_text())["person"]
    small = SDFPairs(str(output), "test", size=16)[1]
    assert np.allclose(small["pose_px"][:, :2], item["pose_px"][:, :2] / 2, atol=1e-5)
    assert np.array_equal(small["pose_px"][:, 2], item["pose_px"][:, 2])
    assert small["image"].shape == (16, 16, 3)


def test_sdf_pairs_skips_a_broken_pair(sample, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sample["output"], copy)
    first = _pairs(copy, "train")[0]
    (copy / first / "cond.png").write_bytes(b"broken")
    ds = SDFPairs(str(copy), "train", size=32)
    with pytest.warns(RuntimeWarning, match="unreadable pair"):
        item = ds[0]
    assert item["pair"] == _pairs(copy, "train")[1] and ds.skipped == 1


def test_build_is_deterministic_and_refuses_to_overwrite(sample, tmp_path):
    root = sample["root"]
    args = dict(deepfashion=root / "deepfashion", segmentation=root / "segmentation",
                keypoints=root / "keypoints.json", places=root / "places", n_train=12, n_test=4, size=32, seed=0,
                progress=False)
    build_sdf(output=tmp_path / "again", **args)
    for pair in _pairs(sample["output"], "train")[:3]:
        for name in ("cond.png", "target.png", "target_pose.json"):
            assert (tmp_path / "again" / pair / name).read_bytes() == (sample["output"] / pair / name).read_bytes()
    with pytest.raises(ValueError, match="already holds a build"):
        build_sdf(output=tmp_path / "again", **args)


def test_missing_inputs_are_named(sample, tmp_path, capsys):
    # The script's main() in-process (a second subprocess would cost the package import again).
    spec = importlib.util.spec_from_file_location("build_sdf_script", os.path.join(REPO, "scripts", "build_sdf.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = list(sample["cmd"][2:])
    argv[argv.index("--places") + 1] = str(tmp_path / "no_places")
    argv[argv.index("--output") + 1] = str(tmp_path / "out")
    assert script.main(argv) == 2 and "no_places" in capsys.readouterr().err
    root = sample["root"]
    with pytest.raises(FileNotFoundError, match="no_segmentation"):
        build_sdf(root / "deepfashion", tmp_path / "no_segmentation", root / "keypoints.json", root / "places",
                  tmp_path / "out2", progress=False)
    with pytest.raises(FileNotFoundError, match="no_keys.json"):
        build_sdf(root / "deepfashion", root / "segmentation", tmp_path / "no_keys.json", root / "places",
                  tmp_path / "out3", progress=False)
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        SDFPairs(str(tmp_path / "nothing_here"))


def test_keypoint_files(tmp_path):
    joints = [[float(j), float(j + 1), 1] for j in range(13)]
    csv_path = tmp_path / "k.csv"
    row = ["a/b.jpg"] + [str(v) for j in joints for v in j]
    row[1 + 3 * 4:1 + 3 * 4 + 3] = ["", "", "0"]  # an invisible joint without coordinates
    header = "path," + ",".join(f"{c}{i}" for i in range(1, 14) for c in "xyv")
    csv_path.write_text(header + "\n" + ",".join(row) + "\n")
    out = read_keypoints(str(csv_path))
    assert set(out) == {"a/b.jpg"} and out["a/b.jpg"].shape == (13, 3) and np.isnan(out["a/b.jpg"][4, 0])
    json_path = tmp_path / "k.json"
    json_path.write_text(json.dumps({"./a/c.jpg": {"joints": joints}}))
    assert np.array_equal(read_keypoints(str(json_path))["a/c.jpg"], np.array(joints))
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg,1,2\n")
    with pytest.raises(ValueError, match="bad.csv' line 1"):
        read_keypoints(str(bad))
    # OpenPose COCO-18 -> Penn Action 13: nose -> head, LShoulder (5) -> l_shoulder, RAnkle (10) -> r_ankle.
    xs, ys = np.arange(18) * 10.0, np.arange(18) * 1.0
    xs[7] = -1
    pose = openpose18_to_penn13(xs, ys)
    assert pose[0].tolist() == [0, 0, 1] and pose[1].tolist() == [50, 5, 1] and pose[12].tolist() == [100, 10, 1]
    assert pose[5].tolist() == [0, 0, 0]  # l_wrist <- LWrist (7), missing
