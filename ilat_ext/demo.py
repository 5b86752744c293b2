"""The one-command demos: the whole toy chain on CPU, edits, a comparison.

    python scripts/demo_faces.py [--out demo] [--steps-scale 1.0]
    python scripts/demo_poses.py [--out demo_poses] [--steps-scale 1.0]

Faces (`run_face_demo`):

1. Trains the toy chain on the embedded procedural faces through main.py (each stage a normal
   run under `<out>/logs/`, with its images and checkpoints): the sketch VQGAN, the face TS-VQGAN
   stage 1 (no masks) and stage 2 (masks), then the iLAT and the Taming transformers on the
   frozen stages. A stage whose run already holds a checkpoint with enough steps is reused and one
   that stopped early (Ctrl-C) is resumed, so an interrupted demo continues where it stopped
   (`train_chain`; `--fresh` retrains everything).
2. Edits held-out faces with NEW strokes: the region around the mouth is masked and the strokes
   inside it are another face's sketch (`compose_edit_sketch`: the face's own sketch outside the
   mask, the donor's strokes inside), so a correct edit draws the donor's mouth and keeps the rest.
   Grid: input | mask | sketch | Taming | Taming* | iLAT | ceiling (`<out>/edits.png`; ceiling =
   the donor's own codes in the mask, the best this autoencoder can show).
3. Compares Taming, Taming* and iLAT on held-out faces with their own sketches and free-form masks
   (ground truth known): PSNR / SSIM / MAE, PSNR outside the mask against the input (identity
   preservation), seconds per image (`ilat_ext.compare`; `<out>/comparison/`).
"""
import glob
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ilat_ext.checkpoint import load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(REPO, "configs", "toy")


# Stage 2 of the face autoencoder continues stage 1, whose GAN term is already on (the toy config starts
# it after the quantizer warm-up, step 100); stage 2's step count starts again at 0.
GAN_FROM_START = "model.params.lossconfig.params.disc_start=0"


@dataclass
class Stage:
    """One main.py run of the chain: its name, config, step count and overrides ({run} fields are
    filled with the checkpoints of earlier stages)."""
    name: str
    config: str
    steps: int
    overrides: Sequence[str] = ()


# Face stage 1 at batch 4 (lr kept at 2e-4, halved every 720 of its 900 steps): with batch 4 and 500 steps
# +0.9 dB on validation faces over batch 8 and 250 steps; the widths 16-32 of configs/toy/tsvqgan_face.yaml
# then run 900 steps in the time ch 32 ran 500 (+1.6 dB after stage 1, +0.6 dB after stage 2).
TS1_BATCH4 = ("data.params.batch_size=4", "model.base_learning_rate=5e-5", "model.params.lr_decay_every=720")


def face_chain(scale: float = 1.0) -> List[Stage]:
    """The toy face chain; `scale` multiplies every step count (1.0 fits the demo's 15 minutes)."""
    s = lambda n: max(1, int(round(n * scale)))  # noqa: E731
    stages = "model.params.first_stage_config.params.ckpt_path={ts2}", \
             "model.params.cond_stage_config.params.ckpt_path={sketch}"
    return [
        Stage("sketch", os.path.join(TOY, "sketch_vqgan.yaml"), s(200)),
        Stage("ts1", os.path.join(TOY, "tsvqgan_face.yaml"), s(900), ("model.params.use_masks=false",) + TS1_BATCH4),
        Stage("ts2", os.path.join(TOY, "tsvqgan_face.yaml"), s(250), ("model.params.ckpt_path={ts1}", GAN_FROM_START)),
        Stage("ilat", os.path.join(TOY, "ilat.yaml"), s(560), stages),
        Stage("taming", os.path.join(TOY, "taming.yaml"), s(560), stages),
    ]


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


def find_run(logdir: str, name: str) -> Optional[str]:
    """The newest run folder `<logdir>/<timestamp>_<name>` holding checkpoints/last.ckpt, or None."""
    runs = sorted(d for d in glob.glob(os.path.join(logdir, f"????-??-??T??-??-??_{name}"))
                  if os.path.isfile(os.path.join(d, "checkpoints", "last.ckpt")))
    return runs[-1] if runs else None


