"""Stored tokens: scripts/quantize_dataset.py, `ilat_ext.data.tokens.TokenDataset` and training from them.

Tiny untrained toy stages (as tests/test_ilat_chain.py) and a 1-layer transformer; a few toy faces.
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ilat_ext import main as cli
from ilat_ext.data import tokens
from ilat_ext.data.tokens import TokenDataset, read_token_file, write_token_file
from ilat_ext.models import ILATTransformer, TamingTransformer
from ilat_ext.util import instantiate_from_config
from tests.helpers import REPO, TINY_GPT_OVERRIDES
from tests.test_ilat_chain import _stage_ckpts

SCRIPT = os.path.join(REPO, "scripts", "quantize_dataset.py")
TOY = {name: os.path.join(REPO, "configs", "toy", f"{name}.yaml") for name in ("ilat", "taming", "ilat_tokens")}
TINY_GPT = TINY_GPT_OVERRIDES
N_TRAIN, N_VAL, K = 4, 2, 3


def _stages(paths, first=None):
    return [f"model.params.first_stage_config.params.ckpt_path={first or paths['first_stage_config']}",
            f"model.params.cond_stage_config.params.ckpt_path={paths['cond_stage_config']}"]


def _data_overrides():
    return [f"data.params.train.params.dataset.params.length={N_TRAIN}",
            f"data.params.validation.params.dataset.params.length={N_VAL}"]


def _quantize(argv):
    from ilat_ext.cli.quantize_dataset import run   # the command of SCRIPT, returning its summary

    return run(argv + ["--no-progress", "--device", "cpu"])


def _build(name, paths, extra=()):
    config = OmegaConf.merge(OmegaConf.load(TOY[name]),
                             OmegaConf.from_dotlist(_stages(paths) + TINY_GPT + _data_overrides() + list(extra)))
    return instantiate_from_config(config.model).eval(), config


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Stage checkpoints, train/validation token files (K masks each) and the iLAT model that made them."""
    root = tmp_path_factory.mktemp("tokens")
    paths = _stage_ckpts(root)
    files = {}
    for split in ("train", "validation"):
        files[split] = str(root / f"toy_tokens_{split}.npz")
        summary = _quantize(["--config", TOY["ilat"], *_stages(paths), *TINY_GPT, *_data_overrides(),
                             "--split", split, "--out", files[split], "--masks_per_image", str(K),
                             "--batch_size", "3"])
        assert summary["count"] == (N_TRAIN if split == "train" else N_VAL) and summary["skipped"] == 0
    model, config = _build("ilat", paths)
    return {"root": root, "paths": paths, "files": files, "model": model, "config": config}


def _images(config, split, index):
    """(dataset, x (1, 3, H, W), sketch (1, 1, H, W), the item's mask (1, 1, H, W)) of item `index`."""
    dataset = instantiate_from_config(config.data.params[split])
    item = torch.utils.data.default_collate([dataset[index]])
    to_chw = lambda v: v.permute(0, 3, 1, 2).float()  # noqa: E731
    return dataset, to_chw(item["image"]), to_chw(item["sketch"]), to_chw(item["mask"])


def test_stored_indices_equal_encoding_each_image_with_each_mask(toy):
    """(a) z[i, k] = encode_target(x_i, mask k), token_mask = M_q of mask k, z_full = the mask-free
    encoding, c = encode_to_c(sketch), exactly; variant 0 is the item's own mask, variant k the mask
    source's stream seed + k; the masks differ, and so do tokens outside M_q (the leaked ring)."""
    model, config = toy["model"], toy["config"]
    arrays, meta = read_token_file(toy["files"]["validation"])
    assert arrays["z"].dtype == np.int16 and arrays["z"].shape == (N_VAL, K, 256)
    assert meta["latent_shape"] == [16, 16] and meta["cond_length"] == 256 and meta["split"] == "validation"
    assert meta["first_stage_config"]["params"]["ckpt_path"] == toy["paths"]["first_stage_config"]
    ring_differs = False
    for i in range(N_VAL):
        dataset, x, sketch, own_mask = _images(config, "validation", i)
        masks = [own_mask] + [torch.from_numpy(dataset.mask_source.sample(i, 64, 64, stream=dataset.seed + k))[None, None]
                              for k in range(1, K)]
        _, c_idx = model.encode_to_c(sketch)
        assert np.array_equal(arrays["c"][i], c_idx[0].numpy())
        z_full, _ = model.encode_target(x, None)
        assert np.array_equal(arrays["z_full"][i], z_full[0].numpy())
        for k, mask in enumerate(masks):
            z, _ = model.encode_target(x, mask)
            m_q = model.token_mask(x, mask)
            assert np.array_equal(arrays["z"][i, k], z[0].numpy()), (i, k)
            assert np.array_equal(arrays["token_mask"][i, k], m_q[0].numpy()), (i, k)
            outside = ~m_q[0].numpy()
            ring_differs |= bool((arrays["z"][i, k][outside] != arrays["z_full"][i][outside]).any())
        assert not np.array_equal(arrays["token_mask"][i, 0], arrays["token_mask"][i, 1])
    assert ring_differs  # why K masks are stored: tokens outside the mask depend on the mask


