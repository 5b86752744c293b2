"""The pose demo in one command: the toy pose chain on CPU, stick figures redrawn in new poses, a
pose sequence, a comparison of Taming / iLAT* / iLAT.

    ilat-demo-poses [--out demo_poses] [--steps_scale 1.0]      (or python scripts/demo_poses.py)

See `run_pose_demo` for the outputs.
"""
import logging
import os
import time
from typing import Callable, Dict, List, Sequence

import torch

from ilat_ext.apps.chain import TOY, Stage, train_chain

logger = logging.getLogger(__name__)


def pose_chain(scale: float = 1.0) -> List[Stage]:
    """The toy pose chain on the stick-figure videos: TS-VQGAN stage 1 and 2 (pose masks), then iLAT,
    iLAT* (the same weights as a plain VQGAN: no two-stream convolutions) and the vanilla-AR
    Taming baseline, all with the PointMLP pose features."""
    s = lambda n: max(1, int(round(n * scale)))  # noqa: E731
    stage = "model.params.first_stage_config.params.ckpt_path={pose_ts}"
    config = lambda name: os.path.join(TOY, f"{name}.yaml")  # noqa: E731
    return [
        Stage("pose_vq", config("tsvqgan_pose"), s(1000), ("model.params.use_masks=false",)),
        Stage("pose_ts", config("tsvqgan_pose"), s(150), ("model.params.ckpt_path={pose_vq}",)),
        Stage("pose_ilat", config("ilat_pose"), s(700), (stage,)),
        Stage("pose_ilat_star", config("ilat_pose"), s(700),
              (stage, "model.params.first_stage_config.target=ilat_ext.models.VQModel")),
        Stage("pose_taming", config("taming_pose"), s(700), (stage,)),
    ]


def run_pose_demo(out: str = "demo_poses", scale: float = 1.0, n_show: int = 6, n_compare: int = 16,
                  fresh: bool = False, train_overrides: Sequence[str] = (),
                  log: Callable[[str], None] = logger.info) -> List[dict]:
    """The toy pose chain (`pose_chain`), then on held-out stick-figure videos:
    - `<out>/poses.png`: reference | target pose | mask | warped reference (`warp_reference` runs) |
      Taming | iLAT* | iLAT | ground truth;
    - `<out>/sequence/`: one reference redrawn in every pose of its video (frames, GIF, MP4, strip);
    - `<out>/comparison/`: Taming, iLAT* and iLAT against the ground-truth target frames (PSNR /
      SSIM / MAE, PSNR outside the union mask against the reference: the kept background).
    Returns the comparison table's rows."""
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    runs = train_chain(pose_chain(scale), os.path.join(out, "logs"), fresh=fresh, extra=train_overrides, log=log)
    trained = time.perf_counter()
    with torch.no_grad():
        rows = _pose_outputs(runs, out, n_show, n_compare, log)
    log(f"total {time.perf_counter() - start:.0f} s (training {trained - start:.0f} s)")
    return rows


def _pose_outputs(runs: Dict[str, str], out: str, n_show: int, n_compare: int, log) -> List[dict]:
    """run_pose_demo's poses grid, sequence and comparison from the trained runs."""
    from ilat_ext.apps import pose_guide as pg
    from ilat_ext.apps.compare import TASK_KEYS, compare, markdown_table, model_method, toy_pose_pairs
    from ilat_ext.apps.image_io import labelled_grid, tensor_to_uint8, uint8_to_tensor, write_gif, write_mp4, write_rgb
    from ilat_ext.data.toy_pose import ToyPoses
    from ilat_ext.runs import load_run

    models = {name: load_run(runs[f"pose_{name}"])[0] for name in ("ilat", "ilat_star", "taming")}
    test = ToyPoses(size=64, length=max(n_show, n_compare) * 8, split="test")
    # one pair from each of n_show different videos (items of one video are consecutive)
    batch = torch.utils.data.default_collate([test[i * test.frames_per_video] for i in range(n_show)])
    inputs = models["ilat"].edit_inputs(batch)
    skeletons = uint8_to_tensor(pg.skeleton_images(batch["pose_px"].numpy(), 64, 64))
    columns = {"reference": inputs["x"], "target pose": skeletons, "mask": inputs["mask"] * 2 - 1}
    if models["ilat"].warp_reference:     # the condition frame the models read
        columns["warped reference"] = inputs["c"]
    columns.update({"Taming": models["taming"].sample_edit(**inputs).image,
                    "iLAT*": models["ilat_star"].sample_local(**models["ilat_star"].edit_inputs(batch)).image,
                    "iLAT": models["ilat"].sample_local(**inputs).image,
                    "ground truth": batch["image"].permute(0, 3, 1, 2)})
    # what ilat-pose-guide writes: the iLAT decode inside the union mask, the reference outside
    columns["iLAT pasted"] = pg.blend_into_reference(columns["iLAT"], inputs["x"], inputs["mask"], 0)
    labelled_grid(columns, os.path.join(out, "poses.png"))
    log(f"pose edits: {os.path.join(out, 'poses.png')}")

    seq_dir = os.path.join(out, "sequence")
    os.makedirs(seq_dir, exist_ok=True)
    poses = [test.video_pose(0, k) for k in range(test.frames_per_video)]   # held-out video 0
    reference = uint8_to_tensor(test.render(0, poses[0]))
    frames, masks = pg.synthesize_sequence(models["ilat"], reference, poses[0], poses[1:])
    for k, frame in enumerate(tensor_to_uint8(frames)):
        write_rgb(os.path.join(seq_dir, f"frame_{k:03d}.png"), frame)
    write_gif(os.path.join(seq_dir, "sequence.gif"), frames)
    write_mp4(os.path.join(seq_dir, "sequence.mp4"), frames)
    pg.write_strip(os.path.join(seq_dir, "strip.png"), frames, poses[1:])
    kept = pg.outside_psnr(frames, reference, masks)
    log(f"sequence: {seq_dir} ({len(frames)} frames; PSNR outside the masks against the reference "
        f"{float(kept.mean()):.2f} dB)")

    keys = TASK_KEYS["pose"]
    inputs_keys = {k: keys[k] for k in ("image_key", "mask_key", "cond_key")}
    methods = [model_method("Taming", models["taming"], "edit", **inputs_keys),
               model_method("iLAT*", models["ilat_star"], "local", **inputs_keys),
               model_method("iLAT", models["ilat"], "local", **inputs_keys)]
    rows = compare(methods, toy_pose_pairs(n_compare, 64), os.path.join(out, "comparison"), n=n_compare,
                   batch_size=8, verbose=False, progress=True, **keys)
    log(markdown_table(rows))
    log(f"comparison: {os.path.join(out, 'comparison')} (grid.png, metrics.md, metrics.csv)")
    return rows
