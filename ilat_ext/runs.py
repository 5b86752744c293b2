"""Trained runs for scripts and notebooks: load one (a main.py log directory or one of its
checkpoints) and read what it was trained on (run introspection).

    model, config = load_run("logs/<run>")
    size = model_input_size(model, config)       # the side of its training images
    check_input_size(model, size)                # ValueError when the transformer cannot take them
    sketch_style_of(config), resize_mode_of(config)

The introspection functions read the run's saved config: `training_datasets` lists the
`{target:, params:}` dataset nodes of its train / validation / test splits, outermost first.
"""
import glob
import os
import warnings
from typing import Any, List, Mapping, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from ilat_ext.checkpoint import UnsafeCheckpointError, load_checkpoint, load_state_dict_report
from ilat_ext.util import instantiate_from_config


class RunError(ValueError):
    """A run that cannot be loaded as it is on disk (a truncated checkpoint, one that does not fit
    the run's config, or one the safe loader refuses); the message is one line naming the file."""


def _one_line(message: str, keep: int = 400) -> str:
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text if len(text) <= keep else text[:keep - 3] + "..."


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
    re-read: the checkpoint holds every weight. Raises FileNotFoundError (no such run), and
    `RunError` for a checkpoint that is truncated or not a checkpoint, carries pickled code (refused
    unless `unsafe`), or whose keys or shapes do not fit the config (missing or unexpected keys).
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
    try:
        checkpoint = load_checkpoint(ckpt, unsafe=unsafe)
        if "state_dict" not in checkpoint:
            raise RunError(f"checkpoint {ckpt} has no state_dict (keys: {sorted(checkpoint)[:8]})")
        load_state_dict_report(model, checkpoint["state_dict"], strict=True, source=ckpt)
    except UnsafeCheckpointError as err:
        raise RunError(_one_line(err).replace("`--unsafe-load`", "`--unsafe_load`")) from None
    except (RuntimeError, TypeError, EOFError) as err:
        raise RunError(f"run {path!r}: {_one_line(err)}") from None
    model.build_config = model_cfg
    return (model.eval() if eval_mode else model), config


# ----------------------------------------------------------------------------- introspection


def dataset_targets(node: Any, depth: int = 0) -> List[Mapping]:
    """Every `{target:, params:}` dict under `node` (a plain container), outermost first."""
    if depth > 8:
        return []
    found = []
    if isinstance(node, Mapping):
        if "target" in node:
            found.append(node)
        for value in node.values():
            found.extend(dataset_targets(value, depth + 1))
    elif isinstance(node, (list, tuple)):
        for value in node:
            found.extend(dataset_targets(value, depth + 1))
    return found


def training_datasets(config) -> List[Mapping]:
    """The dataset nodes of the run's `data.params` train / validation / test splits (plain dicts,
    unresolved), outermost first; [] without a config or data section."""
    data = config.get("data") if config is not None else None
    if data is None:
        return []
    data = OmegaConf.to_container(data, resolve=False)
    params = data.get("params") or {}
    nodes = [params.get(split) for split in ("train", "validation", "test") if params.get(split)]
    return [d for node in nodes for d in dataset_targets(node)]


def model_input_size(model, config=None) -> int:
    """The side of the square images the run was trained on: the `size` of its training dataset
    (e.g. ToyFaces 64, FaceDataset 256), else the first stage's `resolution`."""
    for dataset in training_datasets(config):
        size = (dataset.get("params") or {}).get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return int(model.first_stage_model.encoder.resolution)


def sketch_style_of(config) -> str:
    """How the run's training sketches were made: "toy" (ToyFaces), "resized" (ImageFolder) or
    "release" (FaceDataset, and the default); see `ilat_ext.apps.edit` for what each means."""
    for dataset in training_datasets(config):
        name = str(dataset.get("target", "")).rsplit(".", 1)[-1]
        if name == "ToyFaces":
            return "toy"
        if name == "ImageFolder":
            return "resized"
        if name == "FaceDataset":
            return "release"
    return "release"


CROP_DATASETS = ("ImageNetTrain", "ImageNetValidation", "ImageNetSR")


def trained_on_whole_images(config) -> bool:
    """Whether the run saw whole images (aligned faces: ToyFaces, FaceDataset, ImageFolder) rather
    than crops of larger scenes (ImageNet, or any dataset with `random_crop: true`, such as
    taming's CustomTrain set so); decides `--region auto` in face editing. True without a config."""
    for dataset in training_datasets(config):
        name = str(dataset.get("target", "")).rsplit(".", 1)[-1]
        if name in CROP_DATASETS or (dataset.get("params") or {}).get("random_crop") is True:
            return False
    return True


def resize_mode_of(config) -> str:
    """"pad" or "stretch": the `resize` of the run's training dataset (PennAction has one), else "stretch"."""
    from ilat_ext.data.pose import RESIZE_MODES

    for dataset in training_datasets(config):
        mode = (dataset.get("params") or {}).get("resize")
        if mode in RESIZE_MODES:
            return mode
    return "stretch"


def check_input_size(model, size: int, exact: bool = False) -> None:
    """Raise ValueError unless `size` px images make sequences that fit the transformer; warn
    (RuntimeWarning) when they are shorter than its block_size, which usually means another
    training size. With `exact` a shorter sequence is an error too (a pose model was trained at one size)."""
    import torch

    f = model.first_stage_factor
    if size % f:
        raise ValueError(f"image size {size} is not a multiple of the first stage's downsampling factor {f}")
    channels = 1
    conv_in = getattr(getattr(model.cond_stage_model, "encoder", None), "conv_in", None)
    if conv_in is not None:
        channels = conv_in.in_channels
    with torch.no_grad():
        _, c_idx = model.encode_to_c(torch.zeros(1, channels, size, size, device=model.device))
    need = model.sequence_positions(c_idx.shape[1], (size // f) ** 2)
    block = int(model.transformer.get_block_size())
    if need > block or (exact and need != block):
        raise ValueError(f"{size}-px images need {need} transformer positions, the model's block_size is {block}: "
                         "the run was trained at another image size (pass its training size)")
    if need < block:
        warnings.warn(f"{size}-px images use {need} of the transformer's {block} positions; the run was probably "
                      "trained at another size", RuntimeWarning, stacklevel=2)
