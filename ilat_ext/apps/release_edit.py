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


def edit_release_run(run: Union[str, Any], image: np.ndarray, mask: np.ndarray, strokes: Optional[np.ndarray] = None,
                     path: str = "ilat", *, device: str = "cpu", size: int = 256, greedy: bool = True,
                     temperature: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = None,
                     use_cache: bool = True, dtype: Optional[torch.dtype] = None,
                     progress: bool = False) -> Dict[str, Any]:
    """Edit one face with a converted release run.

    Args:
        run: a run folder (or checkpoint) written by scripts/convert_release.py, or its loaded model.
        image: uint8 (H, W, 3) RGB face; its centred square is resized to `size` (256, the release's).
        mask: (H, W) bool (or 0/1), True = region to edit.
        strokes: uint8 (H, W) in the sketch convention (dark lines 0 on white 255), used inside the
            mask; None = no strokes (white inside the mask).
        path: "release" (the authors' computation) or "ilat" (ilat_ext's leak-free, cached path).
        dtype: run the model in this dtype (e.g. torch.bfloat16 on GPU); None = as loaded.
    Returns:
        dict(result=uint8 (size, size, 3), sketch=uint8 (size, size) condition sketch,
             tokens=LongTensor (L,), token_mask=BoolTensor (L,), steps=int).
    The inputs go through the photo layer as `scripts/edit_face.py --path` sends them
    (`ilat_ext.apps.edit.prepare_arrays`, region "full"): the condition sketch is the release's
    XDoG of the face at its own resolution, resized (their training sketches), outside the mask,
    the strokes inside.
    """
    from ilat_ext.apps.edit import ReadOptions, prepare_arrays
    from ilat_ext.apps.image_io import tensor_to_uint8
    from ilat_ext.data.sketch import sketch_from_tensor_layout

    if isinstance(run, (str, bytes)) or hasattr(run, "__fspath__"):
        from ilat_ext.runs import load_run
        model, _ = load_run(run)
        model.to(device)
    else:
        model = run
    if dtype is not None:
        model.to(dtype)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
    mask = np.asarray(mask).astype(bool)
    strokes = np.full(image.shape[:2], 255, np.uint8) if strokes is None else np.asarray(strokes)
    if strokes.dtype != np.uint8:
        raise ValueError(f"strokes must be uint8 {image.shape[:2]}, got {strokes.dtype} {strokes.shape}")
    inputs = prepare_arrays(image, mask, strokes, size, "release",
                            options=ReadOptions(region="full", allow_empty=True))
    param = next(model.parameters())
    x, m, c = (t.to(param.device, param.dtype) for t in (inputs.x, inputs.mask, inputs.sketch))
    out = edit_tensors(model, x, m, c, path, greedy=greedy, temperature=temperature, top_k=top_k, seed=seed,
                       use_cache=use_cache, progress=progress)
    sketch = sketch_from_tensor_layout(inputs.sketch[0].permute(1, 2, 0).numpy())
    return {"result": tensor_to_uint8(out.image.float())[0], "sketch": sketch, "tokens": out.tokens[0].cpu(),
            "token_mask": out.token_mask[0].cpu(), "steps": out.steps}
