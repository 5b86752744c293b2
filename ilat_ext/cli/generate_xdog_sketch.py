"""Write the release's XDoG sketch of every image in a folder (recursive), resumably.

    ilat-generate-xdog-sketch --input_path data/ffhq/images1024x1024 \
        --output_path data/ffhq/sketch256 [--size 256] [--overwrite]

Each image's sketch goes to the same relative path under the output folder as .png (XDoG with the
release constants on the source image, then resized to --size with INTER_AREA; see
`ilat_ext.data.sketch.release_sketch`). Outputs already there are kept unless --overwrite, so an
interrupted run picks up where it stopped. Exit code 0 when at least one image was processed,
2 when the input folder is missing or holds no readable image.
"""
import argparse
import os
import sys

from ilat_ext.cli import ArgumentParser


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-generate-xdog-sketch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_path", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--output_path", required=True, help="folder for the sketches (created if needed)")
    parser.add_argument("--size", type=int, default=256, help="side of the square sketches (default 256)")
    parser.add_argument("--overwrite", action="store_true", help="recompute sketches that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size must be positive, got {args.size}")
    if not os.path.isdir(args.input_path):  # before the library's imports
        print(f"error: input folder not found: {args.input_path!r}", file=sys.stderr)
        return 2
    from ilat_ext.data.sketch import sketch_folder

    try:
        report = sketch_folder(args.input_path, args.output_path, size=args.size, overwrite=args.overwrite,
                               progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output_path}: {report.summary()}")
    if report.processed == 0:
        print(f"error: no readable image in {args.input_path!r}", file=sys.stderr)
        return 2
    return 0
