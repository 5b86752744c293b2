"""Real photos in, full resolution out: the input/output layer of every editing entry point.

`ilat-edit-face`, `ilat-compare`, `ilat-pose-guide`, the demos and the browser editor read the
user's files and write their results through this module, so that each of them takes images as
people have them and gives back the user's own image, changed only where they asked.

Reading (`read_photo`, `read_mask`, `read_strokes`):

  * formats: whatever Pillow decodes (JPEG, PNG, WebP, BMP, TIFF, ...), with OpenCV as a fallback
    for files Pillow opens but cannot convert (16-bit colour TIFFs); EXIF orientation applied;
    grayscale, 16-bit, palette and CMYK images converted to 8-bit RGB; a photo with transparent
    pixels is composited on white (and a note says so);
  * a pixel limit (`DEFAULT_MAX_PIXELS`, about 50 megapixels) checked from the file's header
    before anything is decoded: a 20000 x 20000 PNG is refused in milliseconds;
  * masks and strokes at any resolution with the photo's aspect ratio, resized to the photo;
    a mask file with transparent pixels is a paint layer and its alpha is the mask (painted =
    opaque; the colour under transparent pixels does not matter), otherwise its gray levels are
    thresholded at `threshold` (half by default); strokes are dark on light (ours) or light on
    dark (the release's demo files) detected from the background (`STROKE_POLARITIES`), or a
    transparent layer whose opaque pixels are ink.

Every problem is an `InputError` (a ValueError) whose one-line message names the file and what is
wrong with it; what the layer decided for the user (a resize, an inversion, an alpha channel
used) comes back as `notes` for the caller to print.

Regions and paste-back (`Region`, `choose_region`, `paste_edit`): the model edits a square at its
own size. `--region full` takes the photo's centred square (the whole photo when square: aligned
faces), `--region mask` a square around the mask's bounding box with a context margin (a large
photo with a small edit, seen at the model's resolution); a square reaching past the photo's edge
is filled by mirroring, and those pixels are never written back. The decoded square is resized to
the region's size with a Lanczos filter (area when shrinking) and pasted into the photo inside the
mask only, feathered over `feather` pixels inside the mask's edge: every pixel outside the mask is
the source's, bit for bit.

    >>> region = Region(top=-10, left=20, side=100)      # may reach past the photo's top edge
    >>> region.crop(np.zeros((60, 200, 3), np.uint8)).shape
    (100, 100, 3)
    >>> region.inside((60, 200))                         # (top, bottom, left, right) in the photo
    (0, 60, 20, 120)
"""
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 50_000_000
STROKE_POLARITIES = ("auto", "dark", "light")
REGIONS = ("auto", "full", "mask")
DEFAULT_MARGIN = 0.5        # --region mask: context on each side, as a fraction of the mask's box side


class InputError(ValueError):
    """A user's file that cannot be used as given; the message is one line naming the file."""


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _size_text(shape: Sequence[int]) -> str:
    return f"{shape[1]}x{shape[0]}"


# ------------------------------------------------------------------------------------- decoding


def _open(path: str, what: str, max_pixels: Optional[int]):
    """The file opened by Pillow (header only), its size checked against `max_pixels`."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{what} not found: {path!r}")
    if os.path.getsize(path) == 0:
        raise InputError(f"{what} {path!r} is an empty file (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None          # our own limit below, with a message that names the flag
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"cannot read {what} {path!r}: not an image file (formats: JPEG, PNG, WebP, BMP, TIFF)") \
            from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f"cannot read {what} {path!r}: {err}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    w, h = image.size
    if max_pixels is not None and w * h > max_pixels:
        image.close()
        raise InputError(f"{what} {path!r} is {w}x{h} ({_megapixels(w * h)}), over the limit of "
                         f"{_megapixels(max_pixels)}: pass --max_pixels {w * h} to read it anyway")
    return image


def _to_array(image, path: str, what: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(uint8 (H, W, 3) RGB, uint8 (H, W) alpha or None) of an opened Pillow image, EXIF orientation
    applied; 16-bit and float samples scaled to 8 bits."""
    from PIL import Image, ImageOps

    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        mode = image.mode
        alpha = None
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            alpha = np.asarray(rgba)[:, :, 3].copy()
            rgb = np.asarray(rgba)[:, :, :3].copy()
        elif mode.startswith("I") or mode == "F":
            values = np.asarray(image).astype(np.float64)
            top = 65535.0 if (mode.startswith("I;16") or values.max(initial=0) > 255) else 255.0
            gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            rgb = np.asarray(image.convert("RGB")).copy()
    except (OSError, ValueError, SyntaxError, TypeError, Image.DecompressionBombError) as err:
        # only TIFF: OpenCV would half-decode a truncated JPEG or PNG without a word
        fallback = _cv2_fallback(path) if image.format == "TIFF" else None
        if fallback is None:
            raise InputError(f"cannot read {what} {path!r}: the file is truncated or corrupt ({err})") from None
        return fallback
    return rgb, alpha


