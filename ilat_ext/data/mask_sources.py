"""Masks for masked training: a mask source (free-form strokes and mask image files) and a wrapper
that adds a mask to the items of any taming-style dataset.

iLAT (Cao et al., NeurIPS 2021) trains its TS-VQGAN and transformer on downloaded masks: irregular
masks and COCO segmentation masks, picked 50/50, with 70% partial and 30% full masks. The release
has no mask generator. `MaskSource` keeps the mode mix and replaces one of the two downloaded
sets by the free-form generator of `ilat_ext.data.mask_shapes` (DeepFill v2 style strokes), so
training runs without downloads; give it mask files to mix those in with probability `file_ratio`.

Mask files: a folder (searched recursively for images) and/or a file list in the release's
`flist` format (one path per line, blank lines and lines starting with '#' ignored, relative
paths resolved against the list's folder). A file mask is read as grayscale, resized to the
target size with nearest neighbour (aspect ratio not kept), binarised with > 127 (white = region
to edit; `invert=True` for files where black marks the hole), then flipped left-right and
up-down with probability 1/2 each. A file that cannot be read is skipped, not fatal: another file
is drawn (up to `max_file_attempts`, then a free-form mask is used), the path is remembered in
`unreadable` and a warning gives the running count (`skipped`). Counts are per process: each
DataLoader worker keeps its own. Several sets of mask files (`mask_sets`, each with its own
weight and `invert`) mix as the release mixes its irregular and segmentation masks.
`write_free_form_masks` (scripts/generate_masks.py) writes generated masks as files.

Determinism: the mask for index i is a function of (seed, stream, i, height, width) and the set
of unreadable files, through `np.random.default_rng([_STREAM_TAG, seed, stream, i])`; nothing
depends on call order, processes or workers.

YAML (taming's `target:`/`params:`; `mask_source` may be MaskSource params, a `target:` config
or a MaskSource)::

    train:
      target: ilat_ext.data.mask_sources.MaskedDataset
      params:
        dataset:
          target: ilat_ext.data.toy.ToyFaces
          params: {size: 64, mask: false}
        mask_source:
          free_form_area: [0.05, 0.3]
          mode_probs: {partial: 0.7, full: 0.3}
          mask_list: data/irregular_masks.flist
          file_ratio: 0.5

The release's mix, two downloaded sets 50/50 and no free-form strokes::

        mask_source:
          mode_probs: {partial: 0.7, full: 0.3}
          file_ratio: 1.0
          mask_sets:
            - {mask_list: data/irregular_masks.flist, weight: 0.5}
            - {mask_list: data/segmentation_masks.flist, weight: 0.5}

Worked example::

    >>> src = MaskSource(mode_probs={"partial": 1.0}, seed=3)
    >>> m = src.sample(0, 32, 48)
    >>> m.shape, m.dtype, bool(0.05 <= m.mean() <= 0.3), np.array_equal(m, src.sample(0, 32, 48))
    ((32, 48), dtype('float32'), True, True)
"""
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ilat_ext.data.checks import check_item_index, check_probability, check_seed
from ilat_ext.data.folder import find_images, read_flist
from ilat_ext.data.image_files import write_image_atomic
from ilat_ext.data.mask_shapes import DEFAULT_AREA_RANGE, DEFAULT_MODE_PROBS, box_mask, free_form_mask, sample_mask_mode
from ilat_ext.data.mask_shapes import validate_area_range, validate_mode_probs
from ilat_ext.util import check_mapping_keys, instantiate_from_config

PathLike = Union[str, "os.PathLike[str]"]
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Arbitrary constants that keep these streams apart from other seeded generators in the project.
_STREAM_TAG = 0x3A5C
_FILE_TAG = 0x3A5D  # write_free_form_masks
MASK_SET_KEYS = ("mask_files", "mask_list", "weight", "invert", "name")


# --------------------------------------------------------------------------------------- helpers


def list_mask_files(mask_files: Optional[PathLike] = None, mask_list: Optional[PathLike] = None) -> List[str]:
    """Paths of the mask images in a folder (recursive, sorted) followed by those in a file list.

    Raises:
        FileNotFoundError if the folder or list does not exist; ValueError if one of them holds
        no mask images; both name the path.
    """
    paths: List[str] = []
    if mask_files is not None:
        paths.extend(find_images(mask_files, "mask folder (mask_files)", MASK_EXTENSIONS))
    if mask_list is not None:
        paths.extend(read_flist(mask_list, "mask list (mask_list)"))
    return paths


