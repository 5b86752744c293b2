"""Sketch-guided face editing with a trained run: the library half of `ilat-edit-face` (scripts/edit_face.py).

iLAT (Cao et al., "The Image Local Autoregressive Transformer", NeurIPS 2021, Sec. 4, Fig. 4)
edits the masked region of a face so that it follows a sketch. At edit time the condition sketch
is the XDoG sketch of the face outside the mask plus the user's strokes inside it
(`ilat_ext.data.sketch.compose_edit_sketch`); the model regenerates the masked latent tokens with
the LA mask and decodes with Eq. 4, so everything outside the mask's latent cells is kept.

    editor = load_editor("logs/<ilat run>", device="cpu")
    inputs = prepare_inputs("face.png", "mask.png", "strokes.png", editor.size, editor.sketch_style)
    result = edit_faces(editor.model, inputs.x, inputs.mask, inputs.sketch)      # an EditResult
    write_rgb("result.png", paste_results(inputs, result.image)[0])     # the photo's size, edited in the mask
    labelled_grid({"input": inputs.x, "mask": inputs.mask * 2 - 1, "iLAT": result.image}, "grid.png")

(`write_rgb`, `tensor_to_uint8`, `labelled_grid`: `ilat_ext.apps.image_io`.)

Input and output (`ilat_ext.apps.photo_io`). The photo, its mask and the strokes are read as users
have them: any common format and size, masks and strokes at any resolution with the photo's aspect
ratio, paint layers with alpha, strokes light on dark or dark on light. The model edits a square
region (`ReadOptions.region`: the photo's centred square, "full", or a square around the mask,
"mask") resized to the run's training size (`ilat_ext.runs.model_input_size`). The mask is resized
so that a model pixel is edited when any part of it is covered by the user's mask, so the strokes
the user drew inside the mask always land inside the edited region. `paste_results` puts the
decoded square back into the photo at its own resolution, inside the user's mask only.

Which XDoG outside the mask (`sketch_style`). The sketch outside the mask must look like the
sketches the model was trained on, so it is made the way the run's training data made them:

  * "release": `release_sketch`, XDoG with the release constants on the source-resolution crop,
    then resized (FaceDataset, scripts/generate_xdog_sketch.py; the default);
  * "resized": XDoG of the image already resized to the model size (ImageFolder(sketch=True));
  * "toy": ToyFaces' sketches are XDoG of the 4x supersampled drawing (2x above 64 px), shrunk with
    INTER_AREA (`sketch_from_canvas`). An edited toy face is a 64-px file without its canvas, so we
    enlarge it 4x with INTER_CUBIC, run XDoG and shrink back (`toy_style_sketch`). Plain `xdog` on
    the 64-px face is NOT compatible: sigma=1.5 is meant for 256-px faces and draws blobs. On 20
    ToyFaces test faces against `ToyFaces.sketch_of` (ink = < 128):

        method                          mean |diff|   ink IoU   ink fraction (reference 0.102)
        xdog on the 64-px face             54.1        0.28       0.269
        xdog, sigma scaled to 0.375        13.7        0.77       0.128
        4x INTER_CUBIC, xdog, INTER_AREA    6.3        0.84       0.106   <- "toy"

`ilat_ext.runs.sketch_style_of(config)` picks the style from the run's training dataset ("toy" for ToyFaces,
"resized" for ImageFolder, else "release"; token datasets do not say which images they came
from, so a run trained from stored toy tokens needs "toy" to be named).

Empty masks. `TamingTransformer.sample_local` returns the input unchanged when the whole batch
has nothing to edit, but an element with an empty mask inside a batch that has edits would be
decoded from its features (Eq. 4 with no code), which is close to but not exactly the input.
`edit_faces` therefore edits only the elements with something to edit and returns the others
bit-exactly.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ilat_ext.apps.image_io import tensor_to_uint8, uint8_to_tensor
from ilat_ext.apps.photo_io import (DEFAULT_MARGIN, DEFAULT_MAX_PIXELS, Region, choose_region, paste_edit, read_mask,
                                    read_photo, read_strokes)
from ilat_ext.data.image_files import IMAGE_EXTENSIONS, resize_square
from ilat_ext.data.sketch import compose_edit_sketch, release_sketch, sketch_to_tensor_layout, xdog
from ilat_ext.models.cond_transformer import EditResult, TamingTransformer
from ilat_ext.models.ilat_transformer import ILATTransformer
from ilat_ext.runs import check_input_size, load_run, model_input_size, sketch_style_of, trained_on_whole_images

SKETCH_STYLES = ("release", "resized", "toy")
EDIT_MODES = ("local", "taming")


# --------------------------------------------------------------------------------------- model


@dataclass
class Editor:
    """A loaded run ready to edit: the model (on its device, eval mode), the image side it takes,
    how its training sketches were made, the run's config, and whether it was trained on whole
    images (`ilat_ext.runs.trained_on_whole_images`, for `ReadOptions.whole_images`)."""

    model: TamingTransformer
    size: int
    sketch_style: str
    config: Any
    run: str
    whole_images: bool = True


def load_editor(run: str, device: str = "cpu", size: Optional[int] = None, baseline: bool = False,
                unsafe: Optional[bool] = None) -> Editor:
    """Load `logs/<run>` (or a checkpoint in it) for editing.

    Args:
        run: a main.py log directory or a checkpoint inside its checkpoints/.
        device: torch device for the model.
        size: image side to edit at; None = the run's training size (`model_input_size`).
        baseline: the run must be a Taming baseline (a TamingTransformer that is not an iLAT model:
            `sample_edit` is Taming, `sample_local` Taming*).
        unsafe: full unpickling of the checkpoint (trusted files only; `load_run`).

    Raises:
        FileNotFoundError: no such run, checkpoint or saved config.
        ilat_ext.runs.RunError: a checkpoint that is truncated, refused or does not fit the config.
        ValueError: the model is not a sketch-guided TamingTransformer / ILATTransformer (the pose
            model needs a pose), or `size` does not fit the transformer.
    """
    from ilat_ext.models.pose_transformer import PoseILATTransformer

    model, config = load_run(run, unsafe=unsafe)
    target = (getattr(model, "build_config", None) or {}).get("target", type(model).__name__)
    if not isinstance(model, TamingTransformer) or isinstance(model, PoseILATTransformer):
        raise ValueError(f"run {run!r} holds a {target}, not a TamingTransformer or ILATTransformer: "
                         "face editing needs a sketch-guided transformer run")
    if baseline and isinstance(model, ILATTransformer):
        raise ValueError(f"--taming run {run!r} holds an iLAT model ({target}); the baseline must be a "
                         "TamingTransformer run (configs/toy/taming.yaml, configs/taming_ffhq.yaml)")
    conv_in = getattr(getattr(model.cond_stage_model, "encoder", None), "conv_in", None)
    if not model.be_unconditional and (conv_in is None or conv_in.in_channels != 1):
        raise ValueError(f"run {run!r} is conditioned on {model.cond_stage_key!r}, not on a 1-channel sketch")
    model.to(device)
    size = model_input_size(model, config) if size is None else int(size)
    check_input_size(model, size)
    return Editor(model, size, sketch_style_of(config), config, run, trained_on_whole_images(config))


# -------------------------------------------------------------------------------------- inputs


@dataclass
class EditInputs:
    """Model inputs for a batch of B images (on the CPU) and what `paste_results` needs.

    x: (B, 3, S, S) float in [-1, 1]; mask: (B, 1, S, S) float in {0, 1}, 1 = edit;
    sketch: (B, 1, S, S) float in [-1, 1], +1 paper, -1 ink (the condition).
    originals: per image, the uint8 (H, W, 3) RGB photo as read; masks_full: per image, bool (H, W);
    regions: per image, the `photo_io.Region` the model edits; notes: what reading decided.
    """

    x: torch.Tensor
    mask: torch.Tensor
    sketch: torch.Tensor
    originals: List[np.ndarray]
    masks_full: List[np.ndarray]
    regions: List[Region] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @staticmethod
    def stack(items: List["EditInputs"]) -> "EditInputs":
        return EditInputs(torch.cat([i.x for i in items]), torch.cat([i.mask for i in items]),
                          torch.cat([i.sketch for i in items]), [o for i in items for o in i.originals],
                          [m for i in items for m in i.masks_full], [r for i in items for r in i.regions],
                          [n for i in items for n in i.notes])

    def __len__(self) -> int:
        return self.x.shape[0]


def toy_style_sketch(image: np.ndarray) -> np.ndarray:
    """uint8 (S, S) sketch of an (S, S, 3) toy face made like ToyFaces' training sketches: XDoG with
    the release constants at 4x (2x above 64 px; make_face's supersampling), INTER_CUBIC up, INTER_AREA
    down (see the module docstring for how close it comes to `ToyFaces.sketch_of`)."""
    size = image.shape[0]
    factor = 4 if size <= 64 else 2
    big = cv2.resize(image, (size * factor, size * factor), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(xdog(big), (size, size), interpolation=cv2.INTER_AREA)


def original_sketch(image: np.ndarray, size: int, style: str = "release") -> np.ndarray:
    """uint8 (size, size) XDoG sketch of the (H, W, 3) source image (the region's square) in the training style."""
    if style not in SKETCH_STYLES:
        raise ValueError(f"sketch style must be one of {SKETCH_STYLES}, got {style!r}")
    if style == "release":
        return release_sketch(image, size)
    resized = resize_square(image, size)
    return xdog(resized) if style == "resized" else toy_style_sketch(resized)


@dataclass
class ReadOptions:
    """How `prepare_inputs` reads the user's files (the `ilat-edit-face` flags of the same names;
    see `ilat_ext.apps.photo_io`): the region the model edits ("auto", "full", "mask") and its
    context margin, the mask threshold, the strokes' polarity, the pixel limit, and whether the run
    was trained on whole images (`auto` keeps those on the whole photo)."""

    region: str = "full"
    margin: float = DEFAULT_MARGIN
    mask_threshold: float = 0.5
    strokes_polarity: str = "auto"
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
    whole_images: bool = True
    allow_empty: bool = False


def prepare_inputs(image_path: str, mask_path: str, strokes_path: Optional[str], size: int,
                   sketch_style: str = "release", sketch_path: Optional[str] = None,
                   options: Optional[ReadOptions] = None) -> EditInputs:
    """Read one photo, its mask and the user's strokes (or a complete sketch) -> `EditInputs` (B = 1).

    Args:
        image_path: any image file (`photo_io.read_photo`: formats, EXIF, alpha, pixel limit).
        mask_path: the region to edit, white (or opaque on a transparent layer), at any resolution
            with the image's aspect ratio (`photo_io.read_mask`).
        strokes_path: the user's lines, dark on light or light on dark or a transparent layer, any
            resolution with the image's aspect ratio; only their part inside the mask is used.
            Ignored when `sketch_path` is given.
        size: the model's image side.
        sketch_style: how the XDoG outside the mask is made: "release", "resized" or "toy".
        sketch_path: a complete condition sketch read like the strokes, used as is instead of
            XDoG + strokes.
        options: `ReadOptions` (default: the whole photo's centred square, threshold one half,
            polarity detected, 50 MP limit).

    The model edits `options.region` (`photo_io.choose_region`), cropped and resized to `size`.
    Raises `photo_io.InputError` (a ValueError) naming the file for anything unusable.
    """
    o = options or ReadOptions()
    photo = read_photo(image_path, "image", o.max_pixels)
    mask = read_mask(mask_path, photo.shape, image_path, o.mask_threshold, o.max_pixels, allow_empty=o.allow_empty)
    which = sketch_path if sketch_path is not None else strokes_path
    if which is None:
        raise ValueError("give the strokes (dark lines on white) or a complete sketch")
    lines = read_strokes(which, photo.shape, image_path, o.strokes_polarity,
                         "sketch" if sketch_path is not None else "strokes", o.max_pixels)
    return prepare_arrays(photo.rgb, mask.mask, lines.sketch, size, sketch_style, sketch_path is not None, o,
                          photo.notes + mask.notes + lines.notes)


def prepare_arrays(photo: np.ndarray, mask: np.ndarray, lines: np.ndarray, size: int, sketch_style: str = "release",
                   complete_sketch: bool = False, options: Optional[ReadOptions] = None,
                   notes: Sequence[str] = ()) -> EditInputs:
    """`prepare_inputs` on arrays already read (the browser editor's canvas layers, say) -> `EditInputs` (B = 1).

    photo: uint8 (H, W, 3) RGB; mask: bool (H, W), True = edit; lines: uint8 (H, W) dark lines on
    white at the photo's size (`photo_io.read_strokes`' convention), the user's strokes (only
    their part inside the mask is used) or, with `complete_sketch`, the whole condition sketch.
    `options` gives the region rule (`photo_io.choose_region`); `notes` are carried into the result's.
    """
    o = options or ReadOptions()
    if photo.shape[:2] != mask.shape or lines.shape != mask.shape:
        raise ValueError(f"photo {photo.shape}, mask {mask.shape} and lines {lines.shape} differ in size")
    region, why = choose_region(o.region, mask, size, o.whole_images, o.margin)
    H, W = mask.shape
    notes = list(notes) + [f"region: {region.side}x{region.side} px at ({region.left}, {region.top}) "
                           f"of the {W}x{H} image ({why})"]
    if region.side < size:
        notes.append(f"warning: the {region.side}x{region.side} region is smaller than the model's {size} px: "
                     "upscaled, so the edit is no sharper than the source")
    square = region.crop(photo)
    resized = resize_square(square, size)
    model_mask = region.mask_to_model(mask, size)
    drawn = region.to_model(lines, size, fill=255)
    if complete_sketch:
        sketch = drawn
    else:
        sketch = compose_edit_sketch(resized, model_mask, drawn,
                                     original_sketch=original_sketch(square, size, sketch_style))
    x = uint8_to_tensor(resized)
    c = torch.from_numpy(sketch_to_tensor_layout(sketch)).permute(2, 0, 1)[None]
    m = torch.from_numpy(model_mask.astype(np.float32))[None, None]
    return EditInputs(x, m, c.contiguous(), [photo], [mask], [region], notes)


def paste_results(inputs: EditInputs, images: torch.Tensor, feather: Optional[float] = None) -> List[np.ndarray]:
    """Each decoded (S, S) edit of `images` (B, 3, S, S) in [-1, 1] pasted into its photo at the
    source resolution, inside the user's mask only (`photo_io.paste_edit`)."""
    decoded = tensor_to_uint8(images)
    return [paste_edit(original, mask, decoded[i], region, feather)
            for i, (original, mask, region) in enumerate(zip(inputs.originals, inputs.masks_full, inputs.regions))]


# --------------------------------------------------------------------------------------- edit


@torch.no_grad()
def edit_faces(model: TamingTransformer, x: torch.Tensor, mask: torch.Tensor, sketch: Optional[torch.Tensor],
               mode: str = "local", *, greedy: bool = True, temperature: float = 1.0, top_k: Optional[int] = None,
               seed: Optional[int] = None, progress: bool = False) -> EditResult:
    """Edit a batch: x (B, 3, H, W) in [-1, 1], mask (B, 1, H, W) 1 = edit, sketch (B, 1, H, W) in [-1, 1].

    mode "local": `model.sample_local` (iLAT; Taming* on a Taming model); "taming": `model.sample_edit`
    (Taming's edit). Greedy by default, else a draw at `temperature` from the `top_k` most likely
    codes seeded by `seed`. Elements with an empty mask come back bit-exactly (module docstring);
    the others go through the model together. Returns an `EditResult` on the model's device:
    image (B, 3, H, W), indices (B, L), token_mask (B, L), steps.
    """
    if mode not in EDIT_MODES:
        raise ValueError(f"mode must be one of {EDIT_MODES}, got {mode!r}")
    device = model.device
    x, mask = x.to(device), mask.to(device)
    sketch = None if sketch is None else sketch.to(device)
    sample = model.sample_local if mode == "local" else model.sample_edit
    kwargs = dict(greedy=greedy, temperature=temperature, top_k=top_k, seed=seed, progress=progress)
    active = mask.flatten(1).any(1)                                                        # (B,)
    if active.all() or not active.any():
        return sample(x, mask, sketch, **kwargs)
    pick = lambda t, rows: None if t is None else t[rows]  # noqa: E731
    edited = sample(x[active], mask[active], pick(sketch, active), **kwargs)
    idle = model.sample_local(x[~active], mask[~active], pick(sketch, ~active))   # no transformer call
    image, indices = x.clone(), torch.empty(x.shape[0], edited.indices.shape[1], dtype=edited.indices.dtype,
                                            device=device)
    token_mask = torch.zeros(x.shape[0], edited.token_mask.shape[1], dtype=torch.bool, device=device)
    for rows, result in ((active, edited), (~active, idle)):
        image[rows], indices[rows], token_mask[rows] = result.image, result.indices, result.token_mask
    return EditResult(image, indices, token_mask, edited.steps)


BATCH_LAYOUTS = {"ilat_ext": ("images", "masks", "strokes"), "release": ("source", "mask", "sketch")}


def list_edit_folder(input_dir: str) -> Tuple[List[Tuple[str, str, str]], Dict[str, List[str]]]:
    """Batch mode's files, in either layout of `BATCH_LAYOUTS`: ours, `input_dir/images/*` with
    `masks/<same name>` and `strokes/<same name>`, or the release's samples, `source/*` with
    `mask/<same name>` and `sketch/<same name>` (its sketch files are the user's strokes, light on
    dark). The same stem with another image extension also matches.

    Returns (triples (image, mask, strokes), skipped {"no mask": [...], "no strokes": [...],
    "not an image": [...]}). Unreadable images are found later, when they are read.
    """
    layout = next((names for names in BATCH_LAYOUTS.values()
                   if os.path.isdir(os.path.join(input_dir, names[0]))), BATCH_LAYOUTS["ilat_ext"])
    folders = dict(zip(("images", "masks", "strokes"), (os.path.join(input_dir, k) for k in layout)))
    for folder in folders.values():
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"batch mode needs {folder!r}: {input_dir!r} must hold images/, masks/, strokes/ "
                                    "(or the release's source/, mask/, sketch/)")

    def partner(kind: str, name: str) -> Optional[str]:
        exact = os.path.join(folders[kind], name)
        if os.path.isfile(exact):
            return exact
        stem = os.path.splitext(name)[0]
        for other in sorted(os.listdir(folders[kind])):
            if os.path.splitext(other)[0] == stem and other.lower().endswith(IMAGE_EXTENSIONS):
                return os.path.join(folders[kind], other)
        return None

    triples, skipped = [], {"no mask": [], "no strokes": [], "not an image": []}
    for name in sorted(os.listdir(folders["images"])):
        path = os.path.join(folders["images"], name)
        if not os.path.isfile(path) or name.startswith("."):
            continue
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            skipped["not an image"].append(path)
            continue
        mask, strokes = partner("masks", name), partner("strokes", name)
        if mask is None:
            skipped["no mask"].append(path)
        elif strokes is None:
            skipped["no strokes"].append(path)
        else:
            triples.append((path, mask, strokes))
    return triples, skipped


class PhotoFolder(torch.utils.data.Dataset):
    """A batch-mode folder (`list_edit_folder`'s layouts) as a test set for `ilat_ext.apps.compare`:
    every usable photo prepared at `size` px (`prepare_inputs` with `sketch_style` and `options`),
    in taming's item layout: image (S, S, 3) and sketch (S, S, 1) in [-1, 1], mask (S, S, 1) in
    {0, 1}, index. Files that cannot be used are skipped, with their reasons, in `skipped`
    ({reason: [paths or "path: message"]}); ValueError when none is left."""

    def __init__(self, input_dir: str, size: int, sketch_style: str = "release",
                 options: Optional[ReadOptions] = None):
        triples, self.skipped = list_edit_folder(input_dir)
        self.skipped["unreadable or unusable"] = []
        self.items, self.paths = [], []
        for image, mask, strokes in triples:
            try:
                inputs = prepare_inputs(image, mask, strokes, size, sketch_style, None, options)
            except (OSError, ValueError) as e:
                self.skipped["unreadable or unusable"].append(f"{image}: {e}")
                continue
            self.items.append({"image": inputs.x[0].permute(1, 2, 0).numpy(),
                               "mask": inputs.mask[0].permute(1, 2, 0).numpy(),
                               "sketch": inputs.sketch[0].permute(1, 2, 0).numpy()})
            self.paths.append(image)
        if not self.items:
            raise ValueError(f"no usable photo in {input_dir!r} ({self.skipped_summary() or 'the folder is empty'})")

    def skipped_summary(self) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in self.skipped.items() if v)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return dict(self.items[i], index=i)
