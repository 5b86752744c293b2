"""Sketches for sketch-guided face editing: XDoG edge maps and the edit-time condition sketch.

iLAT (Cao et al., "The Image Local Autoregressive Transformer", NeurIPS 2021) edits a masked face
region guided by a sketch. Training sketches are XDoG edge maps (Winnemoeller et al., "XDoG: An
eXtended difference-of-Gaussians compendium including advanced image stylization", Computers &
Graphics 2012) of the grayscale image, with the release's constants::

    D    = G_sigma(I) - gamma * G_{k*sigma}(I)                     gamma=0.97, k=2.5, sigma=1.5
    edge = clip(1 + tanh(phi * (D - eps)), 0, 1) * 255             phi=200, eps=0.1

Intensity scale. `eps` is an absolute threshold on D, so the formula only means something for a
given intensity scale. On a flat patch of intensity I, D = (1 - gamma) * I = 0.03 * I:
  * with I in grey levels [0, 255], D > eps wherever I > 3.3 grey levels, so flat regions are
    white (paper) and only the dark side of an edge, where the narrow blur falls below the wide
    one, turns black (ink): dark lines on white, the look of the paper's figures;
  * with I in [0, 1], D <= 0.03 < eps everywhere flat, so the page is black and only the bright
    side of edges with contrast above ~0.4 turns white: a sparse, inverted sketch in which
    low-contrast outlines vanish.
We therefore evaluate the formula on grey levels in [0, 255] (`intensity_scale=255`), whatever
the input dtype: uint8 is used as is, floats in [0, 1] are multiplied by 255. `intensity_scale=1`
reproduces an evaluation on [0, 1] intensities for comparison. With phi=200 per grey level the
tanh ramp is 1/100 of a grey level wide, so the output is binary in practice.

Conventions used throughout the project:
  * sketch image: uint8 (H, W), 255 = paper (white), 0 = ink (black lines). `xdog` returns this,
    and user strokes for `compose_edit_sketch` use it too.
  * sketch tensor layout (taming's convention for images): float32 (H, W, 1) in [-1, 1],
    +1 = paper, -1 = ink (`sketch_to_tensor_layout` / `sketch_from_tensor_layout`).
  * mask: (H, W) with 1 = region to edit (see `ilat_ext.data.mask_shapes`).

Resolution. The release computes XDoG on the source photograph and resizes the result to 256 px;
on 256-px faces sigma=1.5 draws lines a few pixels wide. On a 64-px toy face the same sigma gives
blobs as wide as an eye, and sigma scaled to 0.375 gives aliased 1-px lines with the film grain
turned into speckle. So `sketch_from_canvas` follows the release's pipeline with the supersampled
drawing as the source: XDoG with the release constants on the canvas `make_face` shrinks to get
the face (4x, i.e. 256 px for a 64-px face; 2x above 64 px), then the same INTER_AREA shrink.
For a 64-px face that is the release sketch of the 256-px (grain-free) drawing, scaled down;
the lines come out about 1 px wide and anti-aliased. Real images keep the release defaults:
`release_sketch` (XDoG on the source-resolution square crop, then INTER_AREA resize) for one
photograph, `sketch_folder` (scripts/generate_xdog_sketch.py) for a folder, resumably.

Worked example::

    >>> img = np.full((64, 64), 200, np.uint8); img[16:48, 16:48] = 40   # dark square on grey
    >>> e = xdog(img)
    >>> e.dtype, e.shape
    (dtype('uint8'), (64, 64))
    >>> int(e[0, 0]), int(e[32, 32]), int(e[32, 15]), int(e[32, 16])  # paper, paper, bright side, dark side
    (255, 255, 255, 0)
"""
import os
import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import cv2
import numpy as np
from tqdm.auto import tqdm

from ilat_ext.data.image_files import IMAGE_EXTENSIONS, TEMP_PREFIX, center_square, decode_image, resize_square
from ilat_ext.data.image_files import write_image_atomic

