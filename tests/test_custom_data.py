"""Upstream's own-data recipe (`configs/custom_vqgan.yaml`, `taming.data.custom.*`) through main.py,
and the missing-files errors of upstream's datasets (named before any run folder exists)."""
import glob
import hashlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from ilat_ext import main as cli
from ilat_ext.data.checks import DataFilesMissing
from ilat_ext.data.custom import CustomTest, CustomTrain, rescale_and_crop
from ilat_ext.data.upstream import check_data_files
from ilat_ext.util import get_obj_from_str
from tests.helpers import REPO, TOY_VQGAN

CUSTOM_VQGAN = os.path.join(REPO, "configs", "custom_vqgan.yaml")
# md5 of upstream's configs/custom_vqgan.yaml (CompVis/taming-transformers): ours is that file unchanged
UPSTREAM_CUSTOM_VQGAN_MD5 = "1fe0cfcc392009adc797aebeae108860"


def _write_images(folder, sizes, seed=0):
    """Random RGB(A)/grey images of the given (w, h) sizes as PNG and JPEG; -> their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        mode, channels = [("RGB", 3), ("L", 1), ("RGBA", 4)][i % 3]
        pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        path = folder / f"img{i}.{'jpg' if mode == 'L' else 'png'}"
        image.save(path)
        paths.append(str(path))
    return paths


def _write_list(path, paths):
    path.write_text("\n".join(paths) + "\n\n")  # a trailing blank line, as `find > list` may leave
    return str(path)


def test_upstream_names_resolve_to_the_drop_ins_with_upstreams_parameters():
    assert get_obj_from_str("taming.data.custom.CustomTrain") is CustomTrain
    assert get_obj_from_str("taming.data.custom.CustomTest") is CustomTest
    with open(CUSTOM_VQGAN, "rb") as f:
        assert hashlib.md5(f.read()).hexdigest() == UPSTREAM_CUSTOM_VQGAN_MD5


def test_items_rescale_the_shorter_side_then_crop_the_centre(tmp_path):
    paths = _write_images(tmp_path / "imgs", [(48, 32), (20, 40), (33, 33)])
    train = CustomTrain(size=16, training_images_list_file=_write_list(tmp_path / "train.txt", paths))
    assert len(train) == 3
    for i, path in enumerate(paths):
        item = train[i]
        assert item["image"].shape == (16, 16, 3) and item["image"].dtype == np.float32
        assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0 and item["file_path_"] == path
    # brute-force reference for the first image: 48 x 32 -> 24 x 16 (bilinear), then columns 4..20
    source = np.asarray(Image.open(paths[0]).convert("RGB"))
    expected = np.asarray(Image.fromarray(source).resize((24, 16), Image.BILINEAR))[:, 4:20]
    np.testing.assert_allclose(train[0]["image"], expected / 127.5 - 1.0, atol=1e-6)
    # a folder instead of a list (upstream accepts both); size None keeps the image
    folder = CustomTest(size=None, test_images_list_file=str(tmp_path / "imgs"))
    assert sorted(folder.paths) == sorted(paths) and folder[2]["image"].shape == (33, 33, 3)
    # random crops are squares of the right size taken from the rescaled image, in varying places
    crops = {rescale_and_crop(source, 16, random_crop=True, rng=np.random.default_rng(s)).tobytes() for s in range(8)}
    assert len(crops) > 1
    resized = np.asarray(Image.fromarray(source).resize((24, 16), Image.BILINEAR))
    assert all(any(np.array_equal(np.frombuffer(c, np.uint8).reshape(16, 16, 3), resized[:, x:x + 16])
                   for x in range(9)) for c in crops)


def test_missing_lists_and_images_are_named(tmp_path):
    with pytest.raises(DataFilesMissing, match=r"training_images_list_file '.*nope.txt' not found: put there a text "
                                               r"file with one image path per line"):
        CustomTrain(size=8, training_images_list_file=str(tmp_path / "nope.txt"))
    listed = _write_list(tmp_path / "test.txt", [str(tmp_path / "gone.png")])
    with pytest.raises(DataFilesMissing, match=r"1 of the 1 images in test_images_list_file .* are missing: .*gone.png"):
        CustomTest(size=8, test_images_list_file=listed)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataFilesMissing, match="names no images"):
        CustomTest(size=8, test_images_list_file=str(tmp_path / "empty.txt"))


@pytest.mark.slow
def test_upstream_custom_vqgan_yaml_trains_on_generated_images_through_main(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = _write_images(tmp_path / "my_images", [(300, 260), (256, 256), (400, 280), (270, 300), (256, 320)])
    train = _write_list(tmp_path / "train.txt", paths[:4])
    test = _write_list(tmp_path / "test.txt", paths[4:])
    # only the list paths, batch size, workers, model width and the perceptual term (no LPIPS weights
    # offline) are overridden, as the docs' recipe says
    trainer = cli.main(["-l", str(tmp_path / "logs"), "--base", CUSTOM_VQGAN, "-t", "True", "--max_steps", "2",
                        f"data.params.train.params.training_images_list_file={train}",
                        f"data.params.validation.params.test_images_list_file={test}",
                        "data.params.batch_size=1", "data.params.num_workers=0", "model.params.ddconfig.ch=32",
                        "model.params.lossconfig.params.perceptual_weight=0.0"])
    assert trainer.global_step == 2
    assert type(trainer.lightning_module).__module__ == "ilat_ext.models.vqgan"
    (logdir,) = glob.glob(str(tmp_path / "logs" / "*_custom_vqgan"))
    checkpoint = torch.load(os.path.join(logdir, "checkpoints", "last.ckpt"), weights_only=True)
    assert checkpoint["global_step"] == 2
    assert glob.glob(os.path.join(logdir, "images", "train", "reconstructions_gs-*.png"))


def test_upstream_datasets_name_the_files_they_need_before_a_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataFilesMissing, match=r"ImageNetTrain needs .*cache/autoencoders/data/ILSVRC2012_train/"
                                               r"ILSVRC2012_img_train.tar: put ImageNet's ILSVRC2012_img_train.tar"):
        check_data_files({"params": {"train": {"target": "taming.data.imagenet.ImageNetTrain"}}})
    (tmp_path / "cache" / "autoencoders" / "data" / "ILSVRC2012_train").mkdir(parents=True)
    (tmp_path / "cache" / "autoencoders" / "data" / "ILSVRC2012_train" / ".ready").write_text("")
    check_data_files({"params": {"train": {"target": "taming.data.imagenet.ImageNetTrain"}}})  # prepared: fine
    with pytest.raises(DataFilesMissing, match=r"COCO's train2017 captions file"):
        check_data_files({"params": {"train": {"target": "taming.data.coco.CocoImagesAndCaptionsTrain"}}})
    with pytest.raises(DataFilesMissing, match="lacks the COCO scene-image data"):
        check_data_files({"target": "taming.data.annotated_objects_coco.AnnotatedObjectsCoco"})

    # through main.py, upstream's faceshq data section: one line, exit 2, no run folder
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["-l", str(tmp_path / "logs"), "--base", TOY_VQGAN, "-t",
                  "data.params.train.target=taming.data.faceshq.FacesHQTrain",
                  "data.params.train.params={size: 256, crop_size: 256, coord: true}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ": error: taming.data.faceshq.FacesHQTrain needs data/celebahq (relative to " in err[-1]
    assert err[-1].endswith("put CelebA-HQ as upstream's .npy files (one image each, 1 x 3 x 1024 x 1024) there")
    assert not any(line.startswith("usage:") for line in err)
    assert not os.path.exists(tmp_path / "logs")


def test_unconditional_transformer_as_upstreams_custom_transformer_yaml():
    from tests.helpers import tiny_ilat_config
    from ilat_ext.models import TamingTransformer

    config = tiny_ilat_config()
    config["cond_stage_config"] = {"target": "taming.models.dummy_cond_stage.DummyCondStage",
                                   "params": {"dummyparam": False}}  # never built, as upstream
    config["cond_stage_key"] = "image"
    model = TamingTransformer(**config, unconditional=True)
    assert model.be_unconditional and model.cond_stage_key == "image"


# Every target in upstream's configs/ (CompVis/taming-transformers), by how it resolves here.
UPSTREAM_RESOLVING = [
    "taming.models.vqgan.VQModel", "taming.models.vqgan.VQSegmentationModel",
    "taming.models.cond_transformer.Net2NetTransformer", "taming.modules.transformer.mingpt.GPT",
    "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator", "taming.modules.losses.DummyLoss",
    "taming.modules.losses.segmentation.BCELossWithQuant", "taming.models.dummy_cond_stage.DummyCondStage",
    "taming.data.custom.CustomTrain", "taming.data.custom.CustomTest", "main.DataModuleFromConfig",
    "cutlit.DataModuleFromConfig"]
# upstream's classes (they need albumentations), their files checked first
UPSTREAM_NEEDING_FILES = [
    "taming.data.imagenet.ImageNetTrain", "taming.data.imagenet.ImageNetValidation",
    "taming.data.faceshq.FacesHQTrain", "taming.data.faceshq.FacesHQValidation",
    "taming.data.coco.CocoImagesAndCaptionsTrain", "taming.data.sflckr.Examples"]
# neither in the PyPI package nor ported (docs/training.md says so)
UPSTREAM_NOT_PORTED = ["taming.models.vqgan.AutoencoderKL", "taming.modules.misc.coord.CoordStage",
                       "taming.data.annotated_objects_coco.AnnotatedObjectsCoco",
                       "taming.data.annotated_objects_open_images.AnnotatedObjectsOpenImages"]


def test_upstream_config_targets_resolve_or_say_what_they_need():
    from ilat_ext.data.upstream import NOT_PORTED, UPSTREAM_DATA_FILES

    for target in UPSTREAM_RESOLVING:
        assert callable(get_obj_from_str(target)), target
    assert all(t in UPSTREAM_DATA_FILES for t in UPSTREAM_NEEDING_FILES)
    assert [t for t in UPSTREAM_NOT_PORTED if t.startswith(tuple(NOT_PORTED))] == UPSTREAM_NOT_PORTED[2:]
    docs = open(os.path.join(REPO, "docs", "training.md")).read()
    assert "`taming.models.vqgan.AutoencoderKL`" in docs and "`taming.modules.misc.coord.CoordStage`" in docs


def test_dummy_cond_stage_and_bce_loss_with_quant_behave_as_upstreams():
    stage = get_obj_from_str("taming.models.dummy_cond_stage.DummyCondStage")(conditional_key="objects_bbox")
    c = torch.randint(0, 10, (2, 5))
    quant, _, (_, _, indices) = stage.encode(c)
    assert quant is c and indices is c and stage.decode(c) is c and not list(stage.parameters())
    loss_fn = get_obj_from_str("taming.modules.losses.segmentation.BCELossWithQuant")(codebook_weight=0.5)
    target = (torch.rand(2, 3, 4, 4) > 0.5).float()
    logits = torch.randn(2, 3, 4, 4)
    loss, log = loss_fn(torch.tensor(0.2), target, logits, split="val")
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    assert torch.allclose(loss, bce + 0.1, atol=1e-5) and set(log) == {"val/total_loss", "val/bce_loss", "val/quant_loss"}


def test_docstring_examples():
    import doctest

    from ilat_ext.data import custom, upstream

    for module in (custom, upstream):
        failures, attempted = doctest.testmod(module)
        assert attempted and not failures, module.__name__
