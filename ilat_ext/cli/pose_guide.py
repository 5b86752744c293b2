"""Pose-guided person synthesis with a trained iLAT pose run (paper Sec. 3.3, Fig. 6): `ilat-pose-guide`.

    python scripts/pose_guide.py --run logs/<pose run> --image ref.png --ref_pose ref.json \
        --target_pose target.json --out out.png [--grid grid.png] [--baseline logs/<taming pose run>] \
        [--model_size [--paste_back]] [--feather PX] [--top_k K] [--temperature T] [--seed S] [--device cpu|cuda]
    python scripts/pose_guide.py --run logs/<pose run> --image ref.png --ref_label video.mat --ref_frame 1 \
        --target_label video.mat --target_frame 30 --out out.png
    python scripts/pose_guide.py --run logs/<pose run> --image ref.png --ref_pose ref.json \
        --target_poses poses.json --out_dir DIR [--batch_size 8] [--fps 4]
    python scripts/pose_guide.py --run logs/<pose run> --image ref.png --ref_label video.mat --ref_frame 1 \
        --target_label video.mat --frames 1:40:4 --out_dir DIR

The reference photo (any size and common format, `ilat_ext.apps.photo_io`) is resized to the run's
square training size ("stretch", or "pad" when the run's data padded); its pose and the target
poses, given in the ORIGINAL photo's pixels, are moved the same way. A pose is a JSON file of 13 [x, y, visibility] in Penn Action's joint order (or
{"joints": [...]}), or a frame (1-based) of a Penn Action .mat label file. The region regenerated
is the union of the reference pose's and the target pose's masks; outside it the reference is kept
(Eq. 4). Greedy decoding unless --top_k, --temperature, --seed or --no_greedy asks for sampling.

Outputs have the reference photo's resolution: the synthesis, moved back onto the photo, blended in
inside the union mask only (over --feather photo pixels inside its edge, default one model pixel),
so every pixel outside the mask is the photo's, bit for bit. --model_size writes the model's output
at its own size instead (whose background is the autoencoder's reconstruction, Eq. 4), and with
--paste_back puts it back into the resized reference at that size.

Single image: --out gets the synthesis; --grid adds reference + its skeleton | target skeleton |
mask | [Taming (with --baseline, its edit)] | iLAT (the decode) | result (what --out holds, at the
model's size). Sequence (--target_poses: a JSON list of poses
or {"poses": [...]}, or --target_label with --frames START:STOP[:STEP], STOP included): --out_dir
gets frame_000.png ..., sequence.gif, sequence.mp4 (skipped with a message when OpenCV cannot
write mp4v) and strip.png (odd rows the frames, even rows their poses; the reference first).
The summary line gives the PSNR outside the mask of the model's output against the reference
(the written files are the photo's own pixels there).
Exit code 0 on success, 2 on a usage or input error (the message names the problem).
(`python scripts/pose_guide.py ...` runs the same.)
"""
import argparse
import os
import sys

import numpy as np

