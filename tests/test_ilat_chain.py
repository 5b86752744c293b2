"""The toy iLAT / Taming configs through main.py, the chain from trained stages, and the sampling benchmark."""
import glob
import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from ilat_ext import main as cli
from ilat_ext.models import ILATTransformer, TamingTransformer
from ilat_ext.runs import load_run
from ilat_ext.util import instantiate_from_config
from tests.helpers import REPO, SHORT_RUN_OVERRIDES, TINY_GPT_OVERRIDES

SMALL = TINY_GPT_OVERRIDES + SHORT_RUN_OVERRIDES + ["data.params.train.params.dataset.params.length=4",
                                                   "data.params.validation.params.dataset.params.length=2"]


def _stage_ckpts(tmp_path):
    """Untrained toy TS-VQGAN and sketch VQGAN checkpoints, built from the toy configs' own params."""
    cfg = OmegaConf.load(os.path.join(REPO, "configs", "toy", "ilat.yaml")).model.params
    paths = {}
    for name in ("first_stage_config", "cond_stage_config"):
        stage_cfg = cfg[name].copy()
        stage_cfg.params.ckpt_path = None
        stage_cfg.params.lossconfig = {"target": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
                                       "params": {"disc_start": 0, "perceptual_weight": 0.0,
                                                  "disc_in_channels": stage_cfg.params.ddconfig.in_channels}}
        model = instantiate_from_config(stage_cfg)
        paths[name] = str(tmp_path / f"{name}.ckpt")
        torch.save({"state_dict": model.state_dict(), "global_step": 0}, paths[name])
    return paths


def train_toy_transformers(tmp, extra=()):
    """One-step toy iLAT and Taming runs (untrained stages, small transformers) under tmp/logs:
    {"ilat": run dir, "taming": run dir}. Shared by the tests of the scripts that load runs."""
    paths = _stage_ckpts(tmp)
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        for name in ("ilat", "taming"):
            cli.main(["-l", str(tmp / "logs"), "-n", name, "--base", os.path.join(REPO, "configs", "toy", f"{name}.yaml"),
                      "-t", "--max_steps", "1", "lightning.callbacks.image_logger.params.log_on_train_end=false",
                      f"model.params.first_stage_config.params.ckpt_path={paths['first_stage_config']}",
                      f"model.params.cond_stage_config.params.ckpt_path={paths['cond_stage_config']}",
                      *extra] + SMALL)
    finally:
        os.chdir(cwd)
    return {name: glob.glob(str(tmp / "logs" / f"*_{name}"))[0] for name in ("ilat", "taming")}


@pytest.mark.parametrize("name, cls", [("ilat", ILATTransformer), ("taming", TamingTransformer)])
def test_toy_transformer_configs_train_through_main_and_edit(tmp_path, monkeypatch, name, cls):
    """Both toy configs train through main.py from stage checkpoints (which load with their GAN loss
    ignored), write image grids with the edits, and the run reads back for editing with Eq. 4."""
    paths = _stage_ckpts(tmp_path)
    monkeypatch.chdir(tmp_path)
    trainer = cli.main(["-l", str(tmp_path / "logs"), "--base", os.path.join(REPO, "configs", "toy", f"{name}.yaml"),
                        "-t", "--max_steps", "2",
                        f"model.params.first_stage_config.params.ckpt_path={paths['first_stage_config']}",
                        f"model.params.cond_stage_config.params.ckpt_path={paths['cond_stage_config']}"] + SMALL)
    assert trainer.global_step == 2
    run = glob.glob(str(tmp_path / "logs" / "*"))[0]
    edits = glob.glob(os.path.join(run, "images", "val", ("ilat" if name == "ilat" else "taming_star") + "_*.png"))
    assert edits and glob.glob(os.path.join(run, "images", "val", "overview_*.png"))
    model, _ = load_run(run)
    assert isinstance(model, cls)
    # the frozen stages are the run's own weights, equal to the stage checkpoints trained on; the
    # run reads back without the stage checkpoint files
    stage = torch.load(paths["first_stage_config"], weights_only=True)["state_dict"]
    for key, value in model.first_stage_model.state_dict().items():
        if not key.startswith("loss."):
            assert torch.equal(value, stage[key]), key
    os.remove(paths["first_stage_config"])
    assert isinstance(load_run(run)[0], cls)
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step"                                   # warm-up + linear decay per batch

    from ilat_ext.data import ToyFaces
    from ilat_ext.data.mask_sources import MaskedDataset
    data = MaskedDataset(ToyFaces(size=64, length=2, split="test", mask=False, sketch=True),
                         mask_source={"free_form_area": [0.1, 0.2], "mode_probs": {"partial": 1.0}})
    batch = torch.utils.data.default_collate([data[0], data[1]])
    x, c = model.get_input("image", batch), model.get_input("sketch", batch)
    mask = model.get_mask(batch, x)
    edit = model.sample_local(x, mask, c)
    kept, _ = model.encode_target(x, mask)
    assert torch.equal(edit.indices[~edit.token_mask], kept[~edit.token_mask])
    assert edit.image.shape == x.shape and torch.isfinite(edit.image).all()


def test_sampling_benchmark_runs_and_reports(capsys):
    """The benchmark on a tiny model: a table and a last JSON line with the keys docs/benchmarks.md names."""
    from ilat_ext.cli.benchmark_sampling import run as benchmark   # scripts/benchmark_sampling.py's command

    summary = benchmark(["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--vocab", "64", "--grid", "6",
                    "--repeats", "1", "--repeats-full", "1", "--rates", "0.066", "1.0"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(summary))
    for key in ("speedup_vs_taming_sample", "speedup_vs_uncached", "ratio_to_one_forward", "batch8_throughput_gain"):
        assert summary[key] > 0
    assert summary["rows"][-1]["tokens"] == 36 and summary["rows"][0]["tokens"] == 2