# The release's XDoG constants (face editing, 256-px images).
XDOG_GAMMA, XDOG_PHI, XDOG_EPS, XDOG_K, XDOG_SIGMA = 0.97, 200.0, 0.1, 2.5, 1.5
CHANNEL_ORDERS = ("rgb", "bgr")
# ITU-R BT.601 luma, the weights of cv2.COLOR_RGB2GRAY.
_LUMA_RGB = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------- helpers


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an (H, W), (H, W, 1) or (H, W, 3) uint8 or [0, 1]-float image; return float64 grey levels."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"{name} must have shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if image.dtype in (np.float16, np.float32, np.float64):
        x = image.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (taming's [-1, 1] images: pass (x + 1) / 2)" if lo >= -1.0 and hi <= 1.0 else ""
            raise ValueError(f"float {name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")
        return x * 255.0
    raise TypeError(f"{name} must be uint8 or float in [0, 1], got dtype {image.dtype}")


def to_grayscale(image: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """Luma of an image in grey levels: float64 (H, W) in [0, 255].

    Args:
        image: uint8 or float-in-[0, 1] array of shape (H, W), (H, W, 1) or (H, W, 3).
        channel_order: "rgb" (the project's and PIL's order) or "bgr" (cv2.imread's); only used
            for 3-channel images.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    x = _check_image(image)
    if x.ndim == 2:
        return x
    if x.shape[2] == 1:
        return x[:, :, 0]
    weights = _LUMA_RGB if channel_order == "rgb" else _LUMA_RGB[::-1]
    return x @ weights


def _check_plane(array: np.ndarray, name: str) -> np.ndarray:
    """Accept (H, W) or (H, W, 1); return (H, W)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W) or (H, W, 1), got {array.shape}")
    return array


# ------------------------------------------------------------------------------------------ XDoG


def xdog(
    image: np.ndarray,
    gamma: float = XDOG_GAMMA,
    phi: float = XDOG_PHI,
    eps: float = XDOG_EPS,
    k: float = XDOG_K,
    sigma: float = XDOG_SIGMA,
    channel_order: str = "rgb",
    intensity_scale: float = 255.0,
) -> np.ndarray:
    """XDoG sketch of an image: uint8 (H, W), dark lines (0) on white (255).

    edge = clip(1 + tanh(phi * (G_sigma - gamma * G_{k*sigma} - eps)), 0, 1) * 255, rounded, on the
    grayscale image in grey levels [0, 255] (see the module docstring for why that scale).

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) array, uint8 or float in [0, 1].
        gamma, phi, eps, k, sigma: the XDoG constants; defaults are the release's for 256-px faces.
            `sigma` is in pixels of `image`.
        channel_order: "rgb" or "bgr", for 3-channel images.
        intensity_scale: grey level of white in the formula: 255 (default) or 1 for [0, 1]
            intensities (gives white lines on black with these constants; for comparison only).

    The Gaussians are cv2.GaussianBlur in float64 with OpenCV's kernel size for sigma
    (cvRound(8 * sigma + 1) | 1 taps) and BORDER_REFLECT_101.
    """
    for name, value in (("gamma", gamma), ("phi", phi), ("eps", eps), ("k", k), ("sigma", sigma),
                        ("intensity_scale", intensity_scale)):
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) \
                or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if sigma <= 0 or k <= 0 or intensity_scale <= 0:
        raise ValueError(f"sigma, k and intensity_scale must be positive, got {sigma!r}, {k!r}, {intensity_scale!r}")
    gray = to_grayscale(image, channel_order) * (float(intensity_scale) / 255.0)
    narrow = cv2.GaussianBlur(gray, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT_101)
    wide = cv2.GaussianBlur(gray, (0, 0), float(k) * float(sigma), borderType=cv2.BORDER_REFLECT_101)
    edge = np.clip(1.0 + np.tanh(float(phi) * (narrow - float(gamma) * wide - float(eps))), 0.0, 1.0)
    return np.rint(edge * 255.0).astype(np.uint8)


