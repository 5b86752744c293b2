"""Datasets of stored tokens: encode once with the frozen stages, train the transformer from indices.

As the seed project (transformers-for-image-synthesis) does, `scripts/quantize_dataset.py` encodes a
dataset once with the condition stage (sketch VQGAN) and the first stage (TS-VQGAN) and stores the
indices; `TokenDataset` serves them and the transformers' `shared_step` trains from them.

The TS-VQGAN's tokens depend on the mask (tokens outside the latent mask M_q never see the masked
pixels, so tokens near the mask differ between masks: the leaked ring), so each image keeps K mask
variants, each encoded with its own mask. Masks of item i (deterministic, see `mask_variants`):
variant 0 is the item's own mask (for a `MaskedDataset`, `mask_source.sample(i, H, W, stream=seed)`),
variant k >= 1 is `mask_source.sample(i, H, W, stream=seed + k)`; a dataset without a mask source
uses `MaskSource()` (the release's mode mix) with seed 0, and variant 0 comes from it too when the
item has no mask.

File: one `.npz` (written atomically: temp file + os.replace) with

    z           (n, K, L) int16/int32   first-stage indices, variant k encoded with mask k
    token_mask  (n, K, L) bool          M_q of mask k (`model.token_mask`)
    z_full      (n, L)                  indices encoded without a mask (Taming, samples)
    c           (n, N)                  condition indices (`model.encode_to_c`)
    index       (n,) int64              the item's index in the source dataset
    meta        () str                  JSON: format, version, count, skipped, masks_per_image,
                                        latent_shape, latent_length, cond_length, image_size,
                                        split, stages (`model.token_meta()`: codebook sizes,
                                        fingerprints), the stage and dataset configs

Worked example::

    >>> ds = TokenDataset("data/toy_tokens_train.npz", variant="random")   # doctest: +SKIP
    >>> item = ds[0]                                                       # doctest: +SKIP
    >>> item["z_indices"].shape, item["token_mask"].dtype, item["c_indices"].shape  # doctest: +SKIP
    ((256,), dtype('bool'), (256,))
"""
import json
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ilat_ext.data.checks import check_item_index

TOKEN_FORMAT = "ilat_ext.tokens"
TOKEN_VERSION = 1
ARRAY_KEYS = ("z", "token_mask", "z_full", "c", "index")
PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------- files


def index_dtype(n_codes: Optional[int]) -> np.dtype:
    """The smallest stored dtype for indices below n_codes (int16 up to 32767 codes)."""
    return np.dtype(np.int16) if n_codes is not None and n_codes <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def _write_npz(f, arrays: Mapping[str, np.ndarray]) -> None:
    np.savez(f, **arrays)


def write_token_file(path: PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """Write `arrays` (ARRAY_KEYS) and `meta` to the .npz `path` atomically: a temp file in the same
    folder, fsync, then os.replace; on any error the temp file is removed and `path` is untouched.
    Returns the path written."""
    path = os.fspath(path)
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise KeyError(f"token arrays lack {missing}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    meta = dict(meta, format=TOKEN_FORMAT, version=TOKEN_VERSION)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, {**{k: np.asarray(arrays[k]) for k in ARRAY_KEYS}, "meta": np.array(json.dumps(meta))})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_token_file(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """-> (arrays, meta) of a token file; FileNotFoundError / ValueError naming the path and the problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"token file not found: {path!r} (make it with scripts/quantize_dataset.py)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path!r} is not a token file (.npz from scripts/quantize_dataset.py): {err}") from None
    if "meta" not in arrays:
        raise ValueError(f"{path!r} has no 'meta' entry: not a token file from scripts/quantize_dataset.py")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r}: unreadable meta ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != TOKEN_FORMAT:
        raise ValueError(f"{path!r} is not a token file (format {meta.get('format') if isinstance(meta, dict) else meta!r},"
                         f" expected {TOKEN_FORMAT!r})")
    if meta.get("version") != TOKEN_VERSION:
        raise ValueError(f"{path!r} has token format version {meta.get('version')!r}; this code reads version "
                         f"{TOKEN_VERSION}: re-run scripts/quantize_dataset.py")
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path!r} lacks the arrays {missing}")
    n, K, L = arrays["z"].shape if arrays["z"].ndim == 3 else (None, None, None)
    expected = {"z": (n, K, L), "token_mask": (n, K, L), "z_full": (n, L), "c": (n, arrays["c"].shape[-1]),
                "index": (n,)}
    bad = {k: arrays[k].shape for k, shape in expected.items() if n is None or arrays[k].shape != shape}
    if bad or n != meta.get("count") or K != meta.get("masks_per_image"):
        raise ValueError(f"{path!r}: inconsistent shapes {({k: v.shape for k, v in arrays.items()})} for count "
                         f"{meta.get('count')} and masks_per_image {meta.get('masks_per_image')}")
    return arrays, meta


