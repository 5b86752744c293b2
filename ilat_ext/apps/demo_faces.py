"""The face demo in one command: the whole toy chain on CPU, edits with new strokes, a comparison.

    ilat-demo-faces [--out demo] [--steps_scale 1.0]        (or python scripts/demo_faces.py)

`run_face_demo`:

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
   preservation), seconds per image (`ilat_ext.apps.compare`; `<out>/comparison/`).
"""
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ilat_ext.apps.chain import TOY, Stage, train_chain

logger = logging.getLogger(__name__)

# Stage 2 of the face autoencoder continues stage 1, whose GAN term is already on (the toy config starts
# it after the quantizer warm-up, step 100); stage 2's step count starts again at 0.
GAN_FROM_START = "model.params.lossconfig.params.disc_start=0"


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
    from ilat_ext.apps.compare import pasted
    from ilat_ext.apps.image_io import labelled_grid

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
    shown = dict(columns)
    shown["iLAT pasted"] = pasted(x, columns["iLAT"], mask)   # what ilat-edit-face writes: the input outside the mask
    labelled_grid({k: v[:n] for k, v in shown.items()}, out_path)
    rows = stroke_table({k: columns[k] for k in ("input", "Taming", "Taming*", "iLAT", "ceiling")}, mask, sketch, own)
    with open(os.path.splitext(out_path)[0] + ".md", "w") as f:
        f.write(f"New-strokes edits of {n_score} held-out faces (the grid shows the first {n}): XDoG of each output "
                "against the strokes inside the mask (MAE on [0, 1]; lower is closer). ceiling: the donor face's own "
                "codes in the mask (a perfect transformer with this autoencoder)\n\n" + stroke_markdown(rows) + "\n")
    return columns, rows


def run_face_demo(out: str = "demo", scale: float = 1.0, n_edit: int = 8, n_compare: int = 16, fresh: bool = False,
                  train_overrides: Sequence[str] = (), log: Callable[[str], None] = logger.info,
                  n_score: int = 32) -> List[dict]:
    """Steps 1-3 of the module docstring; returns the comparison table's rows. `log` gets the
    progress lines and the tables (the command line passes `print`)."""
    from ilat_ext.apps.compare import build_dataset, compare, markdown_table, model_method
    from ilat_ext.runs import load_run

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    runs = train_chain(face_chain(scale), os.path.join(out, "logs"), fresh=fresh, extra=train_overrides, log=log)
    trained = time.perf_counter()
    models = {name: load_run(runs[name])[0] for name in ("ilat", "taming")}
    edits = os.path.join(out, "edits.png")
    _, strokes = edit_with_new_strokes(models, n_edit, edits, n_score=n_score)
    log(f"new-strokes edits: {edits} (input | mask | sketch | Taming | Taming* | iLAT | ceiling | iLAT pasted); scored on "
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
