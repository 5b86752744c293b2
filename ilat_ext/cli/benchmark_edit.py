"""End-to-end speed of a 256-px face edit with the release-shaped models, on both paths.

Builds the three models of the authors' release at their real sizes with random weights (the
configs of their configs/vqgan_ffhq.yml and configs/transformer_ffhq.yml: sketch VQGAN 74.6M,
TS-VQGAN 74.9M, transformer 89.2M parameters, through `ilat_ext.apps.release_convert.release_model_config`)
and times `ilat_ext.apps.release_edit.edit_tensors` per edit: sketch encode, TS-VQGAN encode,
transformer, decode (+ the release's blend), for

  path   release (their encoder statistics, mask rule and sampler: one full pass per masked
         token) | ilat (leak-free encoder, LA mask, KV-cached sampler, Eq. 4 decoding);
  mask   ~6.6% (17 of 256 tokens, the paper's FFHQ rate) and ~30% (77 tokens);
  batch  1 and 8 (8 different masks in one call; seconds are per edit);
  dtype  float32, and bfloat16 / float16 where the device has them (--dtypes).

Greedy decoding. Prints a markdown table (median of --repeats after one warm-up) and, as its last
line, one JSON object with every row and `ilat_speedup_6.6` (release / ilat seconds, batch 1, fp32).

    ilat-benchmark-edit                              # the full grid on --device (default cpu)
    ilat-benchmark-edit --batches 1 --repeats 1      # what fits a 2-core CPU in minutes
    ilat-benchmark-edit --tiny                       # seconds: the same code on tiny models (tests)
"""
import argparse
import json
import math
import statistics
import time
from typing import Dict, List

import torch

from ilat_ext.cli import ArgumentParser