def run_steps(run: str) -> int:
    """The global step stored in a run's last.ckpt."""
    return int(load_checkpoint(os.path.join(run, "checkpoints", "last.ckpt")).get("global_step", 0))


def saved_config(run: str):
    """A run's configuration as `--resume` rebuilds it: its configs/*.yaml merged in name order."""
    from omegaconf import OmegaConf

    paths = sorted(glob.glob(os.path.join(run, "configs", "*.yaml")))
    return OmegaConf.merge(*[OmegaConf.load(p) for p in paths]) if paths else OmegaConf.create()


def _mismatched_overrides(run: str, overrides: Sequence[str]) -> List[str]:
    """The `key=value` overrides (earlier stages' checkpoints included) that `run` was not trained with."""
    from omegaconf import OmegaConf

    def same(a, b) -> bool:
        if isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.exists(b):
            return os.path.realpath(a) == os.path.realpath(b)  # `--out demo` and `--out ./demo`
        return a == b

    config, wanted = saved_config(run), OmegaConf.from_dotlist(list(overrides))
    keys = [o.split("=", 1)[0] for o in overrides]
    return [f"{k}={OmegaConf.select(config, k)}" for k in keys
            if not same(OmegaConf.select(config, k), OmegaConf.select(wanted, k))]


def _schedule_length(run: str) -> Optional[int]:
    """The max_steps a run was started with (its learning-rate schedule ends there)."""
    return saved_config(run).get("lightning", {}).get("trainer", {}).get("max_steps")


def train_chain(stages: Sequence[Stage], logdir: str, fresh: bool = False, extra: Sequence[str] = (),
                log=print) -> Dict[str, str]:
    """Train, resume or reuse every stage in order through main.py; returns {stage name: run folder}.

    A stage's newest run is reused when it has all its steps and was trained on the checkpoints
    the earlier stages have now; resumed (`main.py -r RUN -t`, the same run folder) when it
    stopped early, e.g. at Ctrl-C, and its schedule has the same length; otherwise trained anew.
    Once a stage trains, every later stage trains anew: they were trained on its old weights.
    """
    from ilat_ext import main as cli

    runs: Dict[str, str] = {}
    ckpts: Dict[str, str] = {}
    upstream_changed = False
    for stage in stages:
        overrides = [o.format(**ckpts) for o in stage.overrides]
        run = None if fresh or upstream_changed else find_run(logdir, stage.name)
        mismatched = [] if run is None else _mismatched_overrides(run, overrides)
        if mismatched:
            log(f"[{stage.name}] not reusing {run}: it was trained with {', '.join(mismatched)}")
            run = None
        steps = 0 if run is None else run_steps(run)
        if run is not None and steps >= stage.steps:
            log(f"[{stage.name}] reusing {run} ({steps} steps)")
        else:
            start = time.perf_counter()
            if run is not None and steps > 0 and _schedule_length(run) == stage.steps:
                log(f"[{stage.name}] resuming {run} at step {steps} of {stage.steps}")
                cli.main(["-r", run, "-t", "--max_steps", str(stage.steps), *extra])
            else:
                log(f"[{stage.name}] training {os.path.relpath(stage.config, REPO)} for {stage.steps} steps")
                cli.main(["-l", logdir, "--base", stage.config, "-t", "-n", stage.name, "--max_steps",
                          str(stage.steps), *overrides, *extra])
            run = find_run(logdir, stage.name)
            if run is None or run_steps(run) < stage.steps:
                raise RuntimeError(f"stage {stage.name} stopped before its {stage.steps} steps: "
                                   f"{logdir}/*_{stage.name}/checkpoints/last.ckpt is missing or short "
                                   "(run the demo again to resume it)")
            log(f"[{stage.name}] done in {time.perf_counter() - start:.0f} s: {run}")
            upstream_changed = True
        runs[stage.name] = run
        ckpts[stage.name] = os.path.join(run, "checkpoints", "last.ckpt")
    return runs