class TokenDataset(torch.utils.data.Dataset):
    """Items of a token file (see the module docstring):

        "z_indices": (L,) int64, first-stage indices encoded with the variant's mask,
        "token_mask": (L,) bool, that mask's M_q,
        "z_full": (L,) int64, indices encoded without a mask,
        "c_indices": (N,) int64, condition indices,
        "index": int, the item's index in the source dataset; "variant": int, the mask variant.

    Args:
        path: the .npz from scripts/quantize_dataset.py.
        variant: "random" (a variant drawn per __getitem__ from torch's generator, which Lightning
            seeds per worker), "first" (variant 0: the dataset's own mask) or an int in [0, K).
        split: if given, the split the file must have been made from.

    `token_meta` is the file's meta; the transformers check it against their stages
    (`TamingTransformer.check_token_meta`) when training or validation starts.
    """

    def __init__(self, path: PathLike, variant: Union[str, int] = "random", split: Optional[str] = None):
        super().__init__()
        self.path = os.fspath(path)
        self.arrays, self.token_meta = read_token_file(self.path)
        self.masks_per_image = int(self.token_meta["masks_per_image"])
        if variant == "first":
            variant = 0
        if variant != "random":
            if not isinstance(variant, (int, np.integer)) or isinstance(variant, bool) \
                    or not 0 <= variant < self.masks_per_image:
                raise ValueError(f"variant must be 'random', 'first' or an int in [0, {self.masks_per_image}), "
                                 f"got {variant!r}")
            variant = int(variant)
        self.variant = variant
        if split is not None and self.token_meta.get("split") != split:
            raise ValueError(f"{self.path!r} was made from split {self.token_meta.get('split')!r}, not {split!r}")

    def __len__(self) -> int:
        return int(self.token_meta["count"])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = check_item_index(index, len(self), "TokenDataset")
        k = int(torch.randint(self.masks_per_image, ())) if self.variant == "random" else self.variant
        a = self.arrays
        return {"z_indices": a["z"][index, k].astype(np.int64), "token_mask": a["token_mask"][index, k].astype(bool),
                "z_full": a["z_full"][index].astype(np.int64), "c_indices": a["c"][index].astype(np.int64),
                "index": int(a["index"][index]), "variant": k}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, variant={self.variant!r}, {len(self)} items)"


# -------------------------------------------------------------------------------------- encoding


def _inner(dataset):
    """The dataset a wrapper holds (`.dataset`: MaskedDataset, Subset; `.data`: WrappedDataset), or None."""
    for attr in ("dataset", "data"):
        inner = getattr(dataset, attr, None)
        if inner is not None and hasattr(inner, "__getitem__") and hasattr(inner, "__len__") \
                and not isinstance(inner, np.ndarray):
            return inner
    return None


def find_mask_source(dataset) -> Tuple[Any, int]:
    """(mask source, first stream) of the outermost dataset in a wrapper chain that has a
    `mask_source` (MaskedDataset: its source and seed); else (MaskSource(), 0)."""
    from ilat_ext.data.mask_sources import MaskSource
    seen = 0
    while dataset is not None and seen < 8:
        if getattr(dataset, "mask_source", None) is not None:
            return dataset.mask_source, int(getattr(dataset, "seed", 0))
        dataset = _inner(dataset)
        seen += 1
    return MaskSource(), 0


def mask_variants(item_mask: Optional[np.ndarray], index: int, height: int, width: int, k: int,
                  source, stream: int) -> np.ndarray:
    """The k (k, H, W) float32 masks of item `index`: variant 0 = the item's own (H, W[, 1]) mask if
    given, else source stream `stream`; variant j >= 1 = `source.sample(index, H, W, stream=stream + j)`."""
    masks = []
    for j in range(k):
        if j == 0 and item_mask is not None:
            masks.append(np.asarray(item_mask, np.float32).reshape(height, width))
        else:
            masks.append(source.sample(index, height, width, stream=stream + j))
    return np.stack(masks)


def _dataset_skip_count(dataset) -> int:
    """Sum of the `skipped` counters (unreadable files replaced by the dataset) along a wrapper chain."""
    total, seen = 0, 0
    while dataset is not None and seen < 8:
        for obj in (dataset, getattr(dataset, "mask_source", None)):
            value = getattr(obj, "skipped", None)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                total += int(value)
        dataset = _inner(dataset)
        seen += 1
    return total


@torch.no_grad()
def encode_dataset(model, dataset, masks_per_image: int = 4, batch_size: int = 8, limit: Optional[int] = None,
                   progress: Optional[Callable[[Iterable], Iterable]] = None
                   ) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Encode items 0 .. min(limit, len) - 1 of `dataset` with `model`'s frozen stages.

    model: a TamingTransformer / ILATTransformer (its `encode_target`, `token_mask`, `encode_to_c`
    on its device). An item whose loading raises OSError, ValueError or RuntimeError is skipped
    and counted. Returns (arrays for `write_token_file`, info: count, skipped, skipped_indices,
    skipped_by_dataset, latent_shape, latent_length, cond_length, image_size, masks_per_image).
    """
    if int(masks_per_image) < 1:
        raise ValueError(f"masks_per_image must be >= 1, got {masks_per_image}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    K, device = int(masks_per_image), model.device
    total = len(dataset) if limit is None else min(int(limit), len(dataset))
    source, stream = find_mask_source(dataset)
    mask_key = getattr(model, "mask_key", "mask")
    z_dtype = index_dtype(model.first_stage_model.quantize.n_e)
    c_quantize = getattr(model.cond_stage_model, "quantize", None)
    c_dtype = index_dtype(None if c_quantize is None else c_quantize.n_e)
    if c_quantize is None:  # SOSProvider: the token itself
        c_dtype = index_dtype(int(getattr(model.cond_stage_model, "sos_token", 0)) + 1)
    out: Dict[str, List[np.ndarray]] = {k: [] for k in ARRAY_KEYS}
    skipped: List[int] = []
    first_error = None
    starts = range(0, total, int(batch_size))
    for start in (progress(starts) if progress is not None else starts):
        items, indices = [], []
        for i in range(start, min(start + int(batch_size), total)):
            try:
                items.append(dataset[i])
                indices.append(i)
            except (OSError, ValueError, RuntimeError) as err:
                skipped.append(i)
                first_error = first_error or f"item {i}: {type(err).__name__}: {err}"
        if not items:
            continue
        x = model.get_input(model.first_stage_key, {model.first_stage_key: torch.stack(
            [torch.as_tensor(it[model.first_stage_key]) for it in items])}).to(device)      # (B, C, H, W)
        B, _, H, W = x.shape
        c = None
        if not model.be_unconditional:
            c = model.get_input(model.cond_stage_key, {model.cond_stage_key: torch.stack(
                [torch.as_tensor(it[model.cond_stage_key]) for it in items])}).to(device)
        masks = np.stack([mask_variants(it.get(mask_key), i, H, W, K, source, stream)
                          for it, i in zip(items, indices)])                                 # (B, K, H, W)
        masks = torch.from_numpy(masks).to(device=device, dtype=x.dtype).reshape(B * K, 1, H, W)
        xk = x.repeat_interleave(K, dim=0)                                                   # (B*K, C, H, W)
        z, _ = model.encode_target(xk, masks)                                                # (B*K, L)
        m_q = model.token_mask(xk, masks)                                                    # (B*K, L)
        z_full, _ = model.encode_target(x, None)                                             # (B, L)
        _, c_idx = model.encode_to_c(model.check_condition(c, x))                            # (B, N)
        L = z.shape[1]
        out["z"].append(z.reshape(B, K, L).cpu().numpy().astype(z_dtype))
        out["token_mask"].append(m_q.reshape(B, K, L).cpu().numpy().astype(bool))
        out["z_full"].append(z_full.cpu().numpy().astype(z_dtype))
        out["c"].append(c_idx.cpu().numpy().astype(c_dtype))
        out["index"].append(np.asarray(indices, np.int64))
        image_size = (H, W)
    if not out["z"]:
        raise RuntimeError(f"no item of the dataset could be encoded ({len(skipped)} skipped; first error: "
                           f"{first_error})")
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    f = model.first_stage_factor
    info = {"count": int(arrays["z"].shape[0]), "skipped": len(skipped), "skipped_indices": skipped[:1000],
            "skipped_by_dataset": _dataset_skip_count(dataset), "masks_per_image": K,
            "image_size": list(image_size), "latent_shape": [image_size[0] // f, image_size[1] // f],
            "latent_length": int(arrays["z"].shape[2]), "cond_length": int(arrays["c"].shape[1]),
            "mask_rule": (f"variant 0: the item's own mask (else mask source stream {stream}); variant k >= 1: "
                          f"mask_source.sample(index, H, W, stream={stream} + k)")}
    if first_error is not None:
        info["first_error"] = first_error
    return arrays, info
