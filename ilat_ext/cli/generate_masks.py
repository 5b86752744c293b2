"""Write free-form training masks (white = region to edit) and their file list.

    ilat-generate-masks --output_path data/masks/free_form --count 10000 \
        [--size 256] [--area 0.05 0.3] [--seed 0]

Writes 00000.png, 00001.png, ... (DeepFill-v2-style brush strokes covering a fraction of the
image drawn uniformly in --area) and `masks.flist` (one name per line, relative to the list: the
release's format, usable as a `mask_list` of `ilat_ext.data.mask_sources.MaskSource`). The same seed
writes the same masks.
"""
import argparse
import sys

from ilat_ext.cli import ArgumentParser
from ilat_ext.data.mask_sources import write_free_form_masks


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        list_path = write_free_form_masks(args.output_path, args.count, size=args.size, area_range=tuple(args.area),
                                          seed=args.seed, progress=not args.quiet)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.count} masks of {args.size} px and {list_path}")
    return 0


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-generate-masks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_path", required=True, help="folder for the masks (created if needed)")
    parser.add_argument("--count", type=int, required=True, help="number of masks")
    parser.add_argument("--size", type=int, default=256, help="side of the square masks (default 256)")
    parser.add_argument("--area", type=float, nargs=2, default=(0.05, 0.3), metavar=("LOW", "HIGH"),
                        help="range of the masked fraction (default 0.05 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser
