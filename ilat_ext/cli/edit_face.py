"""Sketch-guided face editing with a trained iLAT run (paper Sec. 4, Fig. 4): `ilat-edit-face`.

    ilat-edit-face --run logs/<ilat run> --image face.jpg --mask mask.png \
        --strokes strokes.png --out result.png [--taming logs/<taming run>] [--grid grid.png] \
        [--region auto|full|mask] [--strokes_polarity auto|dark|light] [--model_size] \
        [--top_k K] [--temperature T] [--seed S] [--no_greedy] [--device cpu|cuda] [--size N]
    ilat-edit-face --run logs/<ilat run> --image face.png --mask mask.png --sketch full.png --out r.png
    ilat-edit-face --run logs/<ilat run> --input_dir DIR --out_dir OUT [--grid] [--batch_size 8]

(`python scripts/edit_face.py ...` runs the same.)

Inputs are read as people have them (`ilat_ext.apps.photo_io`): JPEG, PNG, WebP, BMP or TIFF photos
(EXIF orientation applied, transparency composited on white, at most --max_pixels); masks (white,
or opaque on a transparent paint layer, = edit; thresholded at --mask_threshold) and strokes (dark
on light, light on dark, or a transparent layer; --strokes_polarity) at any resolution with the
photo's aspect ratio. The model edits a square (--region: the photo's centred square, or a square
around the mask for a small edit in a large photo) resized to the run's training size (--size
overrides). The condition sketch is the XDoG of that square outside the mask plus the strokes
inside (made like the run's training sketches: --xdog auto picks it from the run's data, see
`ilat_ext.apps.edit`); --sketch gives a complete sketch instead. Greedy decoding unless --top_k,
--temperature, --seed or --no_greedy asks for sampling.

The result has the photo's resolution: its pixels outside the mask are the source's, bit for bit
(write PNG to keep them so), the edit inside is upsampled and feathered over --feather pixels
inside the mask's edge. --model_size writes the decoded model-size image instead. --grid writes
input | mask | sketch | [Taming | Taming* (with --taming)] | iLAT | result (the iLAT decode next to
what the user gets, the result's region at the model's size).

Batch mode: DIR/images/* with DIR/masks/<same name> and DIR/strokes/<same name>, or the release's
sample layout DIR/source/, DIR/mask/, DIR/sketch/ (strokes); results go to OUT/<stem>.png (grids
to OUT/grids/ with --grid). Images without a mask or strokes, non-image files and unreadable or
unusable files are skipped, each with its reason, and counted. Exit code 0 on success, 2 on a
usage or input error (a one-line message naming the file; nothing is written) or when batch mode
wrote nothing.
"""
import argparse
import os
import sys
from typing import List, Optional

