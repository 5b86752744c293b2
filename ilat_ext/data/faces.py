"""Face datasets for sketch-guided editing: FFHQ and CelebA-HQ images with sketches and masks.

iLAT (Cao et al., "The Image Local Autoregressive Transformer", NeurIPS 2021, Sec. 4) trains its
face models on FFHQ and CelebA-HQ at 256 px: the TS-VQGAN on images (then images + masks), the
sketch VQGAN on XDoG sketches, the transformer on all three. `FaceDataset` serves any of these
from one of two layouts:

  * image files: a folder (`root`, recursive; e.g. FFHQ's images1024x1024) and/or a file list in
    the release's flist format (`flist`: one path per line, relative to `root` if given, else to
    the list's folder);
  * taming's CelebA-HQ `.npy` files (`npy_root` and/or `npy_flist`, e.g. data/celebahq and
    data/celebahqtrain.txt): one uint8 array of shape (1, 3, H, W) per image, which taming reads
    as `np.load(path).squeeze(0).transpose(1, 2, 0)`.

Every image is centre-cropped to a square and resized to `size` (INTER_AREA when shrinking).
Sketches are the release's (`ilat_ext.data.sketch.release_sketch`: XDoG on the source-resolution
crop, then resized), computed on the fly (`sketch="xdog"`) or read from a folder written by
scripts/generate_xdog_sketch.py (`sketch=<folder>`, matched by relative path, then by stem) or
from a list aligned line by line with the images (`sketch_flist`). Which images lack a sketch is
checked when the dataset is built, so a mismatch fails before training starts.

Items (taming's layout)::

    image  float32 (size, size, 3) in [-1, 1]
    sketch float32 (size, size, 1) in [-1, 1], +1 paper, -1 ink       (when `sketch` is set)
    mask   float32 (size, size, 1) in {0, 1}, 1 = region to edit        (when `mask_source` is set)
    path   str, the image file;  index  int, the item actually returned

Masks come from `ilat_ext.data.mask_sources.MaskSource` and are, as in `MaskedDataset`, a function
of (index, seed): `mask_source.sample(index, size, size, stream=seed)`. The horizontal flip uses
torch's RNG (so Lightning's `seed_everything` and the per-worker seeds make it reproducible, and
it changes from epoch to epoch) and flips image, sketch and mask together.

An image or sketch file that cannot be read is skipped: the next readable item is returned, the
file is counted in `skipped` (per process) and a warning gives the running count.

Train/validation split: the release splits by file lists; `write_split_flists` writes them.

YAML::

    train:
      target: ilat_ext.data.faces.FaceDataset
      params: {flist: data/ffhq_train.flist, size: 256, sketch: xdog, flip: true}
"""
import os
import warnings
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch

from ilat_ext.data.checks import check_item_index, check_seed
from ilat_ext.data.folder import find_images, read_flist
from ilat_ext.data.image_files import IMAGE_EXTENSIONS, decode_image, resize_square
from ilat_ext.data.mask_sources import build_mask_source
from ilat_ext.data.sketch import release_sketch, sketch_to_tensor_layout

PathLike = Union[str, "os.PathLike[str]"]
SKETCH_XDOG = "xdog"


# --------------------------------------------------------------------------------------- helpers


def _rel_key(path: str, base: str) -> Optional[str]:
    """`path` relative to `base`, without extension, '/'-separated; None if outside `base`."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return os.path.splitext(rel)[0].replace(os.sep, "/")


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _first(paths: List[str], n: int = 3) -> str:
    return ", ".join(repr(p) for p in paths[:n]) + (", ..." if len(paths) > n else "")


def match_sketches(image_paths: List[str], image_base: str, sketch_dir: str) -> List[str]:
    """The sketch under `sketch_dir` for each image: same path relative to `image_base` (any
    image extension), else the only sketch with the same stem.

    Raises:
        ValueError naming the count and the first few images without a sketch.
    """
    sketches = find_images(sketch_dir, "sketch folder")
    by_rel = {_rel_key(p, sketch_dir): p for p in sketches}
    by_stem: Dict[str, List[str]] = {}
    for p in sketches:
        by_stem.setdefault(_stem(p), []).append(p)
    matched, missing = [], []
    for image in image_paths:
        key = _rel_key(image, image_base)
        sketch = by_rel.get(key) if key is not None else None
        if sketch is None and len(by_stem.get(_stem(image), ())) == 1:
            sketch = by_stem[_stem(image)][0]
        if sketch is None:
            missing.append(image)
        matched.append(sketch)
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(image_paths)} images have no sketch in {sketch_dir!r} (matched by path "
            f"relative to {image_base!r}, then by unique file stem): {_first(missing)}; "
            "run scripts/generate_xdog_sketch.py over the image folder, or use sketch: xdog"
        )
    return matched


def load_npy_image(path: str) -> Optional[np.ndarray]:
    """uint8 (H, W, 3) RGB from taming's CelebA-HQ `.npy` layout ((1, 3, H, W) or (3, H, W) uint8);
    None if the file cannot be read or holds something else."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3 or array.dtype != np.uint8 or min(array.shape[1:]) < 1:
        return None
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def _check_size(size) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    return int(size)


