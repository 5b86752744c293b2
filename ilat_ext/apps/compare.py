"""Compare editing methods on a test set: image grids and a metrics table (paper Table 1, Table 2, Fig. 4).

A *method* is a name and a callable `edit(batch) -> images` that edits a collated batch (taming's
layout: image (B, H, W, 3) in [-1, 1], mask (B, H, W, 1) in {0, 1}, condition (B, H, W, C)) and
returns (B, 3, H, W) in [-1, 1], or an object with `.image` (and optionally `.token_mask` (B, L),
the tokens it regenerated), such as the models' `EditResult`. `model_method` wraps a trained
`TamingTransformer` / `ILATTransformer`:

    mode "edit"  -> model.sample_edit  (Taming: regenerate from the first masked token to the end)
    mode "local" -> model.sample_local (iLAT; Taming* on a Taming run: masked tokens only, Eq. 4)

`compare(methods, dataset, out_dir)` runs every method on the first `n` items and writes

    grid.png      rows = items, columns = input | mask | condition | each method's decode and, next to
                  it, "<method> pasted": the decode inside the mask and the input outside (what
                  a user of `ilat-edit-face` gets back), labelled on top
    metrics.csv   one row per method (the returned table)
    metrics.md    the same as a markdown table (also reported, see `compare`'s `log`)
    images/       per-item PNGs per column (save_images=True)

Metrics per method (`ilat_ext.metrics`, outputs clamped to [-1, 1]): PSNR, SSIM and MAE of the
whole image against the target (the input unless `target_key` names a ground truth), PSNR of the
pixels outside the mask against the input (identity preservation), FID against the targets
(when Inception weights are found; else "n/a" and the searched files), seconds per image and
the mean fraction of tokens regenerated. Per-image values are averaged; NaN values (no pixel
outside a full mask) are skipped, and a +inf PSNR (an output identical to the input, e.g. a local
method on an empty mask) makes the mean +inf, shown as "inf".

Timing: `time.perf_counter` around each `edit` call only (data loading and metrics excluded,
CUDA synchronised), after one untimed warm-up call per method on the first batch.
"""
import csv
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ilat_ext import metrics as M
from ilat_ext.apps.image_io import labelled_grid, tensor_to_uint8

logger = logging.getLogger(__name__)

MODES = {"local": "sample_local", "edit": "sample_edit"}
DATA_CHOICES = ("toy_faces", "toy_poses", "config:PATH", "photos:DIR")
# Item keys of each task: the edited input, its mask, the condition, the ground truth. A pose model
# edits the reference frame (cond_image) into the target frame (image); its `edit_inputs` reads the
# poses itself.
TASK_KEYS = {"face": dict(image_key="image", mask_key="mask", cond_key="sketch", target_key="image"),
             "pose": dict(image_key="cond_image", mask_key="mask", cond_key="cond_image", target_key="image")}


@dataclass
class Method:
    """A named editing method. edit(batch) -> (B, 3, H, W) in [-1, 1], or an object with `.image`;
    `model`: the trained model behind it, if any."""
    name: str
    edit: Callable[[Dict[str, Any]], Any]
    model: Any = None


# --------------------------------------------------------------------------------------- helpers