from ilat_ext.cli import (ArgumentParser, add_photo_arguments, add_sampling_arguments, check_photo_arguments,
                          check_sampling_arguments, report_missing, resolve_device, sampling_options)


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ilat-edit-face", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="logs/<run> of an iLAT (or Taming) transformer, or a checkpoint in it")
    p.add_argument("--image", help="the photo (JPEG, PNG, WebP, BMP, TIFF)")
    p.add_argument("--mask", help="the region to edit: white, or opaque on a transparent layer; any size with the "
                                  "photo's aspect ratio")
    p.add_argument("--strokes", help="the lines to follow inside the mask, dark on light or light on dark or a "
                                     "transparent layer; any size with the photo's aspect ratio")
    p.add_argument("--sketch", help="a complete condition sketch instead of XDoG + strokes")
    p.add_argument("--out", help="result image (the photo's size; see --model_size)")
    p.add_argument("--input_dir", help="batch mode: folder with images/, masks/, strokes/")
    p.add_argument("--out_dir", help="batch mode: output folder")
    p.add_argument("--batch_size", type=int, default=8, help="batch mode: images edited together (default 8)")
    p.add_argument("--taming", help="logs/<run> of a Taming baseline, for the Taming and Taming* grid columns")
    p.add_argument("--grid", nargs="?", const="", default=None,
                   help="write a labelled grid (a path; in batch mode a folder, default OUT/grids)")
    add_sampling_arguments(p)
    p.add_argument("--size", type=int, help="image side for the model (default: the run's training size)")
    add_photo_arguments(p)
    p.add_argument("--path", choices=("ilat", "release"), default=None,
                   help="a run converted from the authors' checkpoints (scripts/convert_release.py): ilat (ours: "
                        "leak-free encoder, LA mask, KV cache, Eq. 4; the default) or release (their computation, "
                        "token for token); the grid shows both")
    p.add_argument("--xdog", choices=("auto", "release", "resized", "toy"), default="auto",
                   help="how the sketch outside the mask is made (default: like the run's training data)")
    p.add_argument("--unsafe_load", action="store_true", help="allow full unpickling of the runs' checkpoints "
                                                             "(runs pickled code: trusted files only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_args(parser: argparse.ArgumentParser, args) -> None:
    batch = args.input_dir is not None
    if batch:
        if args.out_dir is None:
            parser.error("--input_dir needs --out_dir")
        given = [f"--{k}" for k in ("image", "mask", "strokes", "sketch", "out") if getattr(args, k) is not None]
        if given:
            parser.error(f"{', '.join(given)} cannot be used with --input_dir")
        if args.batch_size < 1:
            parser.error(f"--batch_size must be positive, got {args.batch_size}")
    else:
        missing = [f"--{k}" for k in ("image", "mask", "out") if getattr(args, k) is None]
        if missing:
            parser.error(f"missing {', '.join(missing)} (or use --input_dir/--out_dir)")
        if (args.strokes is None) == (args.sketch is None):
            parser.error("give exactly one of --strokes and --sketch")
        if args.grid == "":
            parser.error("--grid needs a path outside batch mode")
    if args.size is not None and args.size < 8:
        parser.error(f"--size must be >= 8, got {args.size}")
    check_sampling_arguments(parser, args)
    check_photo_arguments(parser, args)


def is_release_run(model) -> bool:
    """A run converted from the authors' checkpoints (their 514-position sequence)."""
    return bool(getattr(model, "input_last_token", False))


def _run_edit(edit, model, inputs, sampling, path):
    """The edit of a batch: `edit.edit_faces` (sample_local), or for a converted release run its
    `path` ("ilat" | "release", `ilat_ext.apps.release_edit.edit_tensors`) as an EditResult."""
    if not is_release_run(model):
        return edit.edit_faces(model, inputs.x, inputs.mask, inputs.sketch, **sampling)
    from ilat_ext.apps.release_edit import edit_tensors
    from ilat_ext.models.cond_transformer import EditResult

    out = edit_tensors(model, inputs.x, inputs.mask, inputs.sketch, path, **sampling)
    return EditResult(out.image, out.tokens, out.token_mask, out.steps)


def _columns(edit, inputs, ilat, taming, sampling, results, model=None, path="ilat"):
    """Grid columns for a batch of inputs: input | mask | sketch | [Taming | Taming*] | iLAT | [result];
    for a converted release run input | mask | sketch | release | iLAT | [result]."""
    import torch

    from ilat_ext.apps.image_io import uint8_to_tensor

    cols = {"input": inputs.x, "mask": inputs.mask * 2 - 1, "sketch": inputs.sketch}
    if taming is not None:
        cols["Taming"] = edit.edit_faces(taming, inputs.x, inputs.mask, inputs.sketch, "taming", **sampling).image.cpu()
        cols["Taming*"] = edit.edit_faces(taming, inputs.x, inputs.mask, inputs.sketch, **sampling).image.cpu()
    if model is not None and is_release_run(model):
        other = "release" if path == "ilat" else "ilat"
        both = {path: ilat, other: _run_edit(edit, model, inputs, sampling, other).image.cpu()}
        cols["release"] = both["release"]
        ilat = both["ilat"]
    cols["iLAT"] = ilat
    if results is not None:          # what the user gets: the result's region at the model's size
        size = inputs.x.shape[-1]
        cols["result"] = torch.cat([uint8_to_tensor(r.to_model(image, size))
                                    for image, r in zip(results, inputs.regions)])
    return cols


def _write_results(edit, args, inputs, result, outs: List[str], grids: List[Optional[str]], taming, sampling,
                   model=None):
    from ilat_ext.apps.image_io import labelled_grid, tensor_to_uint8, write_rgb

    results = None if args.model_size else edit.paste_results(inputs, result.image.cpu(), args.feather)
    images = tensor_to_uint8(result.image) if results is None else results
    for out, image in zip(outs, images):
        write_rgb(out, image)
    if any(g is not None for g in grids):
        cols = _columns(edit, inputs, result.image.cpu(), taming, sampling, results, model, args.path or "ilat")
        for i, grid in enumerate(grids):
            if grid is not None:
                labelled_grid({k: v[i:i + 1] for k, v in cols.items()}, grid)
    return images


def _read_options(edit, args, editor):
    return edit.ReadOptions(region=args.region, margin=args.margin, mask_threshold=args.mask_threshold,
                            strokes_polarity=args.strokes_polarity, max_pixels=args.max_pixels,
                            whole_images=editor.whole_images)


def _edit_one(edit, args, editor, taming, sampling) -> int:
    inputs = edit.prepare_inputs(args.image, args.mask, args.strokes, editor.size, editor.sketch_style, args.sketch,
                                 _read_options(edit, args, editor))
    for note in inputs.notes:
        print(note)
    result = _run_edit(edit, editor.model, inputs, sampling, args.path or "ilat")
    image = _write_results(edit, args, inputs, result, [args.out], [args.grid], taming, sampling, editor.model)[0]
    h, w = image.shape[:2]
    kept = ("the model's size" if args.model_size else
            "the source's size; every pixel outside the mask is the source's")
    print(f"Edited {int(result.token_mask.sum())} latent tokens in {result.steps} transformer steps: {args.out} "
          f"({w}x{h}, {kept})")
    if not args.model_size and os.path.splitext(args.out)[1].lower() in (".jpg", ".jpeg", ".webp"):
        print(f"Note: {args.out} is a lossy format: its pixels outside the mask are only close to the source's; "
              "write .png to keep them bit for bit")
    if args.grid:
        print(f"Grid: {args.grid}")
    return 0


def _edit_folder(edit, args, editor, taming, sampling) -> int:
    from tqdm.auto import tqdm

    triples, skipped = edit.list_edit_folder(args.input_dir)
    skipped["unreadable or unusable"] = []
    grid_dir = None if args.grid is None else (args.grid or os.path.join(args.out_dir, "grids"))
    options = _read_options(edit, args, editor)
    written = 0
    bar = tqdm(total=len(triples), desc="editing faces", unit="img", disable=args.quiet)
    for start in range(0, len(triples), args.batch_size):
        items, names = [], []
        for image, mask, strokes in triples[start:start + args.batch_size]:
            try:
                item = edit.prepare_inputs(image, mask, strokes, editor.size, editor.sketch_style, None, options)
            except (OSError, ValueError) as e:
                skipped["unreadable or unusable"].append(image)
                bar.write(f"skipping {image}: {e}")
                continue
            for note in item.notes:
                if note.startswith("warning"):
                    bar.write(note)
            items.append(item)
            names.append(os.path.splitext(os.path.basename(image))[0])
        if items:
            inputs = edit.EditInputs.stack(items)
            result = _run_edit(edit, editor.model, inputs, sampling, args.path or "ilat")
            outs = [os.path.join(args.out_dir, n + ".png") for n in names]
            grids = [None if grid_dir is None else os.path.join(grid_dir, n + ".png") for n in names]
            _write_results(edit, args, inputs, result, outs, grids, taming, sampling, editor.model)
            written += len(items)
        bar.update(len(triples[start:start + args.batch_size]))
    bar.close()
    counts = ", ".join(f"{len(v)} {k}" for k, v in skipped.items() if v)
    for reason in ("no mask", "no strokes", "not an image"):
        for path in skipped[reason]:
            print(f"skipped {path}: {reason}")
    print(f"{args.out_dir}: {written} edited" + (f"; skipped {counts}" if counts else ""))
    if written == 0:
        print(f"error: nothing edited from {args.input_dir!r}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    sampling = sampling_options(args)
    missing = report_missing(args, [(flag, "file") for flag in ("image", "mask", "strokes", "sketch")],
                             ("run", "taming"))
    if missing is not None:
        return missing
    from ilat_ext.apps.photo_io import InputError, check_headers

    try:     # sizes from the headers, before a model loads
        check_headers([(flag, getattr(args, flag)) for flag in ("image", "mask", "strokes", "sketch")],
                      args.max_pixels)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ilat_ext.apps import edit

    try:
        device = resolve_device(args.device)
        unsafe = args.unsafe_load or None
        editor = edit.load_editor(args.run, device, size=args.size, unsafe=unsafe)
        if args.xdog != "auto":
            editor.sketch_style = args.xdog
        taming = None
        if args.taming is not None:
            taming = edit.load_editor(args.taming, device, size=editor.size, baseline=True, unsafe=unsafe).model
        if args.path is not None and not is_release_run(editor.model):
            raise ValueError(f"--path {args.path}: run {args.run!r} is not converted from the authors' checkpoints "
                             "(scripts/convert_release.py); its own sampling is the ilat path")
        if is_release_run(editor.model):
            print(f"authors' release model, {args.path or 'ilat'} path" + (" (ours: leak-free, LA mask, KV cache)"
                                                                           if (args.path or "ilat") == "ilat" else
                                                                           " (their computation)"))
        print(f"{type(editor.model).__name__} at {editor.size} px on {device}; sketch outside the mask: "
              f"{editor.sketch_style} XDoG; {'greedy' if sampling['greedy'] else 'sampling'}")
        if args.input_dir is not None:
            return _edit_folder(edit, args, editor, taming, sampling)
        return _edit_one(edit, args, editor, taming, sampling)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
