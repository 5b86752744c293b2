"""The toy pose configs through main.py: PointMLP features in the LA mask's condition part, the
vanilla-AR baseline, iLAT* as a config switch, and pose-guided synthesis from a trained run."""
import glob
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ilat_ext import main as cli
from ilat_ext.data.toy_pose import ToyPoses
from ilat_ext.masks import la_attention_mask
from ilat_ext.models import PoseILATTransformer
from ilat_ext.modules.pointmlp import PointMLP
from ilat_ext.runs import load_run
from ilat_ext.util import instantiate_from_config
from tests.helpers import REPO, SHORT_RUN_OVERRIDES, TINY_GPT_OVERRIDES

SMALL = TINY_GPT_OVERRIDES + SHORT_RUN_OVERRIDES + ["data.params.train.params.length=4",
                                                   "data.params.validation.params.length=2"]


@pytest.fixture(scope="module")
def stage_ckpt(tmp_path_factory):
    """An untrained toy pose TS-VQGAN checkpoint built from the config's own params."""
    cfg = OmegaConf.load(os.path.join(REPO, "configs", "toy", "ilat_pose.yaml")).model.params.first_stage_config
    cfg = cfg.copy()
    cfg.params.ckpt_path = None
    cfg.params.lossconfig = {"target": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
                             "params": {"disc_start": 0, "perceptual_weight": 0.0}}
    torch.manual_seed(0)
    model = instantiate_from_config(cfg)
    path = str(tmp_path_factory.mktemp("stage") / "pose_ts.ckpt")
    torch.save({"state_dict": model.state_dict(), "global_step": 0}, path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, stage_ckpt):
    """iLAT, iLAT* (plain-VQGAN first stage) and the vanilla-AR baseline, 2 steps each."""
    logs = tmp_path_factory.mktemp("logs")
    out = {}
    for name, config, extra in (("ilat", "ilat_pose", []),
                                ("ilat_star", "ilat_pose", ["model.params.first_stage_config.target=ilat_ext.models.VQModel"]),
                                ("taming", "taming_pose", [])):
        trainer = cli.main(["-l", str(logs), "--base", os.path.join(REPO, "configs", "toy", f"{config}.yaml"), "-t",
                            "-n", name, "--max_steps", "2",
                            f"model.params.first_stage_config.params.ckpt_path={stage_ckpt}"] + extra + SMALL)
        assert trainer.global_step == 2
        out[name] = glob.glob(str(logs / f"*_{name}"))[0]
    return out


def test_pointmlp_shapes_and_errors():
    mlp = PointMLP(32)
    pose = torch.rand(2, 13, 3)
    assert mlp(pose).shape == (2, 13, 32)
    assert [m.out_features for m in mlp.mlp if isinstance(m, torch.nn.Linear)] == [64, 256, 32]  # the release's widths
    assert (mlp.mlp(pose) >= 0).all()                     # ReLU after every layer
    with pytest.raises(ValueError, match=r"\(B, 13, 3\)"):
        mlp(torch.rand(2, 12, 3))
    with pytest.raises(ValueError, match="NaN"):
        mlp(torch.full((1, 13, 3), float("nan")))