def test_token_dataset_items_and_variants(toy):
    path = toy["files"]["train"]
    arrays, _ = read_token_file(path)
    item = TokenDataset(path, variant="first", split="train")[1]
    assert item["z_indices"].dtype == np.int64 and item["token_mask"].dtype == bool and item["index"] == 1
    assert np.array_equal(item["z_indices"], arrays["z"][1, 0]) and item["variant"] == 0
    assert np.array_equal(item["c_indices"], arrays["c"][1]) and np.array_equal(item["z_full"], arrays["z_full"][1])
    assert TokenDataset(path, variant=2)[0]["variant"] == 2
    torch.manual_seed(0)
    random = TokenDataset(path)
    seen = {random[0]["variant"] for _ in range(40)}
    assert seen == set(range(K))
    batch = torch.utils.data.default_collate([random[0], random[1]])
    assert batch["z_indices"].shape == (2, 256) and batch["token_mask"].dtype == torch.bool


def test_forward_tokens_equals_forward_on_images(toy):
    """(b) iLAT: forward_tokens on stored tokens = forward on the images (eval, and training with
    lm_rate under the same seed), and the same loss through shared_step; Taming likewise on z_full."""
    model, config = toy["model"], toy["config"]
    dataset = instantiate_from_config(config.data.params.validation)
    images = torch.utils.data.default_collate([dataset[0], dataset[1]])
    token_batch = torch.utils.data.default_collate([TokenDataset(toy["files"]["validation"], variant="first")[i]
                                                    for i in range(2)])
    x, c = model.get_xc(images)
    mask = model.get_mask(images, x)
    for training in (False, True):
        model.train(training)
        torch.manual_seed(5)
        logits, target, weight = model(x, c, mask)
        torch.manual_seed(5)
        logits_t, target_t, weight_t = model.forward_tokens(token_batch["z_indices"], token_batch["c_indices"],
                                                            token_batch["token_mask"])
        torch.testing.assert_close(logits_t, logits, atol=1e-5, rtol=0)
        assert torch.equal(target_t, target) and torch.equal(weight_t, weight)
        torch.manual_seed(6)
        loss = model.shared_step(images, 0)
        torch.manual_seed(6)
        torch.testing.assert_close(model.shared_step(token_batch, 0), loss, atol=1e-5, rtol=0)
    model.eval()

    taming, _ = _build("taming", toy["paths"])
    taming.check_token_meta(read_token_file(toy["files"]["validation"])[1])  # same stages: the file fits
    logits, target = taming(x, c)
    logits_t, target_t = taming.forward_tokens(token_batch["z_full"], token_batch["c_indices"])
    torch.testing.assert_close(logits_t, logits, atol=1e-5, rtol=0)
    assert torch.equal(target_t, target)
    torch.testing.assert_close(taming.shared_step(token_batch, 0), taming.shared_step(images, 0), atol=1e-5, rtol=0)
    log = taming.log_images(token_batch, N=1)  # tokens only: decoded, no crash
    assert set(log) == {"inputs", "mask", "reconstructions", "taming", "taming_star"}
    assert log["inputs"].shape == (1, 3, 64, 64)


def _train_from_tokens(toy, tmp_path, extra=()):
    return cli.main(["-l", str(tmp_path / "logs"), "--base", TOY["ilat_tokens"], "-t", "--max_steps", "2",
                     *_stages(toy["paths"]), *TINY_GPT, "data.params.batch_size=2",
                     f"data.params.train.params.path={toy['files']['train']}",
                     f"data.params.validation.params.path={toy['files']['validation']}",
                     "lightning.trainer.val_check_interval=1.0", "lightning.callbacks.image_logger.params.max_images=2",
                     *extra])


