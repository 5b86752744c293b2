"""Editing with the iLAT authors' released face models, on their path and on ours (docs/face_editing.md).

A run converted by `scripts/convert_release.py` holds the authors' three FFHQ models in
ilat_ext's classes. The same weights run two ways (`path`):

- "release": what the authors' notebook computes, token for token. The TS-VQGAN encodes with
  whole-map InstanceNorm statistics (`whole_map_statistics`: their leak) and quantises every
  position; the transformer samples with their attention rule (a row is causal iff its input token
  is unknown, `ilat_ext.masks.release_attention_mask`), one full pass per masked token with the
  generated tokens marked known (`sample_tokens_release`); every position is decoded from the
  codebook and blended into the input with their feathered mask (`feathered_mask`, their
  `get_combined_mask`): out = x * (1 - g) + decoded * g.
- "ilat" (default): ilat_ext's own path: the leak-free encoder (masked statistics), the paper's
  LA mask (t_m and t_{m-1} causal, `la_attention_mask` with every grid token an input), the
  KV-cached batched sampler and Eq. 4 decoding (codebook vectors in M_q, the encoder's features
  elsewhere; no pixel blend). The weights were trained with the release's rules, so this path is
  the model used off its training distribution, exactly as Taming* runs a Taming model with the
  LA mask; how far the two paths' edits are apart is measured in docs/face_editing.md.

    out = edit_release_run("runs/ilat_ffhq_release", image, mask, strokes, path="release")
    out["result"]   # uint8 (256, 256, 3)

`edit_tensors` is the same on tensors (batches).
"""
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Union

import cv2
import numpy as np
import torch

from ilat_ext.masks import check_pixel_mask, feathered_mask, la_attention_mask, la_causal_positions
from ilat_ext.modules.sampling import sample_tokens, sample_tokens_release
from ilat_ext.modules.two_stream import whole_map_statistics

PATHS = ("release", "ilat")


@dataclass
class ReleaseEditResult:
    """image (B, 3, H, W) in [-1, 1]; tokens (B, L) after sampling; token_mask (B, L) bool, the
    generated ones; steps: transformer calls (release: full passes; ilat: cached calls)."""
    image: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor
    steps: int


@contextmanager
def _stage(timings: Optional[Dict[str, float]], name: str, device: torch.device) -> Iterator[None]:
    """Adds the wall seconds of the block to timings[name] (CUDA synchronised); nothing when None."""
    if timings is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _check_model(model) -> None:
    if not getattr(model, "input_last_token", False) or getattr(model, "layout", None) != "start":
        raise ValueError("the release path needs a release-layout ILATTransformer (layout 'start', input_last_token: "
                         "true), e.g. a run written by scripts/convert_release.py")