def to_nchw(t: Any, key: str = "tensor") -> torch.Tensor:
    """Taming's batch layout (B, H, W, C) or (B, H, W) -> float (B, C, H, W)."""
    t = torch.as_tensor(t)
    if t.dim() == 3:
        t = t[..., None]
    if t.dim() != 4:
        raise ValueError(f"batch[{key!r}] must be (B, H, W, C) in taming's layout, got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).float().contiguous()


def batch_inputs(batch: Mapping[str, Any], image_key: str = "image", mask_key: str = "mask",
                 cond_key: Optional[str] = "sketch") -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(x (B, 3, H, W), mask (B, 1, H, W), c (B, C, H, W) or None) from a collated batch, validated."""
    for key in (image_key, mask_key):
        if key not in batch:
            raise KeyError(f"the batch has no {key!r} entry (keys: {sorted(batch)})")
    x, mask = to_nchw(batch[image_key], image_key), to_nchw(batch[mask_key], mask_key)
    if mask.shape[1] != 1:
        raise ValueError(f"batch[{mask_key!r}] must have one channel, got {mask.shape[1]}")
    if mask.shape[2:] != x.shape[2:]:
        raise ValueError(f"mask size {tuple(mask.shape[2:])} (batch[{mask_key!r}]) differs from the image size "
                         f"{tuple(x.shape[2:])} (batch[{image_key!r}])")
    c = None
    if cond_key is not None:
        if cond_key not in batch:
            raise KeyError(f"the batch has no condition entry {cond_key!r} (keys: {sorted(batch)})")
        c = to_nchw(batch[cond_key], cond_key)
    return x, mask, c


def check_mode(model: Any, mode: str, where: str = "") -> str:
    """The sampling method name for `mode`; ValueError if the model cannot edit that way."""
    where = f" ({where})" if where else ""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}{where}; use one of {sorted(MODES)}")
    attr = MODES[mode]
    if not callable(getattr(model, attr, None)):
        raise ValueError(f"{type(model).__name__}{where} has no {attr}(), needed for mode {mode!r}")
    if mode == "edit" and not getattr(model, "trained_causal", True):
        raise ValueError(f"{type(model).__name__}{where} does not support mode 'edit' (sample_edit): an iLAT model is "
                         "trained with the LA mask; use mode 'local', and a Taming run (or a pose model with lm_rate 1) for Taming")
    return attr


def model_method(name: str, model: Any, mode: str = "local", *, image_key: str = "image", mask_key: str = "mask",
                 cond_key: Optional[str] = "sketch", greedy: bool = True, temperature: float = 1.0,
                 top_k: Optional[int] = None, seed: int = 0) -> Method:
    """A `Method` that calls `model.sample_local` (mode "local") or `model.sample_edit` (mode "edit").

    Inputs: `model.edit_inputs(batch)` (a dict of keyword arguments such as x, mask, c, extra) when
    the model defines it, else x = batch[image_key], mask = batch[mask_key], c = batch[cond_key],
    converted from taming's (B, H, W, C) layout. Non-greedy draws are seeded with
    `seed + batch["index"][0]`, so every method sees the same seed for the same items."""
    fn = getattr(model, check_mode(model, mode, name))

    def edit(batch):
        if callable(getattr(model, "edit_inputs", None)):
            kwargs = dict(model.edit_inputs(batch))
        else:
            x, mask, c = batch_inputs(batch, image_key, mask_key, cond_key)
            kwargs = {"x": x, "mask": mask, "c": c}
        offset = int(torch.as_tensor(batch["index"]).flatten()[0]) if "index" in batch else 0
        return fn(**kwargs, greedy=greedy, temperature=temperature, top_k=top_k, seed=seed + offset)

    return Method(name, edit, model)


def parse_run_spec(spec: str) -> Tuple[str, str, str]:
    """"NAME=LOGDIR[:mode]" -> (name, logdir, mode); mode "local" (default) or "edit"."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest:
        raise ValueError(f"--run {spec!r}: expected NAME=LOGDIR[:mode], e.g. iLAT=logs/run or Taming=logs/run:edit")
    logdir, mode = rest, "local"
    head, colon, tail = rest.rpartition(":")
    if colon and tail in MODES:
        logdir, mode = head, tail
    elif colon and "/" not in tail and not os.path.exists(rest):
        raise ValueError(f"--run {spec!r}: unknown mode {tail!r}; use one of {sorted(MODES)}")
    return name.strip(), logdir, mode


def load_run_methods(specs: Sequence[Tuple[str, str, str]], device: str = "cpu", unsafe: Optional[bool] = None,
                     **adapter_kwargs) -> List[Method]:
    """`model_method`s for (name, logdir, mode) triples; a run used twice (Taming and Taming*) is loaded once."""
    from ilat_ext.runs import load_run
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    models, methods = {}, []
    for name, logdir, mode in specs:
        if not os.path.exists(logdir):
            raise FileNotFoundError(f"run {name!r}: no such run directory or checkpoint: {logdir}")
        if mode not in MODES:
            raise ValueError(f"run {name!r}: unknown mode {mode!r}; use one of {sorted(MODES)}")
        key = os.path.abspath(logdir)
        if key not in models:
            models[key] = load_run(logdir, unsafe=unsafe)[0].to(device)
        methods.append(model_method(name, models[key], mode, **adapter_kwargs))
    return methods


def toy_pose_pairs(n: int, size: int = 64, seed: int = 0):
    """n held-out toy pose pairs, one from each of n test videos (the pair's frames vary with the video)."""
    from ilat_ext.data.toy_pose import ToyPoses

    frames = 8
    test = ToyPoses(size=size, length=n * frames, split="test", seed=seed, frames_per_video=frames)
    return torch.utils.data.Subset(test, [i * frames + i % frames for i in range(n)])


def build_dataset(data: str, n: int = 16, size: int = 64, seed: int = 0, sketch_style: str = "release",
                  read_options=None):
    """`toy_faces` (ToyFaces test split with sketches and masks), `toy_poses` (`toy_pose_pairs`),
    `config:PATH` (a YAML with a top-level `target:`/`params:` dataset whose items have image / mask /
    condition keys, e.g. a Penn Action or SDF test split) or `photos:DIR` (your own photos, masks and
    strokes in `ilat-edit-face`'s batch layout, read at `size` px with `sketch_style` and
    `read_options`: `ilat_ext.apps.edit.PhotoFolder`)."""
    if data.startswith("photos:"):
        from ilat_ext.apps.edit import PhotoFolder
        return PhotoFolder(data[len("photos:"):], size, sketch_style, read_options)
    if data == "toy_faces":
        from ilat_ext.data import ToyFaces
        return ToyFaces(size=size, split="test", length=n, sketch=True, mask=True, seed=seed)
    if data == "toy_poses":
        return toy_pose_pairs(n, size, seed)
    if data.startswith("config:"):
        from omegaconf import OmegaConf

        from ilat_ext.util import instantiate_from_config
        path = data[len("config:"):]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--data {data}: no such config file {path!r}")
        cfg = OmegaConf.load(path)
        if "target" not in cfg:
            raise ValueError(f"--data {data}: the YAML must have a top-level target:/params: dataset")
        return instantiate_from_config(OmegaConf.to_container(cfg, resolve=True))
    raise ValueError(f"unknown --data value {data!r}; use one of {DATA_CHOICES}")


# ----------------------------------------------------------------------------------------- table

COLUMNS = ("method", "psnr", "ssim", "mae", "psnr_unmasked", "fid", "sec_per_image", "tokens_regenerated", "n")
HEADERS = {"method": "Method", "psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "mae": "MAE ↓",
           "psnr_unmasked": "PSNR outside mask, decode (dB) ↑", "fid": "FID ↓", "sec_per_image": "sec/image ↓",
           "tokens_regenerated": "tokens regenerated", "n": "images"}


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as markdown; FID n/a rows get the reason as a note below the table."""
    digits = {"psnr": 2, "psnr_unmasked": 2, "ssim": 4, "mae": 4, "fid": 2, "sec_per_image": 4,
              "tokens_regenerated": 3}
    lines = ["| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    notes = []
    for row in rows:
        cells = []
        for c in COLUMNS:
            v = row.get(c)
            if c == "fid" and v is None:
                cells.append("n/a (see below)" if row.get("fid_note") else "n/a")
                if row.get("fid_note") and row["fid_note"] not in notes:
                    notes.append(row["fid_note"])
            elif isinstance(v, float):
                cells.append(M.format_metric(v, digits.get(c, 3)))
            else:
                cells.append(M.format_metric(None) if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + [f"FID n/a: {n}" for n in notes] if notes else [])) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS) + ["fid_note"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in writer.fieldnames})


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "method"


def _mean(values: List[torch.Tensor]) -> Optional[float]:
    if not values:
        return None
    v = torch.cat(values).double().numpy()
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def pasted(x: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decode (B, 3, H, W) inside the mask (B, 1, H, W), the input x outside: what the edit
    gives back at the model's size (`photo_io.paste_edit` with no feather)."""
    return torch.where(mask > 0.5, image, x)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------- compare


@torch.no_grad()
def compare(methods: Sequence[Method], dataset, out_dir: str, n: Optional[int] = None, batch_size: int = 4,
            image_key: str = "image", mask_key: str = "mask", cond_key: Optional[str] = "sketch",
            target_key: Optional[str] = None, device: str = "cpu", grid_rows: int = 8, save_images: bool = False,
            fid: bool = True, inception: Optional[str] = None, fid_dims: int = 2048, progress: bool = True,
            verbose: bool = True, log: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Run every method on the first `n` items of `dataset` (all when None) and write the outputs to
    `out_dir` (see the module docstring). Returns the table: one dict per method with the keys of
    `COLUMNS` (floats; `fid` None when not computed, with the reason in `fid_note`).

    verbose: report the FID notes and the markdown table through `log` (default: this module's
    logger at INFO; the command line passes `print`). The grid shows the first `grid_rows` items,
    64-px images enlarged to 128."""
    say = (log or logger.info) if verbose else (lambda message: None)
    from tqdm import tqdm
    if not methods:
        raise ValueError("no methods to compare")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    n = len(dataset) if n is None else min(int(n), len(dataset))
    if n < 1:
        raise ValueError("the test set is empty")
    target_key = target_key or image_key
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size,
                                         shuffle=False, num_workers=0)

    fid_note, extractor = None, None
    if fid:
        weights = M.find_inception_weights(inception)
        if weights is None:
            fid_note = M.missing_weights_message(inception)
        elif n < 2:
            fid_note = f"FID needs at least 2 images, got {n}"
        else:
            extractor = M.load_inception(weights, dims=fid_dims).to(device)
            if n <= fid_dims:
                say(f"note: FID from {n} images with {fid_dims}-dim features: the covariance is singular; "
                      "use more images than dimensions for a meaningful FID")
    else:
        fid_note = "not requested (fid=False)"
    if fid_note and fid:
        say(f"FID skipped: {fid_note}")

    per = {m.name: {k: [] for k in ("psnr", "ssim", "mae", "psnr_unmasked", "tokens", "feats")} for m in methods}
    seconds = {m.name: 0.0 for m in methods}
    real_feats, shown = [], {}
    os.makedirs(out_dir, exist_ok=True)
    warmed, seen = False, 0  # seen: items done so far (per-item file names follow the test-set order)
    for batch in tqdm(loader, desc="comparing", disable=not progress):
        x, mask, c = batch_inputs(batch, image_key, mask_key, cond_key)
        if target_key not in batch:
            raise KeyError(f"the batch has no target entry {target_key!r} (keys: {sorted(batch)})")
        target = x if target_key == image_key else to_nchw(batch[target_key], target_key)
        if target.shape != x.shape:
            raise ValueError(f"target batch[{target_key!r}] has shape {tuple(target.shape)}, "
                             f"the image {tuple(x.shape)}")
        if not warmed:  # untimed warm-up (kernel selection, caches, lazy init) on the first batch
            for m in methods:
                m.edit(batch)
            warmed = True
        outputs = {}
        for m in methods:
            _sync()
            start = time.perf_counter()
            result = m.edit(batch)
            _sync()
            seconds[m.name] += time.perf_counter() - start
            image = getattr(result, "image", result)
            if not isinstance(image, torch.Tensor) or image.shape != x.shape:
                raise ValueError(f"method {m.name!r} returned {getattr(image, 'shape', type(image))}, "
                                 f"expected images of shape {tuple(x.shape)}")
            image = image.detach().float().cpu().clamp(-1, 1)
            outputs[m.name] = image
            keep = 1.0 - mask
            per[m.name]["psnr"].append(M.psnr(image, target))
            per[m.name]["ssim"].append(M.ssim(image, target))
            per[m.name]["mae"].append(M.mae(image, target))
            per[m.name]["psnr_unmasked"].append(M.psnr(image, x, mask=keep))
            token_mask = getattr(result, "token_mask", None)
            if token_mask is not None:
                per[m.name]["tokens"].append(token_mask.detach().float().cpu().flatten(1).mean(1))
            if extractor is not None:
                per[m.name]["feats"].append(extractor(image.to(device)).double().cpu())
        if extractor is not None:
            real_feats.append(extractor(target.to(device)).double().cpu())

        cols = {"input": x, "mask": mask * 2 - 1}
        if c is not None and c.shape[1] in (1, 3) and c.shape[2:] == x.shape[2:]:
            cols["condition"] = c
        for name, image in outputs.items():
            cols[name] = image
            cols[f"{name} pasted"] = pasted(x, image, mask)
        done = sum(v.shape[0] for v in shown.get("input", []))
        if done < grid_rows:
            for k, v in cols.items():
                shown.setdefault(k, []).append(v[:grid_rows - done])
        if save_images:
            for k, v in cols.items():
                folder = os.path.join(out_dir, "images", _safe_name(k))
                os.makedirs(folder, exist_ok=True)
                for i, tile in enumerate(tensor_to_uint8(v, rgb=True)):
                    Image.fromarray(tile).save(os.path.join(folder, f"{seen + i:06d}.png"))
        seen += x.shape[0]

    grid = labelled_grid({k: torch.cat(v) for k, v in shown.items()}, pad=0, min_tile=128)
    Image.fromarray(grid).save(os.path.join(out_dir, "grid.png"))

    real = torch.cat(real_feats) if real_feats else None
    rows = []
    for m in methods:
        p = per[m.name]
        fid_value = None
        if real is not None:
            fid_value = M.frechet_distance(*M.feature_statistics(real), *M.feature_statistics(torch.cat(p["feats"])))
        rows.append({"method": m.name, "psnr": _mean(p["psnr"]), "ssim": _mean(p["ssim"]), "mae": _mean(p["mae"]),
                     "psnr_unmasked": _mean(p["psnr_unmasked"]), "fid": fid_value,
                     "sec_per_image": seconds[m.name] / n, "tokens_regenerated": _mean(p["tokens"]), "n": n,
                     "fid_note": None if fid_value is not None else fid_note})
    table = markdown_table(rows)
    with open(os.path.join(out_dir, "metrics.md"), "w") as f:
        f.write(table)
    write_csv(rows, os.path.join(out_dir, "metrics.csv"))
    say(table)
    return rows