@pytest.mark.slow
def test_training_from_tokens_through_main_runs_no_encoder(toy, tmp_path, monkeypatch):
    """(c) main.py with configs/toy/ilat_tokens.yaml trains 2 steps and logs images, while encoding
    an image would fail: nothing runs the frozen encoders."""
    def no_encoding(*args, **kwargs):
        raise AssertionError("an encoder ran while training from tokens")

    monkeypatch.setattr(TamingTransformer, "encode_target", no_encoding)
    monkeypatch.setattr(TamingTransformer, "encode_to_c", no_encoding)
    monkeypatch.setattr(ILATTransformer, "encode_to_c", no_encoding)
    monkeypatch.chdir(tmp_path)
    trainer = _train_from_tokens(toy, tmp_path)
    assert trainer.global_step == 2
    run = glob.glob(str(tmp_path / "logs" / "*"))[0]
    for key in ("ilat", "inputs", "mask", "overview"):
        assert glob.glob(os.path.join(run, "images", "val", f"{key}_*.png")), key
    assert trainer.lightning_module.token_latent_shape == (16, 16)


@pytest.mark.slow
def test_stage_mismatch_is_a_clear_error(toy, tmp_path, monkeypatch):
    """(d) A file made with another codebook size, or with other first-stage weights, is refused
    naming what differs; through main.py before the first step."""
    model = toy["model"]
    _, meta = read_token_file(toy["files"]["train"])
    model.check_token_meta(meta)  # the model that made it: fine
    other = json.loads(json.dumps(meta))
    other["stages"]["first_stage"]["n_embed"] = 128
    other["latent_length"] = 600
    with pytest.raises(ValueError, match=r"first_stage n_embed: 128 in the file, 256 in the model") as err:
        model.check_token_meta(other, source="x.npz")
    assert "block_size" in str(err.value) and "x.npz" in str(err.value)

    state = torch.load(toy["paths"]["first_stage_config"], weights_only=True)
    key = next(k for k in state["state_dict"] if k.startswith("encoder.") and k.endswith("weight"))
    state["state_dict"][key] = state["state_dict"][key] + 0.01
    changed = str(tmp_path / "changed_first_stage.ckpt")
    torch.save(state, changed)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"first_stage weights differ .*changed_first_stage\.ckpt"):
        _train_from_tokens(toy, tmp_path, [f"model.params.first_stage_config.params.ckpt_path={changed}"])


def test_token_file_errors(toy, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        TokenDataset(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="no 'meta'"):
        TokenDataset(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a token file"):
        TokenDataset(tmp_path / "junk.npz")
    arrays, meta = read_token_file(toy["files"]["validation"])
    old = str(tmp_path / "old.npz")
    write_token_file(old, arrays, meta)
    with np.load(old) as data:
        saved = {k: data[k] for k in data.files}
    saved["meta"] = np.array(json.dumps(dict(meta, version=99)))
    np.savez(old, **saved)
    with pytest.raises(ValueError, match="version 99"):
        TokenDataset(old)
    with pytest.raises(ValueError, match="split 'validation', not 'train'"):
        TokenDataset(toy["files"]["validation"], split="train")
    with pytest.raises(ValueError, match="variant"):
        TokenDataset(toy["files"]["validation"], variant=K)


def test_interrupted_writes_leave_no_partial_file(toy, tmp_path, monkeypatch):
    """(e) A failure while writing leaves neither the file nor a temp file, and keeps an older file
    intact; an interrupt while encoding writes nothing."""
    arrays, meta = read_token_file(toy["files"]["validation"])
    out = tmp_path / "tokens.npz"

    def half_written(f, arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(tokens, "_write_npz", half_written)
    with pytest.raises(KeyboardInterrupt):
        write_token_file(out, arrays, meta)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    write_token_file(out, arrays, meta)
    before = out.read_bytes()
    monkeypatch.setattr(tokens, "_write_npz", half_written)
    with pytest.raises(KeyboardInterrupt):
        write_token_file(out, {k: v[:1] for k, v in arrays.items()}, dict(meta, count=1))
    assert os.listdir(tmp_path) == ["tokens.npz"] and out.read_bytes() == before
    monkeypatch.undo()

    calls = []

    def interrupt_second_batch(self, x, mask=None):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return original(self, x, mask)

    original = TamingTransformer.encode_target
    monkeypatch.setattr(TamingTransformer, "encode_target", interrupt_second_batch)
    fresh = tmp_path / "fresh.npz"
    with pytest.raises(KeyboardInterrupt):
        _quantize(["--config", TOY["ilat"], *_stages(toy["paths"]), *TINY_GPT, *_data_overrides(),
                   "--split", "train", "--out", str(fresh), "--batch_size", "2"])
    assert sorted(os.listdir(tmp_path)) == ["tokens.npz"]


def test_script_with_missing_config_fails_naming_the_path(tmp_path):
    """(f) Non-zero exit and the missing path in the message (before any heavy import)."""
    missing = str(tmp_path / "no_such_config.yaml")
    result = subprocess.run([sys.executable, SCRIPT, "--config", missing, "--out", str(tmp_path / "t.npz")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"config file not found: {missing}" in result.stderr
    assert not os.path.exists(tmp_path / "t.npz")