# the released configs (configs/vqgan_ffhq.yml for both VQGANs, configs/transformer_ffhq.yml)
RELEASE_VQ = {"model_type": "TS-VQGAN", "model": {"params": {"embed_dim": 256, "n_embed": 2048, "ddconfig": {
    "act": "SWISH", "norm": "IN", "use_attention": False, "double_z": False, "z_channels": 256, "resolution": 256,
    "ch": 64, "ch_mult": [1, 2, 4, 6, 8], "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0},
    "sketchconfig": {"params": {"in_channels": 1}}}}}
RELEASE_TRANSFORMER = {"model_type": "iLAT", "combined": True, "init_gpt_with_vqvae": False, "lm_rate": 0.15,
                       "sequence_length": 514, "n_embd": 768, "n_head": 12, "n_layer": 12, "vocab_size": 2048,
                       "attn_pdrop": 0.1, "resid_pdrop": 0.1, "embd_pdrop": 0.1}
TINY_VQ = {"model_type": "TS-VQGAN", "model": {"params": {"embed_dim": 8, "n_embed": 32, "ddconfig": {
    "z_channels": 8, "resolution": 64, "ch": 8, "ch_mult": [1, 1, 2, 2, 2], "num_res_blocks": 1, "dropout": 0.0}}}}
TINY_TRANSFORMER = {"model_type": "iLAT", "sequence_length": 34, "n_embd": 32, "n_head": 2, "n_layer": 2,
                    "vocab_size": 32}


def build_release_shaped(tiny: bool = False, seed: int = 0):
    """The release-shaped ILATTransformer (random weights, eval mode)."""
    from ilat_ext.apps.release_convert import release_model_config
    from ilat_ext.util import instantiate_from_config

    vq, tr = (TINY_VQ, TINY_TRANSFORMER) if tiny else (RELEASE_VQ, RELEASE_TRANSFORMER)
    torch.manual_seed(seed)
    config = release_model_config(vq, vq, tr, {"sketch": "sketch", "tsvqgan": "tsvqgan", "transformer": "transformer"})
    model = instantiate_from_config(config).eval()
    for stage in (model.first_stage_model, model.cond_stage_model):  # spread codebooks: distinct codes get picked
        stage.quantize.embedding.weight.data.normal_(0, 1)
    return model


def token_box_mask(size: int, grid: int, n_tokens: int, offset: int = 0) -> torch.Tensor:
    """(1, 1, size, size) pixel mask covering n_tokens latent cells in a near-square box."""
    import math

    width = math.ceil(math.sqrt(n_tokens))
    cell = size // grid
    top = (grid - math.ceil(n_tokens / width)) // 2 + (offset % 3) - 1
    left = (grid - width) // 2 + (offset % 5) - 2
    top, left = max(0, min(top, grid - math.ceil(n_tokens / width))), max(0, min(left, grid - width))
    m = torch.zeros(1, 1, size, size)
    for i in range(n_tokens):
        r, c = top + i // width, left + i % width
        m[..., r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 1
    return m


def compare_paths(release, ilat) -> Dict[str, float]:
    """How far the two paths' edits are apart: the fraction of generated tokens that differ and the
    PSNR (dB, images in [-1, 1] mapped to [0, 1]) between the two edited images."""
    gen = release.token_mask
    differ = ((release.tokens != ilat.tokens) & gen).sum().item() / max(1, gen.sum().item())
    mse = (((release.image.float() - ilat.image.float()) / 2) ** 2).mean().item()
    return {"tokens_differ": round(differ, 4), "psnr_db": round(10 * math.log10(1 / mse), 2) if mse > 0 else float("inf")}


def parameter_counts(model) -> Dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    cond = count(model.cond_emb) + model.z_start.numel()
    return {"sketch_vqgan": count(model.cond_stage_model), "tsvqgan": count(model.first_stage_model),
            "transformer": count(model.transformer) + cond}


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ilat-benchmark-edit", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--paths", nargs="+", default=["release", "ilat"], choices=["release", "ilat"])
    p.add_argument("--rates", nargs="+", type=float, default=[17 / 256, 77 / 256],
                   help="fractions of the 16 x 16 tokens to edit (default 17/256 = 6.6%% and 77/256 = 30.1%%)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max_release_tokens", type=int, default=None,
                   help="skip release-path rows that generate more tokens per call than this (CPU time)")
    p.add_argument("--tiny", action="store_true", help="tiny models (a smoke test of the script)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    from ilat_ext.apps.release_edit import edit_tensors

    device = torch.device(args.device)
    model = build_release_shaped(args.tiny).to(device)
    counts = parameter_counts(model)
    size = model.first_stage_model.encoder.resolution
    grid = size // model.first_stage_factor
    print(f"release-shaped models on {device} ({torch.get_num_threads()} threads): "
          + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()), flush=True)
    rows: List[Dict] = []
    comparisons: List[Dict] = []
    g = torch.Generator().manual_seed(0)
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        model.to(dtype)
        for rate in args.rates:
            n_tok = max(1, round(rate * grid * grid))
            for batch in args.batches:
                masks = torch.cat([token_box_mask(size, grid, n_tok, b) for b in range(batch)]).to(device, dtype)
                x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device, dtype)
                c = torch.where(torch.rand(batch, 1, size, size, generator=g) > 0.9, -1.0, 1.0).to(device, dtype)
                outputs = {}
                for path in args.paths:
                    if path == "release" and args.max_release_tokens and n_tok * batch > args.max_release_tokens:
                        continue
                    runs = []
                    for i in range(args.repeats + 1):
                        timings: Dict[str, float] = {}
                        start = time.perf_counter()
                        out = edit_tensors(model, x, masks, c, path, timings=timings)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        timings["total"] = time.perf_counter() - start
                        if i:
                            runs.append(timings)
                    med = {k: statistics.median(r[k] for r in runs) / batch for k in runs[0]}
                    row = {"path": path, "rate": round(n_tok / grid ** 2, 4), "tokens": n_tok, "batch": batch,
                           "dtype": dtype_name, "seconds_per_edit": round(med["total"], 4),
                           "transformer_seconds_per_edit": round(med["transformer"], 4),
                           "stages": {k: round(v, 4) for k, v in med.items() if k != "total"}, "steps": out.steps}
                    rows.append(row)
                    outputs[path] = out
                    print(f"  {path:7s} {row['rate']:.1%} batch {batch} {dtype_name}: {row['seconds_per_edit']:.3f} s/edit "
                          f"(transformer {row['transformer_seconds_per_edit']:.3f} s)", flush=True)
                if len(outputs) == 2:
                    comparisons.append(dict(compare_paths(outputs["release"], outputs["ilat"]), rate=round(n_tok / grid ** 2, 4),
                                            batch=batch, dtype=dtype_name))
    print("\n| path | mask | batch | dtype | s / edit | transformer s / edit | sketch + encode + decode s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        other = r["stages"]["sketch"] + r["stages"]["encode"] + r["stages"]["decode"]
        print(f"| {r['path']} | {r['rate']:.1%} | {r['batch']} | {r['dtype']} | {r['seconds_per_edit']:.3f} | "
              f"{r['transformer_seconds_per_edit']:.3f} | {other:.3f} |")
    find = lambda p: [r for r in rows if r["path"] == p and r["batch"] == 1 and r["dtype"] == "float32"  # noqa: E731
                      and abs(r["rate"] - 17 / 256) < 0.01]
    if comparisons:
        print("\nrelease vs ilat on the same inputs: " + "; ".join(
            f"{c['rate']:.1%} batch {c['batch']} {c['dtype']}: {c['tokens_differ']:.1%} of generated tokens differ, "
            f"PSNR {c['psnr_db']:.1f} dB" for c in comparisons))
    summary = {"device": str(device), "threads": torch.get_num_threads(), "parameters": counts, "rows": rows,
               "path_differences": comparisons}
    if find("release") and find("ilat"):
        summary["ilat_speedup_6.6"] = round(find("release")[0]["seconds_per_edit"] / find("ilat")[0]["seconds_per_edit"], 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