def _cv2_fallback(path: str) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """OpenCV's decoding of a file Pillow cannot convert (16-bit colour TIFF, say), or None."""
    from ilat_ext.data.image_files import decode_image

    image = decode_image(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2), None
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), image[:, :, 3].copy()
    return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB), None


def read_file(path: str, what: str = "image", max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
              ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(uint8 (H, W, 3) RGB, uint8 (H, W) alpha or None) of any image file; the alpha is returned
    only when some pixel is not fully opaque. Raises `InputError` naming the file."""
    image = _open(path, what, max_pixels)
    try:
        rgb, alpha = _to_array(image, os.fspath(path), what)
    finally:
        image.close()
    if alpha is not None and alpha.min() == 255:
        alpha = None
    return rgb, alpha


def image_size(path: str, what: str = "image", max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Tuple[int, int]:
    """(height, width) from the file's header (EXIF orientation 5-8 swaps them), nothing decoded:
    the commands check their inputs with it before a model loads. InputError as `read_file`."""
    image = _open(path, what, max_pixels)
    try:
        w, h = image.size
        orientation = _orientation(image)
    finally:
        image.close()
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _orientation(image) -> int:
    """The EXIF orientation (1 = as stored) without decoding: Pillow's PNG `getexif` loads the
    pixels to look for an eXIf chunk after the data, so a PNG is asked only for what its header holds."""
    from PIL import Image

    try:
        if image.format == "PNG":
            raw = image.info.get("exif")
            exif = Image.Exif()
            if raw:
                exif.load(raw)
        else:
            exif = image.getexif()
        return int(exif.get(0x0112, 1))
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1          # a damaged EXIF block: reading the pixels will say what is wrong


@dataclass
class Photo:
    """A user's image as read: uint8 (H, W, 3) RGB, and what reading it decided (`notes`)."""

    rgb: np.ndarray
    path: str
    notes: List[str] = field(default_factory=list)

    @property
    def shape(self) -> Tuple[int, int]:
        return self.rgb.shape[:2]


def read_photo(path: str, what: str = "image", max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
               min_side: int = 0) -> Photo:
    """The photo as uint8 (H, W, 3) RGB: transparent pixels composited on white (noted); a photo
    whose short side is below `min_side` (the model's size) is noted as going to be upscaled."""
    rgb, alpha = read_file(path, what, max_pixels)
    notes = []
    if alpha is not None:
        a = alpha[:, :, None].astype(np.float32) / 255.0
        rgb = np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
        notes.append(f"{what} {path!r} has transparent pixels ({(alpha < 255).mean():.1%}): composited on white")
    if min(rgb.shape[:2]) < min_side:
        notes.append(f"warning: {what} {path!r} is {_size_text(rgb.shape)}, smaller than the model's {min_side} px: "
                     "it is upscaled, so the edit is no sharper than the source")
    return Photo(rgb, os.fspath(path), notes)


# ------------------------------------------------------------------------------ masks and strokes


def check_aspect(path: str, what: str, shape: Tuple[int, int], image_shape: Tuple[int, int], image_path: str) -> None:
    """InputError unless a (h, w) file has the (H, W) image's aspect ratio (to one pixel of rounding)."""
    (h, w), (H, W) = shape, image_shape
    if abs(w * H - h * W) <= max(H, W):      # within one pixel of the exact ratio on the longer side
        return
    raise InputError(f"{what} {path!r} is {w}x{h} but image {image_path!r} is {W}x{H}: the {what} must have the "
                     f"image's aspect ratio (e.g. {W}x{H} or {W // 2}x{H // 2})")


def resize_plane(plane: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """A uint8 (h, w) plane resized to (H, W): area when shrinking, linear when enlarging (so an
    upsampled mask thresholds to smooth edges)."""
    H, W = shape
    if plane.shape == (H, W):
        return plane
    shrinking = plane.shape[0] * plane.shape[1] > H * W
    return cv2.resize(plane, (W, H), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _resized_note(what: str, path: str, shape, image_shape) -> List[str]:
    if tuple(shape) == tuple(image_shape):
        return []
    return [f"{what} {path!r}: resized from {_size_text(shape)} to the image's {_size_text(image_shape)}"]


@dataclass
class Mask:
    """bool (H, W) at the image's size, True = edit, and how it was read (`notes`)."""

    mask: np.ndarray
    notes: List[str] = field(default_factory=list)


def read_mask(path: str, image_shape: Tuple[int, int], image_path: str = "image", threshold: float = 0.5,
              max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, allow_empty: bool = False) -> Mask:
    """The user's mask at the image's (H, W): a paint layer's alpha (a file with transparent pixels:
    painted = opaque) or the gray levels, resized, then True where >= `threshold` (of full white /
    full opacity). InputError for another aspect ratio, and for a mask that covers nothing unless
    `allow_empty`; a mask that covers everything is noted."""
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"the mask threshold must be in (0, 1], got {threshold}")
    rgb, alpha = read_file(path, "mask", max_pixels)
    check_aspect(path, "mask", rgb.shape[:2], image_shape, image_path)
    notes = _resized_note("mask", path, rgb.shape[:2], image_shape)
    if alpha is not None:
        plane = alpha
        notes.append(f"mask {path!r} has transparent pixels: its alpha channel is the mask (opaque = edit)")
    else:
        plane = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return mask_from_plane(plane, image_shape, threshold, f"mask {path!r}", allow_empty, notes)


def mask_from_plane(plane: np.ndarray, image_shape: Tuple[int, int], threshold: float = 0.5, what: str = "mask",
                    allow_empty: bool = False, notes: Sequence[str] = ()) -> Mask:
    """`read_mask` on an array: a uint8 (h, w) plane (gray levels, or a paint layer's alpha) with the
    image's aspect ratio, resized to the image's (H, W), True where >= `threshold` of 255. `what`
    names the mask in messages (the browser editor's "the mask layer")."""
    mask = resize_plane(plane, image_shape) >= threshold * 255.0
    notes = list(notes)
    covered = float(mask.mean())
    if not mask.any() and not allow_empty:
        raise InputError(f"{what} covers nothing (no value >= {threshold:g} of white, its maximum is "
                         f"{int(plane.max())}/255): paint the region to edit white, or opaque on a transparent layer")
    if mask.all():
        notes.append(f"{what} covers the whole image: everything is regenerated")
    elif mask.any():
        notes.append(f"{what}: {covered:.1%} of the image to edit")
    return Mask(mask, notes)


def stroke_polarity(gray: np.ndarray) -> str:
    """"dark" (dark lines on a light background) or "light" (light lines on dark), from the
    background: the median gray level, since strokes cover a small part of a stroke file."""
    return "light" if float(np.median(gray)) < 128 else "dark"


def layer_ink(alpha: np.ndarray) -> np.ndarray:
    """uint8 (h, w) dark-on-white lines of a transparent stroke layer's uint8 (h, w) alpha: opaque = ink."""
    return 255 - alpha


@dataclass
class Strokes:
    """uint8 (H, W) at the image's size in the sketch convention (dark lines on white), and notes."""

    sketch: np.ndarray
    polarity: str
    notes: List[str] = field(default_factory=list)


def read_strokes(path: str, image_shape: Tuple[int, int], image_path: str = "image", polarity: str = "auto",
                 what: str = "strokes", max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Strokes:
    """The user's strokes (or a complete sketch, `what="sketch"`) as dark lines on white at the
    image's (H, W). A transparent layer: the opaque pixels are ink (their colour does not matter);
    else `polarity` "dark" (ours), "light" (the release's demo files, inverted: 255 - file), or
    "auto" (`stroke_polarity` of the file). The inversion comes before resizing, so a light-on-dark
    file and its inverse give identical strokes."""
    if polarity not in STROKE_POLARITIES:
        raise InputError(f"--strokes_polarity must be one of {STROKE_POLARITIES}, got {polarity!r}")
    rgb, alpha = read_file(path, what, max_pixels)
    check_aspect(path, what, rgb.shape[:2], image_shape, image_path)
    notes = _resized_note(what, path, rgb.shape[:2], image_shape)
    if alpha is not None:
        plane, found = layer_ink(alpha), "layer"
        notes.append(f"{what} {path!r} has transparent pixels: a stroke layer, opaque pixels are ink")
    else:
        plane = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found = stroke_polarity(plane) if polarity == "auto" else polarity
        how = "detected from the background" if polarity == "auto" else "as given by --strokes_polarity"
        if found == "light":
            plane = 255 - plane
            notes.append(f"{what} {path!r}: light lines on a dark background ({how}): inverted")
        else:
            notes.append(f"{what} {path!r}: dark lines on a light background ({how})")
    return Strokes(resize_plane(np.ascontiguousarray(plane), image_shape), found, notes)


# ------------------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """The square of the photo that the model edits: rows top..top+side, columns left..left+side,
    possibly reaching past the photo's edges (mirrored there by `crop`, never written back)."""

    top: int
    left: int
    side: int

    def inside(self, shape: Tuple[int, int]) -> Tuple[int, int, int, int]:
        """(top, bottom, left, right): the part of the square inside an (H, W) photo."""
        H, W = shape[:2]
        return max(0, self.top), min(H, self.top + self.side), max(0, self.left), min(W, self.left + self.side)

    def crop(self, image: np.ndarray, fill: Optional[int] = None) -> np.ndarray:
        """The (side, side[, C]) square of an (H, W[, C]) array; outside the photo mirrored, or
        `fill` (e.g. 0 for a mask, 255 for strokes)."""
        H, W = image.shape[:2]
        t, b, l, r = self.inside((H, W))
        part = image[t:b, l:r]
        pads = [(t - self.top, self.top + self.side - b), (l - self.left, self.left + self.side - r)]
        if not any(p for pair in pads for p in pair):
            return np.ascontiguousarray(part)
        pads += [(0, 0)] * (image.ndim - 2)
        if fill is not None:
            return np.pad(part, pads, mode="constant", constant_values=fill)
        return np.pad(part, pads, mode="symmetric")

    def to_model(self, image: np.ndarray, size: int, fill: Optional[int] = None) -> np.ndarray:
        """`crop` resized to (size, size) by `resize_square` (the face datasets' resize, so `full` on
        a square photo is exactly the training input)."""
        from ilat_ext.data.image_files import resize_square   # here: ilat_ext.data loads torch

        return resize_square(self.crop(image, fill), size)

    def mask_to_model(self, mask: np.ndarray, size: int) -> np.ndarray:
        """bool (size, size): a model pixel is edited when any part of it is covered by the bool
        (H, W) mask (area resize > 0 when shrinking, nearest when enlarging), so every stroke the
        user drew inside the mask lands inside the edited region."""
        square = self.crop(mask.astype(np.float32), fill=0)
        if self.side == size:
            return square > 0
        interp = cv2.INTER_AREA if self.side > size else cv2.INTER_NEAREST
        return cv2.resize(square, (size, size), interpolation=interp) > 0


def full_region(shape: Tuple[int, int]) -> Region:
    """The photo's largest centred square (the whole photo when square), the face datasets' crop."""
    H, W = shape[:2]
    side = min(H, W)
    return Region((H - side) // 2, (W - side) // 2, side)


def mask_region(mask: np.ndarray, size: int, margin: float = DEFAULT_MARGIN) -> Region:
    """A square around the bool (H, W) mask's bounding box, `margin` of its side added on each side,
    at least `size` (the model's) and at most the photo's long side, kept inside the photo where it
    fits (a square wider than the photo's short side reaches past its edges)."""
    H, W = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return full_region(mask.shape)
    t, b, l, r = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = max(b - t, r - l)
    side = int(min(max(math.ceil(box * (1 + 2 * margin)), size, box), max(H, W)))
    side = max(side, box)

    def place(lo, hi, extent):
        start = (lo + hi - side) // 2
        if side <= extent:                  # keep the square inside the photo along this axis
            start = min(max(start, 0), extent - side)
        return int(start)

    return Region(place(t, b, H), place(l, r, W), side)


def covered_outside(region: Region, mask: np.ndarray) -> int:
    """Mask pixels outside the region (which the model would not see)."""
    t, b, l, r = region.inside(mask.shape)
    return int(mask.sum() - mask[t:b, l:r].sum())


def choose_region(mode: str, mask: np.ndarray, size: int, whole_images: bool = True,
                  margin: float = DEFAULT_MARGIN) -> Tuple[Region, str]:
    """(the region, why it was chosen) for `mode` "full", "mask" or "auto".

    auto: "full" when the run was trained on whole images (`whole_images`: aligned faces, whose
    model expects a whole face) and the mask lies inside the centred square; else "mask" when the
    photo is at least twice the model's size and the mask's box with its margin is at most half the
    photo's short side (a small edit in a large photo); else "full". InputError when `full` would
    leave part of the mask outside the centred square of a non-square photo."""
    if mode not in REGIONS:
        raise InputError(f"--region must be one of {REGIONS}, got {mode!r}")
    full = full_region(mask.shape)
    outside = covered_outside(full, mask)
    if mode == "mask":
        return mask_region(mask, size, margin), "--region mask"
    if mode == "full":
        if outside:
            raise InputError(f"{outside} mask pixels lie outside the centred {full.side}x{full.side} square that "
                             f"--region full edits in this {_size_text(mask.shape)} image: use --region mask")
        return full, "--region full"
    if whole_images and not outside:
        return full, "auto: the run was trained on whole images and the mask lies in the centred square"
    small = mask_region(mask, size, margin)
    if outside or (min(mask.shape) >= 2 * size and small.side * 2 <= min(mask.shape)):
        why = "the mask reaches outside the centred square" if outside else "a small edit in a large image"
        return small, f"auto: {why}"
    return full, "auto: the mask is large for this image"


# ----------------------------------------------------------------------------------- paste-back


def feather_map(mask: np.ndarray, feather: float) -> np.ndarray:
    """float32 (H, W) blending weights: 0 outside the bool (H, W) mask, rising linearly with the
    distance to the nearest unmasked pixel to 1 at `feather` pixels inside (L2 distance transform;
    0 gives the mask itself). The weights never leave the mask."""
    if not feather >= 0:
        raise ValueError(f"feather must be a number of pixels >= 0, got {feather!r}")
    m = mask.astype(np.uint8)
    if feather == 0 or not m.any():
        return m.astype(np.float32)
    if m.all():     # no unmasked pixel: the edit everywhere (the image's border is no seam)
        return np.ones(m.shape, np.float32)
    d = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (np.clip(d / float(feather), 0.0, 1.0) * m).astype(np.float32)


def resize_to(image: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """A uint8 (h, w[, C]) decode resized to (H, W): Lanczos when enlarging, area when shrinking."""
    H, W = shape
    if image.shape[:2] == (H, W):
        return image
    interp = cv2.INTER_LANCZOS4 if H * W > image.shape[0] * image.shape[1] else cv2.INTER_AREA
    return cv2.resize(image, (W, H), interpolation=interp).reshape((H, W) + image.shape[2:])


def default_feather(source_side: int, model_side: int) -> float:
    """One model pixel in source pixels, so the seam is as soft as the model's own (0: not enlarged)."""
    return source_side / float(model_side) if source_side > model_side else 0.0


def blend_inside(original: np.ndarray, mask: np.ndarray, edited: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """`original` (H, W, 3) uint8 with `edited` (H, W, 3) blended in inside the bool (H, W) `mask`
    only, over `feather` pixels inside its edge (`feather_map`); every other pixel is the
    original's, bit for bit."""
    if original.shape != edited.shape or original.shape[:2] != mask.shape:
        raise ValueError(f"image {original.shape}, edit {edited.shape} and mask {mask.shape} differ in size")
    out = original.copy()
    w = feather_map(mask, feather)[mask][:, None]
    blended = original[mask].astype(np.float32) * (1.0 - w) + edited[mask].astype(np.float32) * w
    out[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def paste_edit(original: np.ndarray, mask: np.ndarray, edited: np.ndarray, region: Region,
               feather: Optional[float] = None) -> np.ndarray:
    """The user's photo with the edit: the (S, S, 3) `edited` square resized to the region
    (`resize_to`) and blended into `original` (H, W, 3) inside the bool (H, W) `mask` only,
    over `feather` pixels inside its edge (None: `default_feather`). Pixels outside the mask are
    the original's, bit for bit."""
    if original.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} and image {original.shape[:2]} differ in size")
    feather = default_feather(region.side, edited.shape[0]) if feather is None else feather
    big = resize_to(edited, (region.side, region.side))
    t, b, l, r = region.inside(original.shape)
    full = original.copy()
    full[t:b, l:r] = big[t - region.top:b - region.top, l - region.left:r - region.left]
    inside = np.zeros_like(mask)
    inside[t:b, l:r] = mask[t:b, l:r]
    return blend_inside(original, inside, full, feather)


def check_headers(paths: Sequence[Tuple[str, Optional[str]]], max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> None:
    """`image_size` of each given (what, path) pair (None paths skipped): missing, empty, non-image
    and oversized files are refused from their headers, before anything heavy happens."""
    for what, path in paths:
        if path is not None:
            image_size(path, what, max_pixels)