def mouth_mask(size: int) -> np.ndarray:
    """float32 (size, size): a box around where the toy faces' mouths are (lower middle of the face)."""
    mask = np.zeros((size, size), np.float32)
    top, bottom = int(round(0.56 * size)), int(round(0.84 * size))
    left, right = int(round(0.28 * size)), int(round(0.72 * size))
    mask[top:bottom, left:right] = 1.0
    return mask


def new_stroke_batch(n: int, size: int = 64, seed: int = 0):
    """Held-out faces (ToyFaces test split) with the mouth region masked and another test face's
    sketch as the strokes inside it. -> x (n, 3, H, W) in [-1, 1], mask (n, 1, H, W), sketch
    (n, 1, H, W) in [-1, 1] (+1 paper), and each face's own sketch (n, 1, H, W), for comparison."""
    from ilat_ext.data.sketch import compose_edit_sketch, sketch_to_tensor_layout

    faces = _stroke_faces(n, size, seed)
    mask = mouth_mask(size)
    xs, sketches, own = [], [], []
    for i in range(n):
        face = faces.face(i)
        donor = faces.sketch_of(n + i)                    # a different face's strokes: donor_faces(n)[i]
        sketch = compose_edit_sketch(face, mask, donor, original_sketch=faces.sketch_of(i))
        xs.append(face.astype(np.float32) / 127.5 - 1.0)
        sketches.append(sketch_to_tensor_layout(sketch))
        own.append(sketch_to_tensor_layout(faces.sketch_of(i)))
    to_nchw = lambda arrays: torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # noqa: E731
    m = torch.from_numpy(mask)[None, None].expand(n, 1, size, size).contiguous()
    return to_nchw(xs), m, to_nchw(sketches), to_nchw(own)


def _stroke_faces(n: int, size: int, seed: int):
    from ilat_ext.data import ToyFaces
    return ToyFaces(size=size, length=2 * n, split="test", seed=seed, mask=False, sketch=False)


def donor_faces(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, H, W) in [-1, 1]: the faces whose strokes `new_stroke_batch(n, size, seed)` puts in the
    mask of face i."""
    faces = _stroke_faces(n, size, seed)
    return torch.from_numpy(np.stack([faces.face(n + i) for i in range(n)])).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def ceiling_edit(model, x: torch.Tensor, mask: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
    """What a transformer that drew the donor's mouth perfectly would output with this autoencoder:
    the donor's own codes inside M_q, x's Eq. 4 latent outside (`model.decode_tokens`)."""
    m_q = model.token_mask(x, mask)
    z_x, kept = model.encode_target(x, mask)
    z_donor, _ = model.encode_target(donor, torch.zeros_like(mask))
    return model.decode_tokens(torch.where(m_q, z_donor, z_x), kept, m_q)


def stroke_table(columns: Dict[str, torch.Tensor], mask: torch.Tensor, new: torch.Tensor,
                 own: torch.Tensor) -> List[dict]:
    """Does each column follow the new strokes? Per column (the input first, as the reference of an
    image that ignores them): mean `stroke_distance` inside the mask to the new strokes and to the
    face's own strokes, and the share of images closer to the new ones."""
    from ilat_ext.metrics import mae, sketch_of_images

    rows = []
    for name, images in columns.items():
        drawn = sketch_of_images(images)                         # once per column, compared twice
        to_new, to_own = mae(drawn, new.float(), mask.float()), mae(drawn, own.float(), mask.float())
        rows.append({"method": name, "to_new_strokes": float(to_new.mean()), "to_own_strokes": float(to_own.mean()),
                     "closer_to_new": float((to_new < to_own).float().mean())})
    return rows


def stroke_markdown(rows: Sequence[dict]) -> str:
    lines = ["| | sketch distance to the new strokes | to the face's own strokes | images closer to the new |",
             "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['to_new_strokes']:.3f} | {r['to_own_strokes']:.3f} | {r['closer_to_new']:.0%} |"
              for r in rows]
    return "\n".join(lines)


@torch.no_grad()
def edit_with_new_strokes(models: Dict[str, object], n: int, out_path: str, size: int = 64, seed: int = 0,
                          n_score: Optional[int] = None, batch_size: int = 8):
    """The new-strokes grid input | mask | sketch | Taming | Taming* | iLAT | ceiling of the first n
    faces, and how closely each edit follows the new strokes over `n_score` faces (default n; at
    least n) (`stroke_table`, written next to the grid as .md): with 8 faces one face moves a
    share by 12.5%. The ceiling column is `ceiling_edit`: the donor's own codes in the mask, what
    the autoencoder can show at best. Returns (columns of all n_score faces, stroke rows)."""
    from ilat_ext.edit import make_grid

    n_score = n if n_score is None else max(int(n), int(n_score))
    x, mask, sketch, own = new_stroke_batch(n_score, size, seed)
    donors = donor_faces(n_score, size, seed)
    taming, ilat = models["taming"], models["ilat"]
    parts = []
    for i in range(0, n_score, batch_size):
        b = slice(i, i + batch_size)
        parts.append({"Taming": taming.sample_edit(x[b], mask[b], sketch[b]).image.cpu(),
                      "Taming*": taming.sample_local(x[b], mask[b], sketch[b]).image.cpu(),
                      "iLAT": ilat.sample_local(x[b], mask[b], sketch[b]).image.cpu(),
                      "ceiling": ceiling_edit(ilat, x[b], mask[b], donors[b]).cpu()})
    columns = {"input": x, "mask": mask * 2 - 1, "sketch": sketch}
    columns.update({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    make_grid({k: v[:n] for k, v in columns.items()}, out_path)
    rows = stroke_table({k: columns[k] for k in ("input", "Taming", "Taming*", "iLAT", "ceiling")}, mask, sketch, own)
    with open(os.path.splitext(out_path)[0] + ".md", "w") as f:
        f.write(f"New-strokes edits of {n_score} held-out faces (the grid shows the first {n}): XDoG of each output "
                "against the strokes inside the mask (MAE on [0, 1]; lower is closer). ceiling: the donor face's own "
                "codes in the mask (a perfect transformer with this autoencoder)\n\n" + stroke_markdown(rows) + "\n")
    return columns, rows


def run_face_demo(out: str = "demo", scale: float = 1.0, n_edit: int = 8, n_compare: int = 16, fresh: bool = False,
                  train_overrides: Sequence[str] = (), log=print, n_score: int = 32) -> List[dict]:
    """Steps 1-3 of the module docstring; returns the comparison table's rows."""
    from ilat_ext.compare import build_dataset, compare, markdown_table, model_method
    from ilat_ext.runs import load_run

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    runs = train_chain(face_chain(scale), os.path.join(out, "logs"), fresh=fresh, extra=train_overrides, log=log)
    trained = time.perf_counter()
    models = {name: load_run(runs[name])[0] for name in ("ilat", "taming")}
    edits = os.path.join(out, "edits.png")
    _, strokes = edit_with_new_strokes(models, n_edit, edits, n_score=n_score)
    log(f"new-strokes edits: {edits} (input | mask | sketch | Taming | Taming* | iLAT | ceiling); scored on "
        f"{max(n_edit, n_score)} faces")
    log(stroke_markdown(strokes))
    methods = [model_method("Taming", models["taming"], "edit"), model_method("Taming*", models["taming"], "local"),
               model_method("iLAT", models["ilat"], "local")]
    rows = compare(methods, build_dataset("toy_faces", n=n_compare, size=64, seed=0), os.path.join(out, "comparison"),
                   batch_size=8, verbose=False, progress=True)
    log(markdown_table(rows))
    log(f"comparison: {os.path.join(out, 'comparison')} (grid.png, metrics.md, metrics.csv)")
    log(f"total {time.perf_counter() - start:.0f} s (training {trained - start:.0f} s)")
    return rows


def run_pose_demo(out: str = "demo_poses", scale: float = 1.0, n_show: int = 6, n_compare: int = 16,
                  fresh: bool = False, train_overrides: Sequence[str] = (), log=print) -> List[dict]:
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
    from ilat_ext.compare import TASK_KEYS, compare, markdown_table, model_method, toy_pose_pairs
    from ilat_ext.data.toy_pose import ToyPoses
    from ilat_ext import pose_guide as pg
    from ilat_ext.edit import make_grid, to_uint8, write_rgb
    from ilat_ext.runs import load_run

    models = {name: load_run(runs[f"pose_{name}"])[0] for name in ("ilat", "ilat_star", "taming")}
    test = ToyPoses(size=64, length=max(n_show, n_compare) * 8, split="test")
    # one pair from each of n_show different videos (items of one video are consecutive)
    batch = torch.utils.data.default_collate([test[i * test.frames_per_video] for i in range(n_show)])
    inputs = models["ilat"].edit_inputs(batch)
    skeletons = torch.from_numpy(pg.skeleton_images(batch["pose_px"].numpy(), 64, 64)).permute(0, 3, 1, 2)
    columns = {"reference": inputs["x"], "target pose": skeletons.float() / 127.5 - 1, "mask": inputs["mask"] * 2 - 1}
    if models["ilat"].warp_reference:     # the condition frame the models read
        columns["warped reference"] = inputs["c"]
    columns.update({"Taming": models["taming"].sample_edit(**inputs).image,
                    "iLAT*": models["ilat_star"].sample_local(**models["ilat_star"].edit_inputs(batch)).image,
                    "iLAT": models["ilat"].sample_local(**inputs).image,
                    "ground truth": batch["image"].permute(0, 3, 1, 2)})
    make_grid(columns, os.path.join(out, "poses.png"))
    log(f"pose edits: {os.path.join(out, 'poses.png')}")

    seq_dir = os.path.join(out, "sequence")
    os.makedirs(seq_dir, exist_ok=True)
    poses = [test.video_pose(0, k) for k in range(test.frames_per_video)]   # held-out video 0
    reference = torch.from_numpy(test.render(0, poses[0])).permute(2, 0, 1)[None].float() / 127.5 - 1
    frames, masks = pg.synthesize_sequence(models["ilat"], reference, poses[0], poses[1:])
    for k, frame in enumerate(to_uint8(frames)):
        write_rgb(os.path.join(seq_dir, f"frame_{k:03d}.png"), frame)
    pg.write_gif(os.path.join(seq_dir, "sequence.gif"), frames)
    pg.write_mp4(os.path.join(seq_dir, "sequence.mp4"), frames)
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


def main(kind: str, argv: Optional[Sequence[str]] = None, doc: str = "") -> int:
    """The command line of scripts/demo_faces.py (kind "faces") and scripts/demo_poses.py ("poses")."""
    import argparse

    faces = kind == "faces"
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] or None)
    parser.add_argument("--out", default="demo" if faces else "demo_poses", help="output folder")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every stage's training steps (1.0: the figures in the README)")
    parser.add_argument("--n-show", type=int, default=8 if faces else 6,
                        help="held-out items in edits.png / poses.png")
    parser.add_argument("--n-compare", type=int, default=16, help="held-out items in the comparison")
    if faces:
        parser.add_argument("--n-score", type=int, default=32,
                            help="held-out faces whose new-strokes edits are scored in edits.md (at least --n-show)")
    parser.add_argument("--fresh", action="store_true", help="retrain every stage even if its run exists")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unrecognized options: {bad} (main.py overrides for every stage are written key=value)")
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be > 0")
    for flag in ("n_show", "n_compare", "n_score"):
        if getattr(args, flag, 1) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if faces:
        run_face_demo(args.out, args.steps_scale, args.n_show, args.n_compare, args.fresh, overrides,
                      n_score=args.n_score)
    else:
        run_pose_demo(args.out, args.steps_scale, args.n_show, args.n_compare, args.fresh, overrides)
    return 0
