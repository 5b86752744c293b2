"""`ilat-convert-release`: the iLAT authors' three FFHQ folders -> an ilat_ext run folder.

    python scripts/convert_release.py --sketch sketch_ffhq_V1 --tsvqgan tsvqgan_ffhq_V1 \\
        --transformer iLAT_ffhq_V1 --out runs/ilat_ffhq_release

The run then works with `ilat_ext.runs.load_run`, scripts/edit_face.py --run, scripts/compare.py and
main.py -t (finetuning). A folder that cannot be converted gives one line on stderr and exit code 2,
and nothing is written. See `ilat_ext.apps.release_convert`.
"""
import argparse
import sys
from typing import Optional, Sequence

from ilat_ext.cli import ArgumentParser


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ilat-convert-release", description=__doc__.split("\n\n")[0])
    p.add_argument("--sketch", required=True, help="the authors' sketch_ffhq_V1 folder (sketch_config.yml + *_g_last.pth)")
    p.add_argument("--tsvqgan", required=True, help="the authors' tsvqgan_ffhq_V1 folder (config.yml + *_g_best_fid.pth)")
    p.add_argument("--transformer", required=True, help="the authors' iLAT_ffhq_V1 folder (transformer_config.yml + *_last.pth)")
    p.add_argument("--out", required=True, help="run folder to write (must not exist unless --overwrite)")
    p.add_argument("--tsvqgan_prefix", default=None, help="file suffix of the TS-VQGAN weights, e.g. _last "
                                                          "(default: _best_fid, as the notebook, else _last)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from ilat_ext.apps.release_convert import ConversionError, write_release_run

    try:
        report = write_release_run(args.sketch, args.tsvqgan, args.transformer, args.out, overwrite=args.overwrite,
                                   tsvqgan_prefix=args.tsvqgan_prefix)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