def test_pose_runs_train_log_and_synthesize(runs):
    """The runs wrote their grids, read back, and redraw a held-out figure; iLAT* differs from iLAT
    only in the first stage's class. The pose features are condition positions: condition rows (pose
    included) attend to no target position, and another pose changes the masked tokens' predictions
    (and the global rows' too: they read the whole condition part). What must not leak does not: the
    edit keeps the reference's own tokens outside the mask, and repainting the target inside the
    mask (same condition frame, same pose) leaves the edit's tokens identical and its image equal to
    float32 round-off, where iLAT*'s plain VQGAN carries the repaint out of the mask."""
    for name, run in runs.items():
        assert glob.glob(os.path.join(run, "images", "val", "overview_*.png")), name
    models = {name: load_run(run)[0] for name, run in runs.items()}
    assert type(models["ilat_star"].first_stage_model).__name__ == "VQModel"
    assert type(models["ilat"].first_stage_model).__name__ == "TSVQModel"
    data = ToyPoses(size=64, length=4, split="test")
    item = data[1]
    reference = torch.from_numpy(item["cond_image"]).permute(2, 0, 1)[None]
    model: PoseILATTransformer = models["ilat"]
    result = model.synthesize(reference, item["cond_pose_px"], item["pose_px"])
    assert result.image.shape == reference.shape
    mask = torch.from_numpy(item["mask"]).permute(2, 0, 1)[None]
    z, _ = model.encode_target(reference, mask)
    m_q = model.token_mask(reference, mask)
    assert m_q.any() and not m_q.all()
    assert torch.equal(result.indices[~m_q], z[~m_q])
    # the mask synthesize builds is the dataset's union mask
    assert torch.equal(model.masks_for(item["cond_pose_px"], item["pose_px"], 64, 64), mask)

    assert model.warp_reference and model.pose_map_conv is not None                              # the toy config's
    pose, ref_pose = torch.from_numpy(item["pose"])[None], torch.from_numpy(item["cond_pose"])[None]
    # the condition frame is the reference with its limbs moved to the target pose, in training,
    # in edit_inputs and in synthesize alike
    c = model.condition_image(reference, pose, ref_pose)
    assert (c != reference).any(-3)[0].float().mean() > 0.02
    inputs = model.edit_inputs({k: torch.as_tensor(v)[None] for k, v in item.items() if k not in ("video", "index")})
    torch.testing.assert_close(inputs["c"], c, rtol=0, atol=0)
    assert torch.equal(model.get_xc({k: torch.as_tensor(v)[None] for k, v in item.items()})[1], c)
    assert torch.equal(model.sample_local(**inputs).indices, result.indices)
    extra_a = model.pose_features(pose)
    torch.testing.assert_close(extra_a, inputs["extra"], rtol=0, atol=0)
    extra_b = model.pose_features(torch.rand(1, 13, 3))
    with torch.no_grad():
        la, _, w = model.eval()(reference, c, mask, extra_a)
        lb, _, _ = model(reference, c, mask, extra_b)
    changed = (la - lb).abs().amax(-1)[0] > 1e-6           # (L,) rows predicting grid tokens
    assert changed[w[0] > 0].any()                         # the masked tokens' predictions read the pose
    assert changed[w[0] == 0].any()                        # and so do global rows (the whole condition part)
    emb, _, n_cond = model.sequence_inputs(torch.zeros(1, 256, dtype=torch.long), extra_a)
    assert n_cond == 1 + 256 + 13 and emb.shape[1] == n_cond + 1
    allowed = la_attention_mask(m_q, n_cond, "start")[0]
    assert not allowed[:n_cond, n_cond:].any()             # condition rows (pose included) see no target

    # no leak: the target repainted inside the mask, with the same condition frame and pose features,
    # gives the same edit: the kept latents come from the two-stream encoder (equal to float32
    # round-off: its sums run in another order, ~2e-6 here), the generated tokens read only the
    # kept tokens and the condition
    repainted = torch.where(mask.bool(), -reference.flip(-1), reference)
    assert torch.equal(inputs["x"], reference) and torch.equal(inputs["mask"], mask)
    again = model.sample_local(**dict(inputs, x=repainted))
    assert torch.equal(again.indices, result.indices)
    torch.testing.assert_close(again.image, result.image, rtol=0, atol=1e-4)
    outside = (~m_q).view(1, 1, 16, 16)                    # the latent cells outside the mask
    kept, kept_again = (model.encode_target(x, mask)[1] for x in (reference, repainted))   # (1, D, 16, 16)
    torch.testing.assert_close(kept_again * outside, kept * outside, rtol=0, atol=1e-5)
    # ... which a leaky first stage fails: iLAT*'s plain VQGAN carries the repaint into the kept part
    star = models["ilat_star"].eval()
    star_inputs = star.edit_inputs({k: torch.as_tensor(v)[None] for k, v in item.items() if k not in ("video", "index")})
    star_edit, star_again = star.sample_local(**star_inputs), star.sample_local(**dict(star_inputs, x=repainted))
    assert (star_again.image - star_edit.image).abs().max() > 0.1
    kept, kept_again = (star.encode_target(x, mask)[1] for x in (reference, repainted))
    assert ((kept_again - kept) * outside).abs().max() > 0.1


def test_baseline_edit_and_errors(runs):
    taming = load_run(runs["taming"])[0]
    ilat = load_run(runs["ilat"])[0]
    data = ToyPoses(size=64, length=2, split="test")
    item = data[0]
    reference = torch.from_numpy(item["cond_image"]).permute(2, 0, 1)[None]
    edit = taming.synthesize(reference, item["cond_pose_px"], item["pose_px"], mode="edit")
    first = int(edit.token_mask[0].float().argmax())
    assert edit.token_mask[0, first:].all()                  # Taming regenerates to the end of the raster
    with pytest.raises(NotImplementedError, match="lm_rate"):
        ilat.synthesize(reference, item["cond_pose_px"], item["pose_px"], mode="edit")
    bad = np.array(item["pose_px"])[:12]
    with pytest.raises(ValueError, match="13"):
        ilat.synthesize(reference, item["cond_pose_px"], bad)
    outside = np.array(item["pose_px"]).copy()
    outside[0, :2] = (500, 10)
    with pytest.raises(ValueError, match="outside"):
        ilat.synthesize(reference, item["cond_pose_px"], outside)
    with pytest.raises(KeyError, match="pose"):
        ilat.condition_features({"image": reference})
