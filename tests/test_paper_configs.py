"""The paper's transformer configs say what the paper says, build, and read their data."""
import os

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from omegaconf import OmegaConf

from ilat_ext.data.penn_action import frame_name
from ilat_ext.models import ILATTransformer, PoseILATTransformer, TamingTransformer
from ilat_ext.util import instantiate_from_config
from tests.helpers import REPO

FACE = {"ilat_ffhq": (ILATTransformer, 514, 2048), "taming_ffhq": (TamingTransformer, 511, 2048)}
POSE = {f"{kind}_{ds}": (PoseILATTransformer, 526, 1024) for kind in ("ilat", "taming") for ds in ("penn_action", "sdf")}


def _config(name):
    return OmegaConf.load(os.path.join(REPO, "configs", f"{name}.yaml"))


@pytest.mark.parametrize("name", sorted({**FACE, **POSE}))
def test_paper_hyperparameters(name):
    """Sec. 4 "Implementation Details": 12 layers, 12 heads, width 768; AdamW lr 5e-5 at batch 16
    (main.py's scaling), betas (0.9, 0.95), weight decay 0.01, 10k warm-up, linear decay to 0 at 300k."""
    cls, block, vocab = {**FACE, **POSE}[name]
    cfg = _config(name)
    p = cfg.model.params
    t = p.transformer_config.params
    assert (t.n_layer, t.n_head, t.n_embd, t.vocab_size, t.block_size) == (12, 12, 768, vocab, block)
    assert cfg.data.params.batch_size == 16
    assert cfg.model.base_learning_rate * cfg.data.params.batch_size == pytest.approx(5e-5)
    assert tuple(p.betas) == (0.9, 0.95) and p.weight_decay == 0.01
    assert (p.warmup_steps, p.decay_steps, cfg.lightning.trainer.max_steps) == (10000, 300000, 300000)
    assert cfg.model.target.rsplit(".", 1)[1] == cls.__name__
    if name.startswith("ilat"):
        assert p.lm_rate == 0.15 and p.first_stage_config.target.endswith("TSVQModel")
    elif name in POSE:  # the Taming baseline of the pose task: vanilla AR on a plain VQGAN
        assert p.lm_rate == 1.0 and p.first_stage_config.target.endswith(".VQModel")
    # the sequence fits: [c_s, 256 condition tokens, (13 pose features), z_s, 255 grid tokens]
    used = {"ilat_ffhq": 1 + 256 + 1 + 255, "taming_ffhq": 256 + 255}.get(name, 1 + 256 + 13 + 1 + 255)
    assert used <= block


@pytest.mark.parametrize("name", ["ilat_ffhq", "ilat_penn_action", "taming_penn_action"])
def test_paper_models_build_and_run(name):
    """The whole model builds from the config (one layer instead of twelve to keep it quick) and the
    training forward runs on a 256-px batch: every parameter name is valid and the sequence fits;
    iLAT's greedy local edit is the argmax of the teacher-forced pass over it."""
    cfg = _config(name).model
    cfg.params.transformer_config.params.n_layer = 1
    cfg.params.first_stage_config.params.ckpt_path = None
    if isinstance(cfg.params.cond_stage_config, str):
        assert cfg.params.cond_stage_config == "__is_first_stage__"
    else:
        cfg.params.cond_stage_config.params.ckpt_path = None
    model = instantiate_from_config(OmegaConf.to_container(cfg)).eval()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    mask = torch.zeros(1, 1, 256, 256)
    mask[:, :, 64:160, 96:192] = 1
    if name == "ilat_ffhq":
        c, extra = torch.rand(1, 1, 256, 256) * 2 - 1, None
        logits, target, weight = model(x, c, mask)
    else:
        c, extra = x, model.pose_features(torch.rand(1, 13, 3))
        logits, target, weight = model(x, c, mask, extra)
    assert logits.shape[:2] == target.shape == (1, 256) and weight.sum() > 0
    if not name.startswith("ilat"):
        return                          # the Taming baseline's own sampler is Taming's edit, not the local one
    # the greedy local edit emits, at every generated position, the argmax of the teacher-forced
    # LA-mask pass over its own result (what training computes), up to float round-off
    with torch.no_grad():
        r = model.sample_local(x, mask, c, extra)
        _, c_idx = model.encode_to_c(c)
        tf, _, _ = model.forward_tokens(r.indices, c_idx, r.token_mask, extra)
    tf = tf[..., :model.first_stage_model.quantize.n_e]
    generated = r.token_mask
    assert int(generated.sum()) == 36                                      # the 6 x 6 cells of the mask
    chosen = tf.gather(-1, r.indices[..., None])[..., 0]
    assert (chosen[generated] >= tf.amax(-1)[generated] - 1e-4).all()


def test_pose_configs_read_penn_action(tmp_path):
    """The pose configs' data sections read a Penn Action layout (frames/<video>/*.jpg and
    labels/<video>.mat) into items the pose model trains on."""
    rng = np.random.default_rng(0)
    for video, train in (("0001", 1), ("0002", -1)):
        (tmp_path / "labels").mkdir(exist_ok=True)
        x = rng.uniform(10, 70, (4, 13))
        y = rng.uniform(10, 50, (4, 13))
        scipy.io.savemat(tmp_path / "labels" / f"{video}.mat",
                         {"x": x, "y": y, "visibility": np.ones((4, 13)), "train": train, "bbox": np.zeros((4, 4)),
                          "nframes": 4, "action": "jump", "pose": "front"})
        (tmp_path / "frames" / video).mkdir(parents=True)
        for k in range(4):
            cv2.imwrite(str(tmp_path / "frames" / video / frame_name(k)), np.full((60, 80, 3), 40 * k, np.uint8))
    for name in ("ilat_penn_action", "tsvqgan_imagenet_finetune"):
        data = _config(name).data.params
        for split in ("train", "validation"):
            spec = OmegaConf.to_container(data[split])
            spec["params"].update(root=str(tmp_path), size=64)
            item = instantiate_from_config(spec)[0]
            assert item["image"].shape == (64, 64, 3) and item["mask"].shape == (64, 64, 1)
            assert item["pose"].shape == (13, 3) and "cond_image" in item