# ---------------------------------------------------------------------------------- FaceDataset


class FaceDataset(torch.utils.data.Dataset):
    """FFHQ / CelebA-HQ images with optional sketches and masks (see the module docstring).

    Args:
        root: image folder (recursive), or the base of `flist`'s relative paths.
        flist: release-style list of image paths.
        npy_root, npy_flist: the same for taming's CelebA-HQ `.npy` files (instead of root/flist).
        size: side of the square items (the paper: 256).
        sketch: None (no sketch), "xdog" (release XDoG on the fly) or a folder of precomputed
            sketches (scripts/generate_xdog_sketch.py), matched by relative path, then by stem.
        sketch_flist: list of sketch paths aligned line by line with the images (instead of
            `sketch`); relative paths are resolved against the list's folder.
        mask_source: None (no "mask" key), a MaskSource, its params, or a `target:` config.
        flip: random horizontal flip of image, sketch and mask together (torch RNG).
        seed: mask stream, as `MaskedDataset.seed`.

    Raises:
        ValueError / FileNotFoundError at construction for a bad layout, an empty list, or
        images without a sketch (naming the count and the first few).
    """

    def __init__(
        self,
        root: Optional[PathLike] = None,
        flist: Optional[PathLike] = None,
        npy_root: Optional[PathLike] = None,
        npy_flist: Optional[PathLike] = None,
        size: int = 256,
        sketch: Optional[PathLike] = None,
        sketch_flist: Optional[PathLike] = None,
        mask_source=None,
        flip: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        root, flist, npy_root, npy_flist = (None if p is None else os.fspath(p)
                                            for p in (root, flist, npy_root, npy_flist))
        images_given, npy_given = root is not None or flist is not None, npy_root is not None or npy_flist is not None
        if images_given == npy_given:
            raise ValueError("give image files (root= and/or flist=) or taming's .npy files (npy_root= and/or "
                             f"npy_flist=), exactly one of the two; got root={root!r}, flist={flist!r}, "
                             f"npy_root={npy_root!r}, npy_flist={npy_flist!r}")
        self.npy = npy_given
        if self.npy:
            list_path, base = npy_flist, npy_root
            self.paths = (read_flist(npy_flist, "npy file list (npy_flist)", base=npy_root) if npy_flist is not None
                          else find_images(npy_root, "npy folder (npy_root)", (".npy",)))
        else:
            list_path, base = flist, root
            self.paths = (read_flist(flist, "image list (flist)", base=root) if flist is not None
                          else find_images(root, "image folder (root)", IMAGE_EXTENSIONS))
        self.base = base if base is not None else os.path.dirname(os.path.abspath(list_path))
        self.size = _check_size(size)
        if not isinstance(flip, bool):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        self.flip = flip
        self.seed = check_seed("seed", seed)

        self.sketch = None if sketch is None else os.fspath(sketch)
        self.sketch_flist = None if sketch_flist is None else os.fspath(sketch_flist)
        self.sketch_paths: Optional[List[str]] = None
        if self.sketch is not None and self.sketch_flist is not None:
            raise ValueError("give sketch= (\"xdog\" or a folder) or sketch_flist=, not both")
        if self.sketch_flist is not None:
            self.sketch_paths = self._aligned_sketches(self.sketch_flist)
        elif self.sketch is not None and self.sketch != SKETCH_XDOG:
            if not os.path.isdir(self.sketch):
                raise FileNotFoundError(f"sketch must be {SKETCH_XDOG!r} or a folder of sketches; "
                                        f"folder not found: {self.sketch!r}")
            self.sketch_paths = match_sketches(self.paths, self.base, self.sketch)
        self.with_sketch = self.sketch is not None or self.sketch_flist is not None

        self.mask_source = None if mask_source is None else build_mask_source(mask_source)
        self.skipped = 0  # unreadable files met so far in this process
        self.unreadable: List[str] = []

    def _aligned_sketches(self, sketch_flist: str) -> List[str]:
        sketches = read_flist(sketch_flist, "sketch list (sketch_flist)")
        if len(sketches) != len(self.paths):
            longer, n = (sketches, len(self.paths)) if len(sketches) > len(self.paths) else (self.paths, len(sketches))
            raise ValueError(
                f"sketch_flist {sketch_flist!r} lists {len(sketches)} sketches but there are {len(self.paths)} images; "
                f"the lists must align line by line. First unmatched: {_first(longer[n:])}"
            )
        missing = [p for p in sketches if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"{len(missing)} of {len(sketches)} sketches in {sketch_flist!r} do not exist: "
                             f"{_first(missing)}")
        return sketches

    def __len__(self) -> int:
        return len(self.paths)

    # ------------------------------------------------------------------------------- reading

    def _read_image(self, path: str) -> Optional[np.ndarray]:
        """Full-resolution uint8 (H, W, 3) RGB, or None."""
        if self.npy:
            return load_npy_image(path)
        image = decode_image(path, cv2.IMREAD_COLOR)
        return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def _read(self, index: int) -> Tuple[Optional[Tuple[np.ndarray, Optional[np.ndarray]]], str]:
        """((image, sketch) uint8 at `size`, "") or (None, the unreadable file)."""
        path = self.paths[index]
        full = self._read_image(path)
        if full is None:
            return None, path
        image = resize_square(full, self.size)
        sketch = None
        if self.sketch_paths is not None:
            raw = decode_image(self.sketch_paths[index], cv2.IMREAD_GRAYSCALE)
            if raw is None:
                return None, self.sketch_paths[index]
            sketch = resize_square(raw, self.size)
        elif self.sketch == SKETCH_XDOG:
            sketch = release_sketch(full, self.size)
        return (image, sketch), ""

    def __getitem__(self, index: int) -> dict:
        n = len(self.paths)
        index = check_item_index(index, n, "FaceDataset")
        for offset in range(n):
            j = (index + offset) % n
            read, bad = self._read(j)
            if read is not None:
                break
            self.skipped += 1
            self.unreadable.append(bad)
            warnings.warn(f"FaceDataset: skipped unreadable file {bad!r} ({self.skipped} skipped so far "
                          "in this process)", RuntimeWarning, stacklevel=2)
        else:
            raise RuntimeError(f"FaceDataset: none of the {n} items could be read (first: {self.paths[0]!r})")
        image, sketch = read
        mask = None if self.mask_source is None else self.mask_source.sample(j, self.size, self.size, stream=self.seed)
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image[:, ::-1]
            sketch = None if sketch is None else sketch[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        item = {"image": np.ascontiguousarray(image).astype(np.float32) / np.float32(127.5) - np.float32(1.0),
                "path": self.paths[j], "index": j}
        if sketch is not None:
            item["sketch"] = sketch_to_tensor_layout(np.ascontiguousarray(sketch))
        if mask is not None:
            item["mask"] = np.ascontiguousarray(mask[:, :, None], dtype=np.float32)
        return item

    def __repr__(self) -> str:
        layout = "npy" if self.npy else "images"
        sketch = self.sketch_flist or self.sketch
        return (f"{type(self).__name__}({len(self)} {layout} under {self.base!r}, size={self.size}, sketch={sketch!r}, "
                f"mask_source={self.mask_source!r}, flip={self.flip}, seed={self.seed})")


# ---------------------------------------------------------------------------------------- splits


def write_split_flists(
    root: PathLike,
    out_dir: PathLike,
    n_val: int,
    seed: int = 0,
    shuffle: bool = True,
    prefix: str = "",
    extensions: Tuple[str, ...] = IMAGE_EXTENSIONS,
) -> Tuple[str, str]:
    """Split the images under `root` (recursive) into `{prefix}train.flist` and `{prefix}val.flist`
    in `out_dir` (release format: one path per line, relative to the list, sorted).

    With `shuffle` the validation images are a seeded random sample; without it they are the last
    `n_val` in sorted order (taming's FFHQ split: 00000-59999 train, 60000-69999 validation).
    Returns the two list paths.
    """
    root, out_dir = os.fspath(root), os.fspath(out_dir)
    paths = find_images(root, "image folder (root)", tuple(extensions))
    if not isinstance(n_val, (int, np.integer)) or isinstance(n_val, bool) or not 0 < n_val < len(paths):
        raise ValueError(f"n_val must be an integer in [1, {len(paths) - 1}] for the {len(paths)} images "
                         f"under {root!r}, got {n_val!r}")
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(paths))
        val_ids = set(order[:n_val].tolist())
    else:
        val_ids = set(range(len(paths) - n_val, len(paths)))
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, wanted in (("train", False), ("val", True)):
        lines = sorted(os.path.relpath(os.path.abspath(p), os.path.abspath(out_dir)).replace(os.sep, "/")
                       for i, p in enumerate(paths) if (i in val_ids) == wanted)
        list_path = os.path.join(out_dir, f"{prefix}{name}.flist")
        with open(list_path + ".part", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(list_path + ".part", list_path)
        written.append(list_path)
    return written[0], written[1]
