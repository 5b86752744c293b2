"""Evaluate a TS-VQGAN run: how well Eq. 4 keeps what is outside the mask.

    ilat-eval-tsvqgan logs/<run> [--num 64] [--out eval_tsvqgan]

For each validation image (the run's own validation data, which must provide masks) it decodes
(a) Eq. 4's local quantized latent (codes inside the mask, continuous features outside) and
(b) the fully quantized latent (what plain Taming decodes), and reports the PSNR of the
UNMASKED pixels against the input for both, plus the whole-image PSNR. Writes a grid
input | mask | Eq. 4 | fully quantized and prints a table; the last line is one JSON object.
"""
import argparse
import json
import os

import torch
from tqdm import tqdm

from ilat_ext.callbacks import save_overview
from ilat_ext.cli import ArgumentParser
from ilat_ext.runs import load_run
from ilat_ext.util import instantiate_from_config


def masked_psnr(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """PSNR in dB over the pixels where keep = 1, images in [-1, 1] mapped to [0, 1]; per sample.
    x, y: (B, C, H, W); keep: (B, 1, H, W)."""
    diff = ((x - y) / 2.0).clamp(-1, 1) ** 2 * keep
    count = keep.sum(dim=(1, 2, 3)) * x.shape[1]
    mse = diff.sum(dim=(1, 2, 3)) / count.clamp(min=1)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=1e-12))


@torch.no_grad()
def evaluate(model, dataset, num: int, batch_size: int = 8):
    device = next(model.parameters()).device
    sums = {"eq4_unmasked": [], "quantized_unmasked": [], "eq4_all": [], "quantized_all": []}
    shown = None
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(min(num, len(dataset)))),
                                         batch_size=batch_size)
    for batch in tqdm(loader, desc="evaluating"):
        x = model.get_input(batch, model.image_key).to(device)
        if model.mask_key not in batch:
            raise KeyError(f"the validation data has no '{model.mask_key}': wrap it in ilat_ext.data.mask_sources.MaskedDataset")
        mask = model.get_input(batch, model.mask_key).to(device)
        eq4 = model(x, mask)[0].clamp(-1, 1)
        quantized = model.decode(model.encode_quantized(x, mask)[0]).clamp(-1, 1)
        keep = 1.0 - mask
        sums["eq4_unmasked"].append(masked_psnr(eq4, x, keep))
        sums["quantized_unmasked"].append(masked_psnr(quantized, x, keep))
        sums["eq4_all"].append(masked_psnr(eq4, x, torch.ones_like(keep)))
        sums["quantized_all"].append(masked_psnr(quantized, x, torch.ones_like(keep)))
        if shown is None:
            shown = {"input": x.cpu(), "mask": (mask * 2 - 1).cpu(), "eq4": eq4.cpu(), "quantized": quantized.cpu()}
    return {k: torch.cat(v).mean().item() for k, v in sums.items()}, shown


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-eval-tsvqgan", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="logs/<run> or a checkpoint inside it")
    parser.add_argument("--num", type=int, default=64, help="validation images to use")
    parser.add_argument("--out", default="eval_tsvqgan", help="folder for the grid")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--unsafe_load", action="store_true", help="allow full unpickling (trusted files only)")
    return parser


def run(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)

    model, config = load_run(args.run, unsafe=args.unsafe_load or None)
    if not hasattr(model, "encode_quantized"):
        raise TypeError(f"{args.run} is a {type(model).__name__}, not a TSVQModel run")
    model = model.to(args.device)
    if "validation" not in config.data.params:
        raise KeyError(f"{args.run}: the config has no data.params.validation")
    dataset = instantiate_from_config(config.data.params.validation)
    results, shown = evaluate(model, dataset, args.num)

    os.makedirs(args.out, exist_ok=True)
    grid_path = os.path.join(args.out, "input_mask_eq4_quantized.png")
    save_overview(shown, grid_path)

    print(f"\n{'PSNR (dB)':<24}{'Eq. 4 (local)':>16}{'fully quantized':>18}{'difference':>12}")
    for region in ("unmasked", "all"):
        a, b = results[f"eq4_{region}"], results[f"quantized_{region}"]
        print(f"{region + ' pixels':<24}{a:>16.2f}{b:>18.2f}{a - b:>12.2f}")
    print(f"grid: {grid_path}")
    print(json.dumps({"run": args.run, "images": min(args.num, len(dataset)), **results}))
    return results


def main(argv=None) -> int:
    run(argv)
    return 0
