"""Real photos in, full resolution out, through the commands as a user runs them: `ilat-edit-face`,
`ilat-pose-guide` and `ilat-compare` on tiny toy runs with generated photo-like files (1024 x 1024
JPEG with half-resolution masks and strokes, a 1600 x 900 PNG, an EXIF-rotated JPEG, paint layers,
both stroke polarities, broken and oversized files, broken checkpoints)."""
import json
import os
import runpy
import shutil
import time

import numpy as np
import pytest
import torch

from ilat_ext.apps import photo_io as pio
from ilat_ext.data.pose import scale_pose
from ilat_ext.data.toy_pose import ToyPoses
from tests import photos
from tests.helpers import REPO
from tests.test_ilat_chain import train_toy_transformers
from tests.test_pose_guide import train_pose_runs


def _main(name):
    return runpy.run_path(os.path.join(REPO, "scripts", f"{name}.py"))["main"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("photo_runs")
    (tmp / "face").mkdir()
    (tmp / "pose").mkdir()
    face = train_toy_transformers(tmp / "face")
    pose = train_pose_runs(tmp / "pose")
    return {"ilat": face["ilat"], "taming": face["taming"], "pose": pose["ilat"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The inputs as users have them (see the module docstring)."""
    d = tmp_path_factory.mktemp("photos")
    f = {"jpg": photos.save(d / "face.jpg", photos.photo(1024, 1024, seed=3), quality=92)}
    mask = photos.ellipse_mask(512, 512, (256, 330), (90, 50))           # half resolution, antialiased
    f["mask"] = photos.save(d / "mask.png", mask)
    f["layer_mask"] = photos.save(d / "mask_layer.png", photos.paint_layer(mask, seed=4))
    light = photos.strokes_light_on_dark(512, 512, [((190, 320), (320, 340)), ((200, 350), (310, 300))])
    f["light"] = photos.save(d / "strokes_light.png", light)             # the release's demo files
    f["dark"] = photos.save(d / "strokes_dark.png", 255 - light)         # ours
    layer = np.zeros((512, 512, 4), np.uint8)
    layer[:, :, :3] = 200                                                # a light brush on a transparent layer
    layer[:, :, 3] = light
    f["stroke_layer"] = photos.save(d / "strokes_layer.png", layer)
    # a 1600 x 900 photo whose edit lies at its left edge, outside the centred 900 x 900 square
    f["wide"] = photos.save(d / "wide.png", photos.photo(900, 1600, seed=5))
    f["wide_mask"] = photos.save(d / "wide_mask.png", photos.ellipse_mask(450, 800, (90, 200), (60, 40)))
    f["wide_strokes"] = photos.save(d / "wide_strokes.png",
                                    255 - photos.strokes_light_on_dark(450, 800, [((50, 190), (130, 210))]))
    f["rotated"] = photos.jpeg_with_orientation(d / "rotated.jpg", photos.photo(900, 1600, seed=6))
    f["rotated_mask"] = photos.save(d / "rotated_mask.png", photos.ellipse_mask(450, 800, (400, 225), (80, 60)))
    f["huge"] = photos.oversized_png_header(d / "huge.png", 20000, 20000)
    f["truncated"] = photos.truncated_copy(f["jpg"], d / "truncated.jpg")
    f["zero"] = photos.truncated_copy(f["mask"], d / "zero.png", 0.0)
    return f


def _full_mask(path, shape):
    return pio.read_mask(path, shape).mask


def _edit(runs, tmp_path, capsys, image, mask, strokes, *extra, name="out.png"):
    out = str(tmp_path / name)
    rc = _main("edit_face")(["--run", runs["ilat"], "--image", image, "--mask", mask, "--strokes", strokes,
                             "--out", out, "--device", "cpu", *extra])
    said = capsys.readouterr()
    return rc, out, said.out, said.err


def test_a_1024_jpeg_with_half_size_mask_and_light_strokes_comes_back_at_1024(runs, files, tmp_path, capsys):
    grid = str(tmp_path / "grid.png")
    rc, out, said, _ = _edit(runs, tmp_path, capsys, files["jpg"], files["mask"], files["light"], "--grid", grid)
    assert rc == 0
    for expected in ("resized from 512x512 to the image's 1024x1024", "light lines on a dark background "
                     "(detected from the background): inverted", "region: 1024x1024 px at (0, 0)",
                     "(1024x1024, the source's size; every pixel outside the mask is the source's)"):
        assert expected in said, expected
    result, source = photos.decoded(out), photos.decoded(files["jpg"])
    mask = _full_mask(files["mask"], (1024, 1024))
    assert result.shape == (1024, 1024, 3)
    assert np.array_equal(result[~mask], source[~mask])                 # bit for bit, from a JPEG
    assert (result[mask] != source[mask]).any()
    assert photos.decoded(grid).shape[1] == 5 * 64 + 4 * 2              # input | mask | sketch | iLAT | result
    # the decode at the model's size, on request
    rc, small, said, _ = _edit(runs, tmp_path, capsys, files["jpg"], files["mask"], files["light"], "--model_size",
                               name="small.png")
    assert rc == 0 and photos.decoded(small).shape == (64, 64, 3) and "the model's size" in said


@pytest.mark.parametrize("mask, strokes, extra", [
    ("mask", "dark", ()),                                   # the inverse stroke file
    ("layer_mask", "light", ()),                            # the mask as an RGBA paint layer
    ("mask", "stroke_layer", ()),                           # strokes on a transparent layer
    ("mask", "light", ("--strokes_polarity", "light")),     # polarity forced
    ("mask", "light", ("--keep_size",)),                    # the old flag: the default
])
def test_equivalent_inputs_give_the_identical_edit(runs, files, tmp_path, capsys, mask, strokes, extra):
    rc, reference, _, _ = _edit(runs, tmp_path, capsys, files["jpg"], files["mask"], files["light"], name="ref.png")
    assert rc == 0
    rc, out, said, _ = _edit(runs, tmp_path, capsys, files["jpg"], files[mask], files[strokes], *extra)
    assert rc == 0
    assert np.array_equal(photos.decoded(out), photos.decoded(reference))
    if mask == "layer_mask":
        assert "its alpha channel is the mask" in said
    if strokes == "stroke_layer":
        assert "a stroke layer, opaque pixels are ink" in said


def test_a_wide_photo_with_an_edit_at_its_edge(runs, files, tmp_path, capsys):
    rc, out, said, _ = _edit(runs, tmp_path, capsys, files["wide"], files["wide_mask"], files["wide_strokes"])
    assert rc == 0 and "auto: the mask reaches outside the centred square" in said
    result, source = photos.decoded(out), photos.decoded(files["wide"])
    mask = _full_mask(files["wide_mask"], (900, 1600))
    assert result.shape == (900, 1600, 3)
    assert np.array_equal(result[~mask], source[~mask]) and (result[mask] != source[mask]).any()
    rc, out, _, err = _edit(runs, tmp_path, capsys, files["wide"], files["wide_mask"], files["wide_strokes"],
                            "--region", "full", name="full.png")
    assert rc == 2 and "outside the centred 900x900 square" in err and "--region mask" in err
    assert not os.path.exists(out)


def test_an_exif_rotated_jpeg_is_edited_as_displayed(runs, files, tmp_path, capsys):
    rc, out, _, _ = _edit(runs, tmp_path, capsys, files["rotated"], files["rotated_mask"], files["wide_strokes"])
    assert rc == 0
    result, source = photos.decoded(out), photos.decoded(files["rotated"])    # decoded: EXIF applied
    mask = _full_mask(files["rotated_mask"], (900, 1600))
    assert result.shape == source.shape == (900, 1600, 3)
    assert np.array_equal(result[~mask], source[~mask]) and (result[mask] != source[mask]).any()


def test_bad_files_are_one_line_errors_and_nothing_is_written(runs, files, tmp_path, capsys):
    start = time.perf_counter()
    rc, out, _, err = _edit(runs, tmp_path, capsys, files["huge"], files["mask"], files["light"])
    assert rc == 2 and time.perf_counter() - start < 3             # from the header, before the model loads
    assert "20000x20000 (400.0 MP)" in err and "--max_pixels" in err and len(err.strip().splitlines()) == 1
    rc, _, _, err = _edit(runs, tmp_path, capsys, files["huge"], files["mask"], files["light"],
                          "--max_pixels", "400000000")
    assert rc == 2 and "truncated or corrupt" in err                # past the limit, its data is bogus
    rc, _, _, err = _edit(runs, tmp_path, capsys, files["truncated"], files["mask"], files["light"])
    assert rc == 2 and "truncated.jpg" in err and "truncated or corrupt" in err
    rc, _, _, err = _edit(runs, tmp_path, capsys, files["jpg"], files["zero"], files["light"])
    assert rc == 2 and "zero.png" in err and "empty file (0 bytes)" in err
    rc, _, _, err = _edit(runs, tmp_path, capsys, files["jpg"], files["wide_mask"], files["light"])
    assert rc == 2 and "800x450" in err and "1024x1024" in err and "aspect ratio" in err
    assert not os.path.exists(out)


def test_batch_mode_reads_the_release_sample_layout(runs, files, tmp_path, capsys):
    data, out = tmp_path / "samples", tmp_path / "edited"
    for kind in ("source", "mask", "sketch"):
        (data / kind).mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(files["jpg"], data / "source" / f"{name}.jpg")
        shutil.copy(files["mask"], data / "mask" / f"{name}.png")
        shutil.copy(files["light"], data / "sketch" / f"{name}.png")
    shutil.copy(files["truncated"], data / "source" / "c.jpg")
    shutil.copy(files["mask"], data / "mask" / "c.png")
    shutil.copy(files["light"], data / "sketch" / "c.png")
    rc = _main("edit_face")(["--run", runs["ilat"], "--input_dir", str(data), "--out_dir", str(out), "--quiet",
                             "--device", "cpu"])
    said = capsys.readouterr().out
    assert rc == 0
    assert "skipping " + str(data / "source" / "c.jpg") in said and "truncated or corrupt" in said
    assert said.strip().splitlines()[-1].endswith("2 edited; skipped 1 unreadable or unusable")
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    assert photos.decoded(out / "a.png").shape == (1024, 1024, 3)


class Payload:
    """Pickled by reference: the safe loader must refuse to import it."""


def _broken_runs(run, tmp_path):
    """Copies of `run` whose last.ckpt is truncated, misses and adds a key, or carries a pickled object."""
    ckpt = os.path.join(run, "checkpoints", "last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    out = {}
    for kind in ("truncated", "keys", "pickled"):
        copy = str(tmp_path / kind)
        shutil.copytree(run, copy)
        target = os.path.join(copy, "checkpoints", "last.ckpt")
        if kind == "truncated":
            photos.truncated_copy(ckpt, target)
        elif kind == "keys":
            sd = dict(state["state_dict"])
            sd.pop(sorted(sd)[0])
            sd["no.such.weight"] = torch.zeros(1)
            torch.save({**state, "state_dict": sd}, target)
        else:
            torch.save({**state, "payload": Payload()}, target)
        out[kind] = copy
    return out


def _one_line_error(rc, err):
    lines = err.strip().splitlines()
    return rc == 2 and len(lines) == 1 and "Traceback" not in err and lines[0].startswith(("error:", "compare.py:"))


def test_broken_checkpoints_are_one_line_errors_in_every_command(runs, files, tmp_path, capsys):
    face = _broken_runs(runs["ilat"], tmp_path / "face")
    pose = _broken_runs(runs["pose"], tmp_path / "pose")
    expected = {"truncated": "truncated, or not written by torch.save", "keys": "missing keys", "pickled": "--unsafe_load"}
    item = ToyPoses(size=64, length=2, split="test")[0]
    ref_image = photos.save(tmp_path / "ref.png", ((item["cond_image"] + 1) * 127.5).round().astype(np.uint8))
    pose_files = {}
    for key, name in (("cond_pose_px", "ref"), ("pose_px", "target")):
        pose_files[name] = str(tmp_path / f"{name}.json")
        with open(pose_files[name], "w") as f:
            json.dump(np.asarray(item[key]).tolist(), f)
    for kind, message in expected.items():
        rc = _main("edit_face")(["--run", face[kind], "--image", files["jpg"], "--mask", files["mask"],
                                 "--strokes", files["light"], "--out", str(tmp_path / "o.png"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert _one_line_error(rc, err) and message in err and "last.ckpt" in err, (kind, err)
        rc = _main("pose_guide")(["--run", pose[kind], "--image", ref_image, "--ref_pose", pose_files["ref"],
                                  "--target_pose", pose_files["target"], "--out", str(tmp_path / "p.png"),
                                  "--device", "cpu"])
        err = capsys.readouterr().err
        assert _one_line_error(rc, err) and message in err, (kind, err)
        rc = _main("compare")(["--run", f"iLAT={face[kind]}", "--n", "2", "--no_fid", "--out", str(tmp_path / "c"),
                               "--device", "cpu"])
        err = capsys.readouterr().err
        assert _one_line_error(rc, err) and message in err, (kind, err)
    assert not os.path.exists(tmp_path / "o.png") and not os.path.exists(tmp_path / "p.png")


def test_pose_guiding_on_a_large_reference_photo(runs, tmp_path, capsys):
    """A 1600 x 900 reference with its poses in its own pixels: the result has its size, and every
    pixel outside the union mask is the reference's."""
    from ilat_ext.apps import pose_guide as pg

    H, W = 900, 1600
    data = ToyPoses(size=64, length=2, split="test")
    item = data[0]
    image = ((item["cond_image"] + 1) * 127.5).round().astype(np.uint8)
    big = np.clip(photos.photo(H, W, seed=7) * 0.2 + pio.cv2.resize(image, (W, H), interpolation=pio.cv2.INTER_CUBIC)
                  * 0.8, 0, 255).astype(np.uint8)
    ref_png = photos.save(tmp_path / "ref.jpg", big, quality=93)
    poses = {}
    for key, name in (("cond_pose_px", "ref"), ("pose_px", "target")):
        poses[name] = str(tmp_path / f"{name}.json")
        with open(poses[name], "w") as f:
            json.dump(scale_pose(item[key], W / 64, H / 64).tolist(), f)
    out, grid = str(tmp_path / "out.png"), str(tmp_path / "grid.png")
    rc = _main("pose_guide")(["--run", runs["pose"], "--image", ref_png, "--ref_pose", poses["ref"], "--target_pose",
                              poses["target"], "--out", out, "--grid", grid, "--device", "cpu"])
    said = capsys.readouterr().out
    assert rc == 0 and "Synthesised 1600x900" in said and "the photo's own pixels outside the mask" in said
    result, source = photos.decoded(out), photos.decoded(ref_png)
    run = pg.load_pose_model(runs["pose"], "cpu")
    ref = scale_pose(pg.read_pose(poses["ref"], H, W), 64 / W, 64 / H)
    tgt = scale_pose(pg.read_pose(poses["target"], H, W), 64 / W, 64 / H)
    mask = pg.frame_to_photo(run.model.masks_for(ref, tgt, 64, 64)[0, 0].cpu().numpy(), (H, W)) >= 0.5
    assert result.shape == (H, W, 3) and 0 < mask.mean() < 1
    assert np.array_equal(result[~mask], source[~mask]) and (result[mask] != source[mask]).any()
    # reference | target pose | mask | warped reference | iLAT | result
    assert photos.decoded(grid).shape[1] == 6 * 64 + 5 * 2


def test_compare_on_a_folder_of_your_own_photos(runs, files, tmp_path, capsys):
    data = tmp_path / "mine"
    for kind in ("images", "masks", "strokes"):
        (data / kind).mkdir(parents=True)
    for name, image, mask, strokes in (("a", "jpg", "mask", "light"), ("b", "wide", "wide_mask", "wide_strokes"),
                                       ("c", "truncated", "mask", "light")):
        ext = os.path.splitext(files[image])[1]
        shutil.copy(files[image], data / "images" / f"{name}{ext}")
        shutil.copy(files[mask], data / "masks" / f"{name}.png")
        shutil.copy(files[strokes], data / "strokes" / f"{name}.png")
    out = tmp_path / "cmp"
    rc = _main("compare")(["--data", f"photos:{data}", "--run", f"Taming={runs['taming']}:edit",
                           "--run", f"iLAT={runs['ilat']}", "--no_fid", "--out", str(out), "--device", "cpu"])
    said = capsys.readouterr().out
    assert rc == 0
    assert "truncated or corrupt" in said and f"photos:{data}: 2 photos; skipped 1 unreadable or unusable" in said
    assert "PSNR outside mask, decode (dB)" in said
    with open(out / "metrics.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["Taming", "iLAT"]
    # input | mask | condition | Taming | Taming pasted | iLAT | iLAT pasted, 64 px shown at 128
    assert photos.decoded(out / "grid.png").shape[1] == 7 * 128