def sketch_from_canvas(canvas: np.ndarray, size: int, channel_order: str = "rgb", **xdog_kwargs) -> np.ndarray:
    """XDoG of a supersampled drawing, shrunk to (size, size) like the drawing itself.

    This is how the toy faces get their sketches: `make_face` draws at 4x (2x above 64 px) and
    shrinks with INTER_AREA; we run `xdog` with the release constants on that canvas (256 px for a
    64-px face, the release's training resolution) and shrink the sketch with INTER_AREA too, so
    the lines keep the proportions they have on a 256-px face and become anti-aliased grey where
    they are thinner than an output pixel.

    Args:
        canvas: (S, S, 3) or (S, S) image, S a multiple of `size`.
        size: output side.
        channel_order, xdog_kwargs: passed to `xdog`.

    Returns:
        uint8 (size, size), dark lines on white.
    """
    canvas = np.asarray(canvas)
    if canvas.ndim < 2 or canvas.shape[0] != canvas.shape[1]:
        raise ValueError(f"canvas must be square (S, S) or (S, S, C), got shape {canvas.shape}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1 or canvas.shape[0] % size:
        raise ValueError(f"size must be a positive divisor of the canvas side {canvas.shape[0]}, got {size!r}")
    edge = xdog(canvas, channel_order=channel_order, **xdog_kwargs)
    if edge.shape[0] == size:
        return edge
    return cv2.resize(edge, (int(size), int(size)), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------ photographs and image folders


def release_sketch(image: np.ndarray, size: int, channel_order: str = "rgb", **xdog_kwargs) -> np.ndarray:
    """The release's training sketch of a photograph: uint8 (size, size), dark lines on white.

    XDoG with the release constants on the centred square crop at the SOURCE resolution (e.g.
    FFHQ's 1024 px), then resized to `size` (INTER_AREA when shrinking, INTER_CUBIC when
    enlarging). The crop is the one `ilat_ext.data.folder.read_rgb` and the face datasets take,
    so image and sketch stay aligned. `FaceDataset(sketch="xdog")` computes this on the fly and
    `sketch_folder` writes it to disk: the two agree exactly.

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3), uint8 or float in [0, 1].
        size: output side.
        channel_order, xdog_kwargs: passed to `xdog`.
    """
    _check_image(image)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    edge = xdog(center_square(image), channel_order=channel_order, **xdog_kwargs)
    return resize_square(edge, int(size))


@dataclass
class SketchFolderReport:
    """What `sketch_folder` did. Paths are those of the input files."""

    written: int = 0
    already_done: int = 0  # outputs already there and readable (a resumed run)
    unreadable: List[str] = field(default_factory=list)  # image extension, but cv2 cannot decode it
    not_images: List[str] = field(default_factory=list)  # no image extension

    @property
    def processed(self) -> int:
        return self.written + self.already_done

    @property
    def skipped(self) -> List[str]:
        return self.unreadable + self.not_images

    def summary(self, first: int = 3) -> str:
        """One line: "written 5, resumed 2, skipped 2 (1 unreadable, 1 not an image): a.png, b.txt"."""
        line = f"written {self.written}, resumed {self.already_done}, skipped {len(self.skipped)}"
        if self.skipped:
            line += f" ({len(self.unreadable)} unreadable, {len(self.not_images)} not images): "
            line += ", ".join(self.skipped[:first]) + (", ..." if len(self.skipped) > first else "")
        return line


def _list_folder(input_dir: str, prune: str):
    """(image paths, other paths) under input_dir, sorted, leaving out the folder `prune` and
    the temporary files of interrupted atomic writes."""
    images, others = [], []
    for folder, dirs, names in os.walk(input_dir):
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(folder, d)) != prune)
        for name in sorted(names):
            if name.startswith(TEMP_PREFIX):
                continue
            path = os.path.join(folder, name)
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    return images, others


def sketch_folder(input_dir: str, output_dir: str, size: int = 256, overwrite: bool = False,
                  progress: bool = True) -> SketchFolderReport:
    """Write the release sketch (`release_sketch`) of every image under `input_dir` (recursive)
    to the same relative path under `output_dir`, as .png with the same stem.

    Resumable: an output that exists and decodes is counted in `already_done` and left alone
    (unless `overwrite`). Each png is written atomically (temporary file + os.replace), so an
    interrupted run leaves complete files only. Files that are not images (by extension) or that
    cannot be decoded are skipped, listed in the report and counted in one warning; the run goes on.

    Raises (before writing anything):
        FileNotFoundError if `input_dir` is not a folder; ValueError if it holds no images, if
        two images map to the same output (same folder and stem, e.g. a.jpg and a.png), or if an
        output would overwrite an input.
    """
    input_dir, output_dir = os.fspath(input_dir), os.fspath(output_dir)
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"input folder not found: {input_dir!r}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    sources, not_images = _list_folder(input_dir, prune=os.path.abspath(output_dir))
    if not sources:
        others = f" (it holds {len(not_images)} other files)" if not_images else ""
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in input folder {input_dir!r}{others}")
    targets = [os.path.join(output_dir, os.path.splitext(os.path.relpath(p, input_dir))[0] + ".png")
               for p in sources]
    first_source = {}
    clashes = []
    for src, out in zip(sources, targets):
        if out in first_source:
            clashes.append(f"{first_source[out]} and {src}")
        first_source.setdefault(out, src)
    if clashes:
        raise ValueError(f"{len(clashes)} images share an output png (same folder and stem): "
                         + "; ".join(clashes[:3]))
    overlap = {os.path.abspath(p) for p in sources} & {os.path.abspath(t) for t in targets}
    if overlap:
        raise ValueError(f"outputs would overwrite {len(overlap)} input images, e.g. {sorted(overlap)[0]!r}; "
                         "choose an output folder apart from the input")

    report = SketchFolderReport(not_images=not_images)
    bar = tqdm(list(zip(sources, targets)), desc="XDoG sketches", unit="img", disable=not progress)
    for src, out in bar:
        if not overwrite and os.path.exists(out) and decode_image(out, cv2.IMREAD_GRAYSCALE) is not None:
            report.already_done += 1
            continue
        image = decode_image(src, cv2.IMREAD_COLOR)
        try:
            # RGB like read_rgb, so the luma sums in the same order as FaceDataset's on-the-fly sketch.
            sketch = None if image is None else release_sketch(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size)
        except (cv2.error, ValueError):
            sketch = None
        if sketch is None:
            report.unreadable.append(src)
            bar.set_postfix(skipped=len(report.unreadable))
            continue
        write_image_atomic(out, sketch)
        report.written += 1
    bar.close()
    if report.skipped:
        warnings.warn(
            f"sketch_folder: skipped {len(report.skipped)} of {len(sources) + len(not_images)} files in "
            f"{input_dir!r} ({len(report.unreadable)} unreadable images, {len(report.not_images)} not images); "
            f"first: {report.skipped[:3]}",
            RuntimeWarning,
            stacklevel=2,
        )
    return report


