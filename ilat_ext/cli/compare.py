"""Compare editing methods (trained runs) on a test set: grid.png, metrics.csv, metrics.md (`ilat-compare`).

    ilat-compare --data toy_faces --n 64 --out compare_faces \\
        --run Taming=logs/<taming run>:edit --run "Taming*=logs/<taming run>:local" --run iLAT=logs/<ilat run>

    ilat-compare --data toy_poses --n 16 --out compare_poses \\
        --run Taming=logs/<pose taming run>:edit --run "iLAT*=logs/<pose iLAT* run>" --run iLAT=logs/<pose iLAT run>

Each --run is NAME=LOGDIR[:mode], mode `local` (sample_local, the default) or `edit` (sample_edit).
See `ilat_ext.apps.compare` for the metrics and outputs. Bad input (missing run, unsupported mode,
mask of the wrong size, unknown --data) exits with status 2 and a message naming the problem.
(`python scripts/compare.py ...` runs the same.)
"""
import argparse
import sys

from ilat_ext.cli import (ArgumentParser, add_sampling_arguments, check_sampling_arguments, resolve_device,
                          sampling_options)

# the item keys of each task (ilat_ext.apps.compare.TASK_KEYS), here so that parsing needs no torch
TASKS = ("face", "pose")


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ilat-compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", default=[], metavar="NAME=LOGDIR[:mode]", required=True,
                   help="a method: a run's log dir (or checkpoint) and mode local|edit; repeatable")
    p.add_argument("--data", default="toy_faces",
                   help="toy_faces, toy_poses (one held-out pair from each of --n stick-figure test videos), "
                        "config:PATH (a target:/params: dataset YAML, e.g. a Penn Action test split) or photos:DIR "
                        "(your photos in ilat-edit-face's batch layout, read at the first run's size)")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="the item keys' defaults: face (image, mask, sketch) or pose (reference cond_image edited "
                        "into the target image); default: pose for --data toy_poses, else face")
    p.add_argument("--n", type=int, default=16, help="test items")
    p.add_argument("--size", type=int, default=64, help="image size of toy_faces")
    p.add_argument("--batch_size", type=int, default=4)
    add_sampling_arguments(p, greedy=True, temperature=1.0, seed=0,
                           seed_help="seed of the toy data (toy_faces, toy_poses); sampling seed with --no_greedy")
    p.add_argument("--out", default="compare_out", help="output folder")
    p.add_argument("--image_key", default=None, help="default: the --task's")
    p.add_argument("--mask_key", default=None, help="default: the --task's")
    p.add_argument("--cond_key", default=None, help="default: the --task's")
    p.add_argument("--target_key", default=None, help="ground-truth key for PSNR/SSIM/MAE/FID (default: the --task's)")
    p.add_argument("--grid_rows", type=int, default=8)
    p.add_argument("--save_images", action="store_true", help="also write every image to OUT/images/<column>/")
    p.add_argument("--inception", default=None, help="Inception weight file or folder for FID")
    p.add_argument("--fid_dims", type=int, default=2048, choices=[64, 192, 768, 2048])
    p.add_argument("--no_fid", action="store_true")
    p.add_argument("--unsafe_load", action="store_true", help="allow full unpickling (trusted files only)")
    return p


def _photo_folder(args, logdir, model):
    """`photos:DIR` read like `ilat-edit-face` reads it for the first run (its size, sketch style and
    whole-image training); the skipped files are printed with their reasons."""
    from ilat_ext.apps.compare import build_dataset
    from ilat_ext.apps.edit import ReadOptions
    from ilat_ext.runs import model_input_size, resolve_run, run_config, sketch_style_of, trained_on_whole_images

    config = run_config(resolve_run(logdir)[0])
    options = ReadOptions(region="auto", whole_images=trained_on_whole_images(config))
    dataset = build_dataset(args.data, size=model_input_size(model, config), sketch_style=sketch_style_of(config),
                            read_options=options)
    for reason, paths in dataset.skipped.items():
        for path in paths:
            print(f"skipped {path}" + ("" if ": " in path else f": {reason}"))
    print(f"{args.data}: {len(dataset)} photos" + (f"; skipped {dataset.skipped_summary()}"
                                                    if dataset.skipped_summary() else ""))
    return dataset


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_sampling_arguments(parser, args)
    from ilat_ext.apps.compare import TASK_KEYS, build_dataset, compare, load_run_methods, parse_run_spec

    task = args.task or ("pose" if args.data == "toy_poses" else "face")
    for key, value in TASK_KEYS[task].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        device = resolve_device(args.device)
        specs = [parse_run_spec(s) for s in args.run]
        methods = load_run_methods(specs, device=device, unsafe=args.unsafe_load or None,
                                   image_key=args.image_key, mask_key=args.mask_key, cond_key=args.cond_key,
                                   **sampling_options(args))
        if args.data.startswith("photos:"):
            dataset = _photo_folder(args, specs[0][1], methods[0].model)
        else:
            dataset = build_dataset(args.data, n=args.n, size=args.size, seed=args.seed)
        compare(methods, dataset, args.out, n=args.n, batch_size=args.batch_size, image_key=args.image_key,
                mask_key=args.mask_key, cond_key=args.cond_key, target_key=args.target_key, device=device,
                grid_rows=args.grid_rows, save_images=args.save_images, fid=not args.no_fid,
                inception=args.inception, fid_dims=args.fid_dims, log=print)
    except (OSError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"compare.py: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/grid.png, metrics.csv, metrics.md")
    return 0