from ilat_ext.cli import (ArgumentParser, add_photo_arguments, add_sampling_arguments, check_photo_arguments,
                          check_sampling_arguments, report_missing, resolve_device, sampling_options)


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ilat-pose-guide", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="logs/<run> of a pose iLAT run (PoseILATTransformer), or a checkpoint")
    p.add_argument("--image", required=True, help="reference image of the person")
    p.add_argument("--ref_pose", help="JSON pose of the reference, in the image's pixels")
    p.add_argument("--ref_label", help="Penn Action .mat label file holding the reference pose")
    p.add_argument("--ref_frame", type=int, help="1-based frame of --ref_label")
    p.add_argument("--target_pose", help="JSON target pose (single image)")
    p.add_argument("--target_poses", help="JSON list of target poses (sequence)")
    p.add_argument("--target_label", help="Penn Action .mat label file of the target pose(s)")
    p.add_argument("--target_frame", type=int, help="1-based frame of --target_label (single image)")
    p.add_argument("--frames", help="frames of --target_label (sequence): START:STOP[:STEP] (1-based, STOP included) "
                                    "or A,B,C")
    p.add_argument("--out", help="single image: the synthesis (the model's size)")
    p.add_argument("--grid", help="single image: a labelled grid")
    p.add_argument("--baseline", help="logs/<run> of the vanilla-AR pose baseline (lm_rate 1), for the grid")
    p.add_argument("--out_dir", help="sequence: output folder")
    p.add_argument("--batch_size", type=int, default=8, help="sequence: poses synthesised together (default 8)")
    p.add_argument("--fps", type=float, default=4.0, help="sequence: frames per second of the GIF and MP4")
    p.add_argument("--per_row", type=int, default=8, help="sequence: frames per row of the strip (default 8)")
    add_sampling_arguments(p)
    add_photo_arguments(p, masks=False)
    p.add_argument("--paste_back", action="store_true",
                   help="with --model_size: put the model-size synthesis back into the resized reference (its own "
                        "pixels outside the mask; --feather default 2 there)")
    p.add_argument("--unsafe_load", action="store_true", help="allow full unpickling of the runs' checkpoints "
                                                             "(runs pickled code: trusted files only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_args(parser: argparse.ArgumentParser, args) -> bool:
    """Usage errors (exit 2 through argparse); returns True for a sequence."""
    if (args.ref_pose is None) == (args.ref_label is None):
        parser.error("give exactly one of --ref_pose and --ref_label")
    if (args.ref_label is None) != (args.ref_frame is None):
        parser.error("--ref_label and --ref_frame go together")
    sources = [f for f in ("target_pose", "target_poses", "target_label") if getattr(args, f) is not None]
    if len(sources) != 1:
        parser.error("give exactly one of --target_pose, --target_poses and --target_label")
    if args.target_label is not None and (args.target_frame is None) == (args.frames is None):
        parser.error("--target_label needs exactly one of --target_frame (single image) and --frames (sequence)")
    if args.target_label is None and (args.target_frame is not None or args.frames is not None):
        parser.error("--target_frame and --frames need --target_label")
    sequence = args.target_poses is not None or args.frames is not None
    if sequence:
        if args.out_dir is None:
            parser.error("a sequence of target poses needs --out_dir")
        given = [f"--{k}" for k in ("out", "grid", "baseline") if getattr(args, k) is not None]
        if given:
            parser.error(f"{', '.join(given)} cannot be used with a sequence (--out_dir)")
    else:
        if args.out is None:
            parser.error("a single target pose needs --out")
        if args.out_dir is not None:
            parser.error("--out_dir is for a sequence (--target_poses or --frames)")
        if args.baseline is not None and args.grid is None:
            parser.error("--baseline is shown in the grid: give --grid")
    for flag in ("batch_size", "per_row"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    if not args.fps > 0:
        parser.error(f"--fps must be positive, got {args.fps}")
    check_sampling_arguments(parser, args)
    check_photo_arguments(parser, args)
    if args.paste_back and not args.model_size:
        parser.error("--paste_back is for --model_size outputs (the default output is already pasted into the photo)")
    return sequence


def _psnr_summary(values, model_size: bool = False, pasted: bool = False) -> str:
    values = [float(v) for v in values]
    if len(values) == 1:
        text = f"PSNR outside the mask {values[0]:.2f} dB"
    else:
        text = (f"PSNR outside the mask {', '.join(f'{v:.2f}' for v in values)} dB "
                f"(mean {sum(values) / len(values):.2f})")
    if not model_size:
        return f"the photo's own pixels outside the mask (the model's output: {text})"
    if pasted:
        return f"pasted back into the reference, its own pixels outside the mask (the model's output: {text})"
    return f"the model's output: {text}"


def _finish(pg, args, frames, reference, masks, photo, resize):
    """(the images as written, uint8 (N, H, W, 3); the same at the model's size, for grids and the
    strip; the model's PSNR outside the mask)."""
    from ilat_ext.apps.image_io import tensor_to_uint8
    from ilat_ext.data.pose import resize_image

    psnr = pg.outside_psnr(frames, reference, masks)
    if args.model_size:
        if args.paste_back:
            frames = pg.blend_into_reference(frames, reference, masks, 2.0 if args.feather is None else args.feather)
        images = tensor_to_uint8(frames)
        return images, images, psnr
    images, _ = pg.paste_into_photo(frames, photo.rgb, masks, resize, args.feather)
    size = frames.shape[-1]
    return images, np.stack([resize_image(i, size, resize) for i in images]), psnr


def _target_poses(pg, args, sequence: bool, height: int, width: int):
    """The target poses in the original image's pixels, as a list."""
    if args.target_pose is not None:
        return [pg.read_pose(args.target_pose, height, width)]
    if args.target_poses is not None:
        return pg.read_pose_list(args.target_poses, height, width)
    poses = pg.label_poses(args.target_label)
    frames = pg.parse_frames(args.frames, len(poses)) if sequence else [args.target_frame]
    return [pg.label_pose(poses, k, height, width, args.target_label) for k in frames]


def _single(pg, args, run, baseline, reference, photo, ref, targets, sampling) -> int:
    from ilat_ext.apps.image_io import labelled_grid, tensor_to_uint8, uint8_to_tensor, write_rgb

    frames, masks = pg.synthesize_sequence(run.model, reference, ref, targets, **sampling)
    images, shown, psnr = _finish(pg, args, frames, reference, masks, photo, run.resize)
    write_rgb(args.out, images[0])
    if args.grid is not None:
        cols = {"reference": uint8_to_tensor(pg.skeleton_overlay(tensor_to_uint8(reference)[0], ref)),
                "target pose": uint8_to_tensor(pg.skeleton_images(targets, run.size, run.size)),
                "mask": masks * 2 - 1}
        if getattr(run.model, "warp_reference", False):   # what the model is conditioned on
            cols["warped reference"] = run.model.condition_image_px(reference, ref, targets).float().cpu()
        if baseline is not None:
            taming, _ = pg.synthesize_sequence(baseline, reference, ref, targets, mode="edit", **sampling)
            cols["Taming"] = taming
        cols["iLAT"] = frames
        if not args.model_size or args.paste_back:
            cols["result"] = uint8_to_tensor(shown)
        labelled_grid(cols, args.grid)
    h, w = images.shape[1:3]
    print(f"Synthesised {w}x{h}: {args.out}; {_psnr_summary(psnr, args.model_size, args.paste_back)}"
          + (f"; grid: {args.grid}" if args.grid else ""))
    return 0


def _sequence(pg, args, run, reference, photo, ref, targets, sampling) -> int:
    from ilat_ext.apps.image_io import tensor_to_uint8, write_gif, write_mp4, write_rgb

    os.makedirs(args.out_dir, exist_ok=True)
    frames, masks = pg.synthesize_sequence(run.model, reference, ref, targets, batch_size=args.batch_size,
                                           show_progress=not args.quiet, **sampling)
    images, shown, psnr = _finish(pg, args, frames, reference, masks, photo, run.resize)
    for k, image in enumerate(images):
        write_rgb(os.path.join(args.out_dir, f"frame_{k:03d}.png"), image)
    gif = os.path.join(args.out_dir, "sequence.gif")
    write_gif(gif, images, fps=args.fps)
    mp4 = os.path.join(args.out_dir, "sequence.mp4")
    if not write_mp4(mp4, images, fps=args.fps):
        print(f"Note: OpenCV cannot open an mp4v writer for {mp4!r} (no codec in this build); skipped the MP4, "
              f"the GIF is {gif}")
        mp4 = None
    strip = os.path.join(args.out_dir, "strip.png")
    pg.write_strip(strip, shown, targets, per_row=args.per_row, reference=tensor_to_uint8(reference)[0],
                   ref_pose=ref)
    h, w = images.shape[1:3]
    print(f"Synthesised {len(images)} frames of {w}x{h} in {args.out_dir}: frame_000.png.."
          f"frame_{len(images) - 1:03d}.png, sequence.gif{', sequence.mp4' if mp4 else ''}, strip.png; "
          f"{_psnr_summary(psnr, args.model_size, args.paste_back)}")
    return 0


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    sequence = _check_args(parser, args)
    missing = report_missing(args, (("image", "file"), ("ref_pose", "file"), ("ref_label", "label file"),
                                    ("target_pose", "file"), ("target_poses", "file"), ("target_label", "label file")),
                             ("run", "baseline"))
    if missing is not None:
        return missing
    from ilat_ext.apps.photo_io import InputError, check_headers

    try:     # the reference's size from its header, before a model loads
        check_headers([("reference image", args.image)], args.max_pixels)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ilat_ext.apps import pose_guide as pg
    from ilat_ext.data.pose import resize_pose

    sampling = sampling_options(args)
    try:
        device = resolve_device(args.device)
        unsafe = args.unsafe_load or None
        run = pg.load_pose_model(args.run, device, unsafe=unsafe)
        baseline = (None if args.baseline is None
                    else pg.load_pose_model(args.baseline, device, baseline=True, unsafe=unsafe))
        if baseline is not None and baseline.size != run.size:
            raise ValueError(f"baseline run {args.baseline!r} takes {baseline.size}-px images, {args.run!r} "
                             f"{run.size}-px ones")
        reference, photo = pg.read_reference(args.image, run.size, run.resize, args.max_pixels)
        for note in photo.notes:
            print(note)
        h, w = photo.shape
        source = args.ref_pose if args.ref_pose is not None else (args.ref_label, args.ref_frame)
        to_model = lambda pose: resize_pose(pose, h, w, run.size, run.resize)  # noqa: E731
        ref = to_model(pg.read_pose(source, h, w))
        targets = [to_model(p) for p in _target_poses(pg, args, sequence, h, w)]
        print(f"{type(run.model).__name__} (lm_rate {run.model.lm_rate}) at {run.size} px ({run.resize}) on "
              f"{device}; {len(targets)} target pose(s); {'greedy' if sampling['greedy'] else 'sampling'}")
        if sequence:
            return _sequence(pg, args, run, reference, photo, ref, targets, sampling)
        return _single(pg, args, run, None if baseline is None else baseline.model, reference, photo, ref, targets,
                       sampling)
    except (OSError, ValueError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