# ---------------------------------------------------------------------------------- tensor layout


def sketch_to_tensor_layout(sketch: np.ndarray) -> np.ndarray:
    """uint8 (H, W) or (H, W, 1) sketch -> float32 (H, W, 1) in [-1, 1] (white +1, ink -1)."""
    sketch = _check_plane(sketch, "sketch")
    if sketch.dtype != np.uint8:
        raise TypeError(f"sketch must be uint8 (H, W), got dtype {sketch.dtype}")
    return (sketch.astype(np.float32) / np.float32(127.5) - np.float32(1.0))[:, :, None]


def sketch_from_tensor_layout(sketch: np.ndarray) -> np.ndarray:
    """float (H, W, 1) or (H, W) in [-1, 1] -> uint8 (H, W); inverse of `sketch_to_tensor_layout`."""
    sketch = _check_plane(np.asarray(sketch), "sketch")
    if not np.issubdtype(sketch.dtype, np.floating):
        raise TypeError(f"sketch in tensor layout must be float, got dtype {sketch.dtype}")
    return np.rint((np.clip(sketch.astype(np.float64), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


# ------------------------------------------------------------------------------------ edit time


def compose_edit_sketch(
    image: np.ndarray,
    mask: np.ndarray,
    strokes: np.ndarray,
    original_sketch: Optional[np.ndarray] = None,
    **xdog_kwargs,
) -> np.ndarray:
    """The condition sketch at edit time: XDoG of the original outside the mask, strokes inside.

    Args:
        image: the original, (H, W, 3) / (H, W, 1) / (H, W), uint8 or float in [0, 1].
        mask: (H, W) or (H, W, 1), bool or numbers in [0, 1]; >= 0.5 = region to edit
            (for 0/255 mask images pass `mask > 127`).
        strokes: uint8 (H, W) or (H, W, 1) in the sketch convention: the user's dark lines (0)
            on white (255). Only the part inside the mask is used.
        original_sketch: uint8 (H, W) sketch of `image` to use outside the mask instead of
            computing `xdog(image, **xdog_kwargs)`, e.g. a ToyFaces sketch (made from the
            supersampled drawing) so edit-time and training sketches match.

    Returns:
        uint8 (H, W): `strokes` where mask, the original's sketch elsewhere.
    """
    _check_image(image)
    mask = _check_plane(mask, "mask")
    strokes = _check_plane(strokes, "strokes")
    h, w = image.shape[:2]
    if mask.shape != (h, w) or strokes.shape != (h, w):
        raise ValueError(
            f"image, mask and strokes must have the same height and width: image {image.shape}, "
            f"mask {mask.shape}, strokes {strokes.shape}"
        )
    if strokes.dtype != np.uint8:
        raise TypeError(f"strokes must be uint8 (dark lines on white), got dtype {strokes.dtype}")
    if mask.dtype != np.bool_:
        if not np.issubdtype(mask.dtype, np.number):
            raise TypeError(f"mask must be bool or numeric, got dtype {mask.dtype}")
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise ValueError(f"mask values must be in [0, 1] (1 = edit), got [{mask.min()}, {mask.max()}]; "
                             "for a 0/255 mask image pass mask > 127")
        mask = mask >= 0.5
    if original_sketch is None:
        original_sketch = xdog(image, **xdog_kwargs)
    else:
        if xdog_kwargs:
            raise ValueError(f"xdog arguments {sorted(xdog_kwargs)} are unused when original_sketch is given")
        original_sketch = _check_plane(original_sketch, "original_sketch")
        if original_sketch.shape != (h, w) or original_sketch.dtype != np.uint8:
            raise ValueError(
                f"original_sketch must be uint8 {(h, w)}, got {original_sketch.dtype} {original_sketch.shape}"
            )
    return np.where(mask, strokes, original_sketch).astype(np.uint8)
