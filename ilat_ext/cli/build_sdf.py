"""Build Synthetic DeepFashion (SDF) pairs: DeepFashion people on Places2 backgrounds.

    ilat-build-sdf --deepfashion DIR --segmentation DIR --keypoints FILE \\
        --places DIR --output DIR [--n_train 4500 --n_test 285 --size 256 --seed 0]

Input formats and the output layout: `ilat_ext.data.sdf` (module docstring). Read the result with
`ilat_ext.data.sdf.SDFPairs(output, split)`. Prints what was skipped and why; the last line is the
summary as one JSON object (also written to output/meta.json).
"""
import argparse
import json
import sys

from ilat_ext.cli import ArgumentParser
from ilat_ext.data.sdf import build_sdf


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        summary = build_sdf(args.deepfashion, args.segmentation, args.keypoints, args.places, args.output,
                            n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed,
                            progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"build_sdf: error: {e}", file=sys.stderr)
        return 2
    skipped = summary["skipped"]
    print(f"built {summary['pairs']['train']} train / {summary['pairs']['test']} test pairs from "
          f"{summary['persons']['train']} / {summary['persons']['test']} persons under {args.output}")
    print(f"of {skipped['images']} images: {skipped['no_mask']} without a mask, {skipped['no_keypoints']} without "
          f"keypoints, {skipped['unreadable_images']} unreadable, {skipped['unreadable_masks']} with an unreadable "
          f"or empty mask, {skipped['bad_keypoints']} with no visible joint; {skipped['persons_with_one_image']} "
          f"persons with a single usable image; {skipped['unreadable_backgrounds']} unreadable backgrounds")
    print(json.dumps({k: v for k, v in summary.items() if k != "split_persons"}))
    return 0


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-build-sdf", description=__doc__.splitlines()[0])
    parser.add_argument("--deepfashion", required=True, help="folder of person images (person = relative folder)")
    parser.add_argument("--segmentation", required=True, help="folder of person masks, same relative paths, .png")
    parser.add_argument("--keypoints", required=True, help="JSON or CSV: relative image path -> 13 [x, y, v]")
    parser.add_argument("--places", required=True, help="folder of background images")
    parser.add_argument("--output", required=True, help="output folder (must not hold a build)")
    parser.add_argument("--n_train", type=int, default=4500)
    parser.add_argument("--n_test", type=int, default=285)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser
