"""Split an image folder into train / validation file lists (the release's flist format).

    ilat-write-split-flists --root data/ffhq/images1024x1024 --out_dir data \
        --n_val 10000 --prefix ffhq_ [--seed 0 | --last]

Writes <out_dir>/<prefix>train.flist and <prefix>val.flist, one path per line relative to the
list. --last takes the last n_val images in sorted order (taming's FFHQ split) instead of a
seeded random sample.
"""
import argparse
import sys

from ilat_ext.cli import ArgumentParser
from ilat_ext.data.faces import write_split_flists


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-write-split-flists", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="image folder (searched recursively)")
    parser.add_argument("--out_dir", required=True, help="folder for the two lists")
    parser.add_argument("--n_val", type=int, required=True, help="number of validation images")
    parser.add_argument("--prefix", default="", help="list name prefix, e.g. ffhq_")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--last", action="store_true", help="validation = the last n_val sorted images")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        train, val = write_split_flists(args.root, args.out_dir, args.n_val, seed=args.seed, shuffle=not args.last,
                                        prefix=args.prefix)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {train} and {val}")
    return 0