@torch.no_grad()
def encode_tokens(model, x: torch.Tensor, mask: torch.Tensor, path: str = "ilat"):
    """x (B, 3, H, W) in [-1, 1], mask (B, 1, H, W) -> (tokens (B, L), continuous features (B, D, h, w)):
    the TS-VQGAN with whole-map ("release") or masked ("ilat") normalisation statistics."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    fs = model.first_stage_model
    with whole_map_statistics(path == "release"):
        features = fs.encode_features(x, mask)
    _, _, info = fs.quantize(features)
    return info[2].view(x.shape[0], -1), features


@torch.no_grad()
def edit_tensors(model, x: torch.Tensor, mask: torch.Tensor, sketch: torch.Tensor, path: str = "ilat", *,
                 greedy: bool = True, temperature: float = 1.0, top_k: Optional[int] = None,
                 seed: Optional[int] = None, use_cache: bool = True, blend_passes: int = 1,
                 progress: bool = False, timings: Optional[Dict[str, float]] = None) -> ReleaseEditResult:
    """Edit a batch with a release-layout model on `path` ("release" | "ilat", see the module docstring).

    x: (B, 3, H, W) in [-1, 1]; mask: (B, 1, H, W), 1 = edit; sketch: (B, 1, H, W) in [-1, 1] (the
    composed condition sketch). greedy (the notebook's) or a draw at temperature / top_k seeded by
    `seed`. use_cache: ilat path only (False: one full pass per token, same tokens).
    blend_passes: release path only, how many times the feathered blend is applied (1; 2 for a
    release config with combined_vqgan set, whose sampler blends once and the notebook again).
    Elements with an empty mask come back bit-exactly. `timings`: a dict that receives the seconds
    of each stage ("sketch", "encode", "transformer", "decode"; decode includes the blend).
    """
    _check_model(model)
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    device = model.device
    x = x.to(device)
    mask = check_pixel_mask(mask.to(device), x)
    sketch = model.check_condition(sketch.to(device), x)
    m_q = model.token_mask(x, mask)                                                   # (B, L)
    with _stage(timings, "sketch", device):
        _, c_idx = model.encode_to_c(sketch)
    with _stage(timings, "encode", device):
        z, features = encode_tokens(model, x, mask, path)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
    n_codes = model.first_stage_model.quantize.n_e
    if path == "release":
        with _stage(timings, "transformer", device):
            emb, _, n_cond = model.sequence_inputs(c_idx)
            result = sample_tokens_release(model.transformer, z, m_q, emb, n_cond, greedy=greedy,
                                           temperature=temperature, top_k=top_k, generator=generator,
                                           vocab_limit=n_codes, progress=progress)
        tokens, steps = result.indices, result.steps
        with _stage(timings, "decode", device):
            image = model.decode_tokens(tokens, features, None)                       # every position from the codebook
            g = feathered_mask(mask).to(x.dtype)
            for _ in range(max(1, int(blend_passes))):
                image = x * (1 - g) + image * g
    else:
        with _stage(timings, "transformer", device):
            emb, prefix, n_cond = model.sequence_inputs(c_idx)
            allowed = la_attention_mask(m_q, n_cond, model.layout, True)
            sequential = la_causal_positions(m_q, n_cond, model.layout, True)
            result = sample_tokens(model.transformer, z, m_q, allowed, sequential, emb, prefix, greedy=greedy,
                                   temperature=temperature, top_k=top_k, generator=generator, vocab_limit=n_codes,
                                   use_cache=use_cache, progress=progress, input_last=True)
        tokens, steps = result.indices, result.steps
        with _stage(timings, "decode", device):
            image = model.decode_tokens(tokens, features, m_q)                        # Eq. 4
    untouched = ~m_q.any(1)
    if untouched.any():
        image = torch.where(untouched[:, None, None, None], x, image)
    return ReleaseEditResult(image, tokens, m_q, steps)


def _to_size(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    if array.shape[0] == size and array.shape[1] == size:
        return array
    return cv2.resize(array, (size, size), interpolation=interpolation)


def edit_release_run(run: Union[str, Any], image: np.ndarray, mask: np.ndarray, strokes: Optional[np.ndarray] = None,
                     path: str = "ilat", *, device: str = "cpu", size: int = 256, greedy: bool = True,
                     temperature: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = None,
                     use_cache: bool = True, dtype: Optional[torch.dtype] = None,
                     progress: bool = False) -> Dict[str, Any]:
    """Edit one face with a converted release run.

    Args:
        run: a run folder (or checkpoint) written by scripts/convert_release.py, or its loaded model.
        image: uint8 (H, W, 3) RGB face; square (H = W); resized to `size` (256, the release's size).
        mask: (H, W) bool (or 0/1), True = region to edit.
        strokes: uint8 (H, W) in the sketch convention (dark lines 0 on white 255), used inside the
            mask; None = no strokes (white inside the mask).
        path: "release" (the authors' computation) or "ilat" (ilat_ext's leak-free, cached path).
        dtype: run the model in this dtype (e.g. torch.bfloat16 on GPU); None = as loaded.
    Returns:
        dict(result=uint8 (size, size, 3), sketch=uint8 (size, size) condition sketch,
             tokens=LongTensor (L,), token_mask=BoolTensor (L,), steps=int).
    The condition sketch is the release's: XDoG (release constants) of the face at `size` outside the
    mask, the strokes inside (`ilat_ext.data.sketch.compose_edit_sketch`).
    """
    from ilat_ext.data.sketch import compose_edit_sketch, sketch_to_tensor_layout

    if isinstance(run, (str, bytes)) or hasattr(run, "__fspath__"):
        from ilat_ext.runs import load_run
        model, _ = load_run(run)
        model.to(device)
    else:
        model = run
    if dtype is not None:
        model.to(dtype)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be a square uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask of shape {mask.shape} does not fit the image {image.shape[:2]}")
    strokes = np.full(image.shape[:2], 255, np.uint8) if strokes is None else np.asarray(strokes)
    if strokes.shape != image.shape[:2] or strokes.dtype != np.uint8:
        raise ValueError(f"strokes must be uint8 {image.shape[:2]}, got {strokes.dtype} {strokes.shape}")
    face = _to_size(image, size, cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)
    # a model pixel is edited when any part of it is covered (the user's strokes stay inside)
    edit = _to_size(mask.astype(np.float32), size, cv2.INTER_AREA) > 0
    strokes = _to_size(strokes, size, cv2.INTER_AREA)
    sketch = compose_edit_sketch(face, edit, strokes)
    param = next(model.parameters())
    x = torch.from_numpy(face).permute(2, 0, 1)[None].to(param.device, torch.float32) / 127.5 - 1
    m = torch.from_numpy(edit)[None, None].to(param.device, torch.float32)
    c = torch.from_numpy(sketch_to_tensor_layout(sketch)).permute(2, 0, 1)[None].to(param.device)
    x, m, c = x.to(param.dtype), m.to(param.dtype), c.to(param.dtype)
    out = edit_tensors(model, x, m, c, path, greedy=greedy, temperature=temperature, top_k=top_k, seed=seed,
                       use_cache=use_cache, progress=progress)
    result = ((out.image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return {"result": result, "sketch": sketch, "tokens": out.tokens[0].cpu(),
            "token_mask": out.token_mask[0].cpu(), "steps": out.steps}