def read_mask_file(path: str, height: int, width: int, invert: bool = False) -> Optional[np.ndarray]:
    """(height, width) float32 {0, 1} mask from an image file; None if it cannot be read.

    Grayscale, nearest-neighbour resize, then > 127 = 1 (<= 127 = 1 with `invert`).
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: no surprises with non-ASCII paths
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    except (OSError, ValueError, cv2.error):
        return None
    if image is None or image.size == 0:
        return None
    image = cv2.resize(image, (int(width), int(height)), interpolation=cv2.INTER_NEAREST)
    mask = image <= 127 if invert else image > 127
    return mask.astype(np.float32)


@dataclass(frozen=True)
class MaskSet:
    """One set of mask files (e.g. the irregular masks, or the segmentation masks) and its share."""

    name: str
    paths: Tuple[str, ...]
    weight: float = 1.0
    invert: bool = False


def build_mask_set(spec: Mapping, position: int = 0) -> MaskSet:
    """A `MaskSet` from `{mask_files: folder, mask_list: flist, weight: 1.0, invert: false, name: ...}`
    (at least one of mask_files / mask_list; unknown keys are rejected)."""
    if isinstance(spec, MaskSet):
        return spec
    check_mapping_keys(f"mask_sets[{position}]", spec, MASK_SET_KEYS)
    if spec.get("mask_files") is None and spec.get("mask_list") is None:
        raise ValueError(f"mask_sets[{position}] needs mask_files (a folder) or mask_list (an flist), "
                         f"got {dict(spec)!r}")
    try:
        weight = float(spec.get("weight", 1.0))
    except (TypeError, ValueError):
        raise ValueError(f"mask_sets[{position}].weight must be a positive number, "
                         f"got {spec.get('weight')!r}") from None
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"mask_sets[{position}].weight must be a positive number, got {spec.get('weight')!r}")
    invert = spec.get("invert", False)
    if not isinstance(invert, bool):
        raise ValueError(f"mask_sets[{position}].invert must be True or False, got {invert!r}")
    paths = list_mask_files(spec.get("mask_files"), spec.get("mask_list"))
    name = spec.get("name") or os.fspath(spec.get("mask_files") or spec.get("mask_list"))
    return MaskSet(name=str(name), paths=tuple(paths), weight=weight, invert=invert)


# ------------------------------------------------------------------------------------ MaskSource


class MaskSource:
    """Random (H, W) float32 {0, 1} masks (1 = region to edit), deterministic per index.

    Args:
        free_form_area: (low, high) masked fraction of free-form partial masks.
        mode_probs: {"partial": p, "empty": q, "full": r}; None means the release's mix
            {"partial": 0.7, "empty": 0.0, "full": 0.3}.
        mask_files: a folder of mask images (searched recursively).
        mask_list: a file list in the release's flist format.
        file_ratio: probability that a partial mask comes from a file rather than the free-form
            generator, when files are given.
        seed: non-negative integer; with the stream and index it fixes each mask.
        invert: file masks mark the region to edit in black instead of white.
        max_file_attempts: files tried for one mask before falling back to a free-form mask.
        box_ratio: probability that a generated partial mask is a box (`box_mask`, area in
            `free_form_area`) instead of brush strokes; 0 (the default) draws exactly the masks
            of a source without the option.
        mask_sets: several mask file sets, each `{mask_files, mask_list, weight, invert, name}`
            (see `build_mask_set`). A partial mask from files first picks a set with probability
            proportional to `weight` (default 1: equal shares), then a file of that set. The
            release's mix is two sets, irregular and segmentation masks, 50/50, with
            `file_ratio=1`. `mask_files`/`mask_list`/`invert` are shorthand for one set, so they
            cannot be combined with `mask_sets`.
    """

    def __init__(
        self,
        free_form_area: Tuple[float, float] = DEFAULT_AREA_RANGE,
        mode_probs: Optional[Mapping[str, float]] = None,
        mask_files: Optional[PathLike] = None,
        mask_list: Optional[PathLike] = None,
        file_ratio: float = 0.5,
        seed: int = 0,
        invert: bool = False,
        max_file_attempts: int = 8,
        mask_sets: Optional[Sequence[Mapping]] = None,
        box_ratio: float = 0.0,
    ):
        self.free_form_area = validate_area_range(free_form_area)
        self.box_ratio = check_probability("box_ratio", box_ratio)
        self.mode_probs = validate_mode_probs(DEFAULT_MODE_PROBS if mode_probs is None else mode_probs)
        self.file_ratio = check_probability("file_ratio", file_ratio)
        self.seed = check_seed("seed", seed)
        if not isinstance(invert, bool):
            raise ValueError(f"invert must be True or False, got {invert!r}")
        self.invert = invert
        if not isinstance(max_file_attempts, (int, np.integer)) or max_file_attempts < 1:
            raise ValueError(f"max_file_attempts must be a positive integer, got {max_file_attempts!r}")
        self.max_file_attempts = int(max_file_attempts)
        self.mask_files = None if mask_files is None else os.fspath(mask_files)
        self.mask_list = None if mask_list is None else os.fspath(mask_list)
        if mask_sets is not None:
            if self.mask_files is not None or self.mask_list is not None or invert:
                raise ValueError("give mask files either as mask_files/mask_list/invert (one set) or as "
                                 "mask_sets (each with its own invert), not both")
            if isinstance(mask_sets, (str, bytes, Mapping)) or not isinstance(mask_sets, Sequence):
                raise ValueError(f"mask_sets must be a list of mappings, got {mask_sets!r}")
            self.mask_sets = [build_mask_set(spec, i) for i, spec in enumerate(mask_sets)]
        elif self.mask_files is not None or self.mask_list is not None:
            self.mask_sets = [MaskSet(name=self.mask_files or self.mask_list,
                                      paths=tuple(list_mask_files(self.mask_files, self.mask_list)),
                                      invert=invert)]
        else:
            self.mask_sets = []
        self.paths = [p for mask_set in self.mask_sets for p in mask_set.paths]
        total_weight = sum(m.weight for m in self.mask_sets)
        self.set_probs = [m.weight / total_weight for m in self.mask_sets]
        self.unreadable: List[str] = []  # in the order found, in this process
        self._unreadable_set = set()

    @property
    def skipped(self) -> int:
        """Number of distinct unreadable mask files met so far in this process."""
        return len(self.unreadable)

    def rng(self, index: int, stream: int = 0) -> np.random.Generator:
        """The generator behind `sample(index, ..., stream=stream)`."""
        key = [_STREAM_TAG, self.seed, check_seed("stream", stream), check_seed("index", index)]
        return np.random.default_rng(key)

    def sample(self, index: int, height: int, width: int, stream: int = 0) -> np.ndarray:
        """The (height, width) float32 {0, 1} mask number `index` of stream `stream`."""
        return self.draw(self.rng(index, stream), height, width)[0]

    def draw(self, rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, str]:
        """A mask from `rng` and where it came from: "empty", "full", "free_form", "box" or a file path."""
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        mode = sample_mask_mode(rng, self.mode_probs)
        if mode == "empty":
            return np.zeros((height, width), np.float32), "empty"
        if mode == "full":
            return np.ones((height, width), np.float32), "full"
        if self.paths and rng.random() < self.file_ratio:
            mask_set = self._pick_set(rng)
            for _ in range(self.max_file_attempts):
                path = mask_set.paths[int(rng.integers(len(mask_set.paths)))]
                if path in self._unreadable_set:
                    continue
                mask = read_mask_file(path, height, width, mask_set.invert)
                if mask is None:
                    self._skip(path)
                    continue
                if rng.random() < 0.5:
                    mask = mask[:, ::-1]
                if rng.random() < 0.5:
                    mask = mask[::-1, :]
                return np.ascontiguousarray(mask), path
        if self.box_ratio > 0 and rng.random() < self.box_ratio:
            return box_mask(height, width, rng, area_range=self.free_form_area), "box"
        return free_form_mask(height, width, rng, area_range=self.free_form_area), "free_form"

    def _pick_set(self, rng: np.random.Generator) -> MaskSet:
        # One set draws nothing, so a single set gives the same masks as before mask_sets existed.
        if len(self.mask_sets) == 1:
            return self.mask_sets[0]
        u, cumulative = rng.random(), 0.0
        for mask_set, p in zip(self.mask_sets, self.set_probs):
            cumulative += p
            if u < cumulative:
                return mask_set
        return self.mask_sets[-1]  # u in the rounding slack above the last sum

    def _skip(self, path: str) -> None:
        self._unreadable_set.add(path)
        self.unreadable.append(path)
        warnings.warn(
            f"MaskSource: skipped unreadable mask file {path!r} ({self.skipped} of {len(self.paths)} "
            "mask files unreadable so far in this process)",
            RuntimeWarning,
            stacklevel=3,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(free_form_area={self.free_form_area}, mode_probs={self.mode_probs}, "
            f"mask_files={self.mask_files!r}, mask_list={self.mask_list!r}, file_ratio={self.file_ratio}, "
            f"seed={self.seed}, invert={self.invert}, box_ratio={self.box_ratio}; {len(self.paths)} files"
            + "".join(f"; set {m.name!r}: {len(m.paths)} files, p={p:.3g}, invert={m.invert}"
                      for m, p in zip(self.mask_sets, self.set_probs))
            + ")"
        )


# ------------------------------------------------------------------------------ mask files out


def write_free_form_masks(
    output_dir: PathLike,
    count: int,
    size: int = 256,
    area_range: Tuple[float, float] = DEFAULT_AREA_RANGE,
    seed: int = 0,
    progress: bool = True,
    list_name: str = "masks.flist",
) -> str:
    """Write `count` free-form masks as (size, size) png files 00000.png, 00001.png, ... (white,
    255 = region to edit; black, 0 = keep) and a file list of them in the release's format (one
    path per line, relative to the list). Returns the list's path.

    Mask i is `free_form_mask(size, size, np.random.default_rng([_FILE_TAG, seed, i]), area_range)`,
    so the same seed writes the same files and a larger count only appends. Writes are atomic.
    """
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    area_range = validate_area_range(area_range)
    seed = check_seed("seed", seed)
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    digits = max(5, len(str(count - 1)))
    names = []
    for i in tqdm(range(count), desc="masks", unit="mask", disable=not progress):
        mask = free_form_mask(size, size, np.random.default_rng([_FILE_TAG, seed, i]), area_range=area_range)
        name = f"{i:0{digits}d}.png"
        write_image_atomic(os.path.join(output_dir, name), (mask * 255).astype(np.uint8))
        names.append(name)
    list_path = os.path.join(output_dir, list_name)
    tmp = list_path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")
    os.replace(tmp, list_path)
    return list_path


# --------------------------------------------------------------------------------- MaskedDataset


def build_mask_source(mask_source) -> MaskSource:
    """A mask source from a MaskSource (returned as is), its params as a mapping, a `target:` config,
    or any object with `sample(index, height, width, stream=...)`; anything else -> TypeError."""
    if isinstance(mask_source, MaskSource):
        return mask_source
    if isinstance(mask_source, Mapping):
        if "target" in mask_source:
            built = instantiate_from_config(mask_source)
        else:
            built = MaskSource(**dict(mask_source))
        if not hasattr(built, "sample"):
            raise TypeError(f"mask_source config built a {type(built).__name__}, which has no sample()")
        return built
    if mask_source is not None and hasattr(mask_source, "sample"):
        return mask_source  # duck-typed source
    raise TypeError(
        f"mask_source must be a MaskSource, its params as a mapping, or a target/params config, got {mask_source!r}"
    )


class MaskedDataset(torch.utils.data.Dataset):
    """Adds a mask to the items of a taming-style dataset.

    Items of `dataset` must be dicts with an (H, W, C) image under `image_key` (taming's float
    [-1, 1] layout; only its height and width are used). Each item gains
    `mask_key`: float32 (H, W, 1) in {0, 1}, 1 = region to edit, equal to
    `mask_source.sample(index, H, W, stream=seed)`: a function of the index, so the same item
    always gets the same mask, in any order and in any worker.

    Args:
        dataset: a dataset, or a `target:`/`params:` config to instantiate one.
        mask_source: a MaskSource, a mapping of MaskSource params, or a `target:` config.
        image_key, mask_key: item keys to read the size from and to write the mask to.
        seed: stream of the mask source to draw from; different seeds over the same source give
            different masks.

    Raises (when an item is read) KeyError if the item lacks `image_key` or already has
    `mask_key` (e.g. a ToyFaces with mask=True: build it with mask=False).
    """

    def __init__(
        self, dataset, mask_source=None, image_key: str = "image", mask_key: str = "mask", seed: int = 0
    ):
        super().__init__()
        if isinstance(dataset, Mapping):
            dataset = instantiate_from_config(dataset)
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        self.dataset = dataset
        self.mask_source = build_mask_source(MaskSource() if mask_source is None else mask_source)
        for name, key in (("image_key", image_key), ("mask_key", mask_key)):
            if not isinstance(key, str) or not key:
                raise ValueError(f"{name} must be a non-empty string, got {key!r}")
        if image_key == mask_key:
            raise ValueError(f"image_key and mask_key must differ, both are {image_key!r}")
        self.image_key, self.mask_key = image_key, mask_key
        self.seed = check_seed("seed", seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = check_item_index(index, len(self), "MaskedDataset")
        item = self.dataset[index]
        if not isinstance(item, Mapping):
            raise TypeError(f"items must be dicts, item {index} is {type(item).__name__}")
        if self.image_key not in item:
            raise KeyError(f"item {index} has no {self.image_key!r} (keys: {sorted(item)}); set image_key")
        if self.mask_key in item:
            raise KeyError(
                f"item {index} already has {self.mask_key!r}; build the inner dataset without masks "
                "(e.g. ToyFaces(mask=False)) or choose another mask_key"
            )
        shape = tuple(item[self.image_key].shape)
        if len(shape) != 3:
            raise ValueError(f"item {index}[{self.image_key!r}] must be (H, W, C), got shape {shape}")
        mask = self.mask_source.sample(index, shape[0], shape[1], stream=self.seed)
        item = dict(item)
        item[self.mask_key] = mask[:, :, None].astype(np.float32, copy=False)
        return item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dataset={self.dataset!r}, mask_source={self.mask_source!r}, "
            f"image_key={self.image_key!r}, mask_key={self.mask_key!r}, seed={self.seed})"
        )
