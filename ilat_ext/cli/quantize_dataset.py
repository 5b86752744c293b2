"""Encode a dataset once with the frozen stages and store the indices (a token file).

    ilat-quantize-dataset --config CONFIG.yaml [key=value ...] --split train|validation \
        --out PATH.npz [--masks_per_image 4] [--batch_size 8] [--device cpu|cuda] [--limit N]

CONFIG is a transformer config (toy or paper: an ILATTransformer or TamingTransformer whose
first/cond stage configs carry their ckpt paths); its `data.params.<split>` section gives the images
(and masks). Each image keeps `--masks_per_image` mask variants, each encoded with its own mask
(the TS-VQGAN's tokens depend on the mask), plus the mask-free encoding and the condition tokens;
see `ilat_ext.data.tokens` for the file and the mask rule. Unreadable items are skipped and
counted. The file is written atomically: an interrupted run leaves no partial file.

The toy chain from stored tokens (configs/toy/ilat_tokens.yaml reads data/toy_tokens_*.npz):

    STAGES="model.params.first_stage_config.params.ckpt_path=logs/<toy TS-VQGAN stage-2 run>/checkpoints/last.ckpt \
            model.params.cond_stage_config.params.ckpt_path=logs/<toy sketch VQGAN run>/checkpoints/last.ckpt"
    ilat-quantize-dataset --config configs/toy/ilat.yaml $STAGES --split train \
        --out data/toy_tokens_train.npz
    ilat-quantize-dataset --config configs/toy/ilat.yaml $STAGES --split validation \
        --out data/toy_tokens_validation.npz
    python main.py --base configs/toy/ilat_tokens.yaml -t $STAGES

Training still builds the frozen stages (they decode the image logs and sample), and checks that
the token file was made with the same stages (codebook sizes, weights) before the first step.
The last line printed is a JSON summary.
"""
import argparse
import json
import os
import sys
import time

from ilat_ext.cli import ArgumentParser

SPLITS = ("train", "validation", "test")


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-quantize-dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, metavar="CONFIG.yaml",
                        help="transformer config; repeat to merge several, left to right")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (OmegaConf dot-list)")
    parser.add_argument("--split", choices=SPLITS, default="train", help="data.params.<split> to encode")
    parser.add_argument("--out", required=True, help="token file to write (.npz)")
    parser.add_argument("--masks_per_image", type=int, default=4, help="mask variants K stored per image")
    parser.add_argument("--batch_size", type=int, default=8, help="images per encoder batch (x K masks)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N items")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    return parser


def run(argv=None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)
    for path in args.config:  # before the heavy imports, so a typo fails fast
        if not os.path.isfile(path):
            parser.error(f"config file not found: {path}")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides are written key=value, got {bad}")
    if args.masks_per_image < 1 or args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--masks_per_image, --batch_size and --limit must be >= 1")
    if not args.out.endswith(".npz"):
        parser.error(f"--out must end in .npz, got {args.out}")

    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from ilat_ext.data.tokens import encode_dataset, write_token_file
    from ilat_ext.util import instantiate_from_config

    config = OmegaConf.merge(*[OmegaConf.load(p) for p in args.config], OmegaConf.from_dotlist(args.overrides))
    data_params = config.get("data", {}).get("params", {})
    if "model" not in config or args.split not in data_params:
        parser.error(f"the config needs a model section and data.params.{args.split} (files: {args.config})")
    missing = [f"model.{k}" for k in OmegaConf.missing_keys(config.model)]
    missing += [f"data.params.{args.split}.{k}" for k in OmegaConf.missing_keys(data_params[args.split])]
    if missing:
        parser.error(f"set these config values (key=value): {', '.join(sorted(missing))}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is available")

    started = time.time()
    model = instantiate_from_config(config.model).to(device).eval()
    for name in ("first_stage_model", "cond_stage_model"):
        report = getattr(getattr(model, name), "ckpt_load_report", None)
        if report is not None and report.missing:
            raise RuntimeError(f"{name} did not load completely:\n{report.summary()}")
    dataset = instantiate_from_config(data_params[args.split])
    progress = None if args.no_progress else (lambda it: tqdm(it, desc=f"encoding {args.split}", unit="batch"))
    arrays, info = encode_dataset(model, dataset, masks_per_image=args.masks_per_image,
                                  batch_size=args.batch_size, limit=args.limit, progress=progress)

    def plain(value):
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    model_params = config.model.get("params", {})
    meta = dict(info, split=args.split, stages=model.token_meta(), model_target=str(config.model.target),
                first_stage_config=plain(model_params.get("first_stage_config")),
                cond_stage_config=plain(model_params.get("cond_stage_config")),
                dataset_config=plain(data_params[args.split]),
                config_files=[os.path.abspath(p) for p in args.config], overrides=list(args.overrides),
                created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_token_file(args.out, arrays, meta)

    summary = {"out": args.out, "split": args.split, "count": info["count"], "skipped": info["skipped"],
               "skipped_by_dataset": info["skipped_by_dataset"], "masks_per_image": info["masks_per_image"],
               "latent_shape": info["latent_shape"], "cond_length": info["cond_length"],
               "bytes": os.path.getsize(args.out), "seconds": round(time.time() - started, 2)}
    print(f"wrote {summary['count']} items x {summary['masks_per_image']} masks ({summary['latent_shape'][0]}x"
          f"{summary['latent_shape'][1]} grid tokens, {summary['cond_length']} condition tokens) to {args.out}; "
          f"skipped {summary['skipped']} unreadable items (+{summary['skipped_by_dataset']} files the dataset "
          f"replaced); {summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']} s")
    if "first_error" in info:
        print(f"first skipped item: {info['first_error']}", file=sys.stderr)
    print(json.dumps(summary))
    return summary


def main(argv=None) -> int:
    run(argv)
    return 0
