"""Load a trained run (a main.py log directory or one of its checkpoints) for scripts and notebooks."""
import glob
import os
from typing import Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from ilat_ext.checkpoint import load_checkpoint, load_state_dict_report
from ilat_ext.util import instantiate_from_config


def resolve_run(path: str) -> Tuple[str, str]:
    """`logs/<run>` -> (run dir, its checkpoints/last.ckpt); `.../checkpoints/x.ckpt` -> (run dir, x.ckpt).
    Used by main.py's --resume and by `load_run`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot find run {path!r}")
    if os.path.isfile(path):
        ckpt_dir = os.path.dirname(os.path.abspath(path))
        if os.path.basename(ckpt_dir) != "checkpoints":
            raise ValueError(f"{path!r} is not inside a run's checkpoints/ directory")
        return os.path.dirname(ckpt_dir), path
    logdir = path.rstrip("/")
    ckpt = os.path.join(logdir, "checkpoints", "last.ckpt")
    if not os.path.isfile(ckpt):
        found = sorted(glob.glob(os.path.join(logdir, "checkpoints", "*.ckpt")))
        raise FileNotFoundError(f"{ckpt} does not exist"
                                + (f"; checkpoints found: {found} (pass one of them)" if found else ""))
    return logdir, ckpt


def run_config(logdir: str) -> DictConfig:
    """The run's merged project configs (`configs/*-project.yaml`, in name order)."""
    files = sorted(glob.glob(os.path.join(logdir, "configs", "*-project.yaml")))
    if not files:
        raise FileNotFoundError(f"no configs/*-project.yaml in {logdir}")
    return OmegaConf.merge(*[OmegaConf.load(f) for f in files])


def load_run(path: str, unsafe: Optional[bool] = None, eval_mode: bool = True):
    """Build the run's model from its saved config and load its checkpoint through the safe loader.

    Returns (model, config). The model's own `ckpt_path` (initial weights of the run) is not
    re-read: the checkpoint holds every weight. Missing or unexpected keys raise.
    """
    logdir, ckpt = resolve_run(path)
    config = run_config(logdir)
    model_cfg = OmegaConf.to_container(config.model, resolve=True)
    params = model_cfg.get("params", {})
    params.pop("ckpt_path", None)
    # the frozen stages are part of the run's weights: their own checkpoints need not exist any more
    for stage in ("first_stage_config", "cond_stage_config"):
        if isinstance(params.get(stage), dict):
            params[stage].get("params", {}).pop("ckpt_path", None)
    model = instantiate_from_config(model_cfg)
    checkpoint = load_checkpoint(ckpt, unsafe=unsafe)
    load_state_dict_report(model, checkpoint["state_dict"], strict=True, source=ckpt)
    model.build_config = model_cfg
    return (model.eval() if eval_mode else model), config
