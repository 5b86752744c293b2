"""Synthetic DeepFashion (SDF): DeepFashion people composited onto Places2 scenes, in pairs.

iLAT (Cao et al., NeurIPS 2021), Sec. 4: "the SDF is synthesized with DeepFashion images as
foregrounds and Places2 images as backgrounds. Since only a few images of DeepFashion have
related exact segmentation masks, we select 4,500/285 pairs from it for training and testing
respectively. Each pair of them contains two images of the same person with different poses and
randomly chosen backgrounds." The authors never released the builder; `build_sdf` is ours.

Inputs (local folders; nothing is downloaded)
- deepfashion: person images anywhere below it (.jpg/.png/...). The person of an image is its
  folder relative to `deepfashion` (DeepFashion In-shop: `img/WOMEN/Dresses/id_00000002/
  02_1_front.jpg` -> person `img/WOMEN/Dresses/id_00000002`): same folder = same person.
- segmentation: one mask per image at the same relative path with the extension replaced by
  `.png` (`.../id_00000002/02_1_front.png`; `..._segm.png` is accepted too). Grayscale, nonzero =
  person. Images without a mask are skipped and counted.
- keypoints: one file mapping relative image paths (with their extension, '/' separators) to 13
  joints in Penn Action's order (`ilat_ext.data.pose.JOINT_NAMES`), [x, y, visibility] in the
  original image's pixels (origin at the top-left corner; visibility 0/1, > 0 = visible).
    JSON: {"img/WOMEN/Dresses/id_00000002/02_1_front.jpg": [[x, y, v], ... 13 ...], ...}
          (a value may also be {"joints": [...]}).
    CSV:  one row per image, `path,x1,y1,v1,...,x13,y13,v13` (40 columns; a header row whose
          first cell is "path" is skipped). Empty x/y cells are allowed for invisible joints.
  Images without keypoints, or whose keypoints have no visible joint inside the image, are
  skipped and counted; visible joints outside the image are hidden and counted.
  (DeepFashion's 18 OpenPose/COCO keypoints convert with `openpose18_to_penn13`.)
- places: background images anywhere below it (Places2 or any scene photos).

Output layout::

    output/train/000000/cond.png, target.png          RGB, size x size
                        cond_mask.png, target_mask.png the composited person (0/255)
                        cond_pose.json, target_pose.json  {"joints": [[x, y, v] x 13], "height",
                            "width", "person", "source", "image_index", "background"}
    output/test/000000/...
    output/train.flist, output/test.flist              one pair folder per line ("train/000000")
    output/meta.json                                   settings, counts, persons per split

Each pair: one person, two distinct images of them (which one is the condition is random), one
background (centre-cropped and resized to size x size) and one placement: each image is scaled so
that it is `person_scale` x size tall (random in [0.75, 1.0] per pair) and put at the same random
relative position, so the two frames differ only inside the person. Persons are split by id
(test persons are never in train, `n_test / (n_train + n_test)` of the persons, at least one),
backgrounds likewise (shared when there is only one); pairs are drawn with replacement of
persons, two distinct images each.
Everything is a function of the inputs and `seed`.
"""
import csv
import json
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ilat_ext.data.checks import check_item_index
from ilat_ext.data.folder import find_images, read_flist, read_rgb
from ilat_ext.data.penn_action import read_frame
from ilat_ext.data.pose import (
    check_choice, load_pose_json, make_pair_item, pose_from_list, resize_image, resize_pose, save_pose_json, scale_pose,
)
from ilat_ext.pose_geometry import NUM_JOINTS, check_mask_kwargs, clean_pose

SPLITS = ("train", "test")
_STREAM_TAG = 0x5DF0
PERSON_SCALE = (0.75, 1.0)
# Penn Action joint <- OpenPose COCO-18 index (0 nose, 2/5 r/l shoulder, 3/6 elbows, 4/7 wrists,
# 8/11 r/l hip, 9/12 knees, 10/13 ankles); Penn's "head" takes the nose.
OPENPOSE18_TO_PENN13 = (0, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)


# ------------------------------------------------------------------------------------- inputs


def openpose18_to_penn13(xs, ys) -> np.ndarray:
    """(13, 3) [x, y, visibility] from 18 OpenPose/COCO-18 x and y lists (-1 = missing),
    as in the DeepFashion pose annotations of PATN and others."""
    xs, ys = np.asarray(xs, np.float64).reshape(-1), np.asarray(ys, np.float64).reshape(-1)
    if xs.shape != (18,) or ys.shape != (18,):
        raise ValueError(f"expected 18 x and 18 y values, got {xs.shape} and {ys.shape}")
    idx = list(OPENPOSE18_TO_PENN13)
    x, y = xs[idx], ys[idx]
    vis = ((x >= 0) & (y >= 0)).astype(np.float64)
    return np.stack([np.where(vis > 0, x, 0), np.where(vis > 0, y, 0), vis], axis=1)


def _rel(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def read_keypoints(path: str) -> Dict[str, np.ndarray]:
    """{relative image path: float64 (13, 3) raw [x, y, visibility]} from a JSON or CSV file
    (module docstring). Raises FileNotFoundError / ValueError naming the file and the entry."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"keypoints file not found: {path!r}")
    out: Dict[str, np.ndarray] = {}
    if path.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"keypoints file {path!r} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"keypoints file {path!r} must hold an object {{image path: joints}}")
        for key, joints in data.items():
            if isinstance(joints, dict):
                joints = joints.get("joints")
            array = pose_from_list(joints, name=f"keypoints of {key!r} in {path!r}")
            out[_rel(key)] = array
    elif path.lower().endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for line_no, row in enumerate(csv.reader(f), 1):
                if not row or (line_no == 1 and row[0].strip().lower() == "path"):
                    continue
                if len(row) != 1 + 3 * NUM_JOINTS:
                    raise ValueError(f"keypoints file {path!r} line {line_no}: expected {1 + 3 * NUM_JOINTS} "
                                     f"columns (path, then x, y, v for 13 joints), got {len(row)}")
                try:
                    values = [float(v) if v.strip() else np.nan for v in row[1:]]
                except ValueError:
                    raise ValueError(f"keypoints file {path!r} line {line_no}: non-numeric value") from None
                out[_rel(row[0].strip())] = np.asarray(values, np.float64).reshape(NUM_JOINTS, 3)
    else:
        raise ValueError(f"keypoints file {path!r} must end in .json or .csv")
    return out


def find_mask(segmentation: str, rel: str) -> Optional[str]:
    """The segmentation mask of relative image path `rel`, or None (module docstring)."""
    stem = os.path.splitext(rel)[0]
    for candidate in (stem + ".png", stem + "_segm.png", rel):
        path = os.path.join(segmentation, *candidate.split("/"))
        if os.path.isfile(path):
            return path
    return None


def read_person_mask(path: str, height: int, width: int) -> Optional[np.ndarray]:
    """float32 (height, width) {0, 1}, nonzero = person (nearest resize if sizes differ); None if
    unreadable or empty."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
        mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    except (OSError, ValueError, cv2.error):
        return None
    if mask is None or not mask.any():
        return None
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return (mask > 0).astype(np.float32)


def composite(person: np.ndarray, mask: np.ndarray, pose, background: np.ndarray, scale: float,
              rel_x: float, rel_y: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste a person onto a square background: (uint8 (S, S, 3), uint8 (S, S) mask 0/255,
    pose in output pixels).

    The person image (h, w) is resized by f = scale * S / h and its top-left corner put at
    (rel_x * (S - w f), rel_y * (S - h f)) (may be negative when wider than S); alpha = the
    resized mask (INTER_LINEAR, so edges blend). Joints follow: (x f + left, y f + top)."""
    size = background.shape[0]
    h, w = person.shape[:2]
    f = scale * size / h
    nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    left, top = int(round(rel_x * (size - nw))), int(round(rel_y * (size - nh)))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    small = cv2.resize(person, (nw, nh), interpolation=interp).astype(np.float32)
    alpha = np.clip(cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_LINEAR), 0, 1)[..., None]
    out = background.astype(np.float32).copy()
    placed = np.zeros((size, size), np.float32)
    # Intersection of the pasted rectangle with the canvas.
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + nw, size), min(top + nh, size)
    if x1 > x0 and y1 > y0:
        a = alpha[y0 - top:y1 - top, x0 - left:x1 - left]
        p = small[y0 - top:y1 - top, x0 - left:x1 - left]
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a) + p * a
        placed[y0:y1, x0:x1] = a[..., 0]
    moved = scale_pose(pose, nw / w, nh / h, left, top)
    return np.clip(out, 0, 255).round().astype(np.uint8), (placed > 0).astype(np.uint8) * 255, moved


# -------------------------------------------------------------------------------------- builder


def scan_people(deepfashion: str, segmentation: str, keypoints: Mapping[str, np.ndarray]
                ) -> Tuple[Dict[str, List[str]], Dict[str, int]]:
    """({person: sorted relative image paths with a mask and keypoints}, counts)."""
    if not os.path.isdir(segmentation):
        raise FileNotFoundError(f"segmentation folder not found: {segmentation!r}")
    images = find_images(deepfashion, "DeepFashion image folder")
    counts = {"images": len(images), "no_mask": 0, "no_keypoints": 0}
    people: Dict[str, List[str]] = {}
    for path in images:
        rel = os.path.relpath(path, deepfashion).replace(os.sep, "/")
        if find_mask(segmentation, rel) is None:
            counts["no_mask"] += 1
            continue
        if rel not in keypoints:
            counts["no_keypoints"] += 1
            continue
        people.setdefault(os.path.dirname(rel), []).append(rel)
    return people, counts


def build_sdf(deepfashion: str, segmentation: str, keypoints: str, places: str, output: str, n_train: int = 4500,
              n_test: int = 285, size: int = 256, seed: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Build SDF under `output` (module docstring); returns the summary also written to meta.json.

    Raises FileNotFoundError naming a missing input folder or file; ValueError when fewer than two
    persons have two usable images, or when the output folder already holds a build."""
    deepfashion, segmentation, places, output = (os.fspath(p) for p in (deepfashion, segmentation, places, output))
    for what, value in (("n_train", n_train), ("n_test", n_test), ("size", size), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < (0 if what == "seed" else 1):
            kind = "non-negative" if what == "seed" else "positive"
            raise ValueError(f"{what} must be a {kind} integer, got {value!r}")
    if not os.path.isdir(deepfashion):
        raise FileNotFoundError(f"DeepFashion image folder not found: {deepfashion!r}")
    if not os.path.isdir(places):
        raise FileNotFoundError(f"Places background folder not found: {places!r}")
    if os.path.exists(os.path.join(output, "meta.json")):
        raise ValueError(f"output folder {output!r} already holds a build (meta.json); choose an empty folder")
    joints = read_keypoints(keypoints)
    people, counts = scan_people(deepfashion, segmentation, joints)
    backgrounds = find_images(places, "Places background folder")
    counts.update(unreadable_images=0, unreadable_masks=0, bad_keypoints=0, hidden_joints=0,
                  unreadable_backgrounds=0, persons_with_one_image=0)

    rng = np.random.default_rng([_STREAM_TAG, int(seed)])
    usable = {k: v for k, v in people.items() if len(v) >= 2}
    counts["persons_with_one_image"] = len(people) - len(usable)
    ids = sorted(usable)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 persons with 2 usable images (mask and keypoints), found {len(ids)} "
                         f"({counts})")
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_test_ids = min(len(ids) - 1, max(1, round(len(ids) * n_test / (n_train + n_test))))
    split_ids = {"test": sorted(order[:n_test_ids]), "train": sorted(order[n_test_ids:])}
    bg_order = [backgrounds[i] for i in rng.permutation(len(backgrounds))]
    n_test_bg = min(len(bg_order) - 1, max(1, round(len(bg_order) * n_test / (n_train + n_test))))
    split_bg = {"test": bg_order[:n_test_bg], "train": bg_order[n_test_bg:]} if len(bg_order) > 1 else \
        {"test": bg_order, "train": bg_order}

    bad = set()  # relative image paths found unusable while building
    bad_bg = set()
    cache: Dict[str, Any] = {}

    def load_person(rel: str):
        if rel in cache:
            return cache[rel]
        result = None
        image = read_frame(os.path.join(deepfashion, *rel.split("/")))
        if image is None:
            counts["unreadable_images"] += 1
        else:
            mask = read_person_mask(find_mask(segmentation, rel), *image.shape[:2])
            if mask is None:
                counts["unreadable_masks"] += 1
            else:
                pose, hidden = clean_pose(joints[rel], *image.shape[:2], name=f"keypoints of {rel!r}")
                if not (pose[:, 2] > 0).any():
                    counts["bad_keypoints"] += 1
                else:
                    counts["hidden_joints"] += hidden
                    result = (image, mask, pose)
        if result is None:
            bad.add(rel)
        if len(cache) > 256:
            cache.clear()
        cache[rel] = result
        return result

    summary_pairs = {}
    os.makedirs(output, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        names = []
        bar = tqdm(total=n, desc=f"SDF {split}", disable=not progress)
        attempts = 0
        while len(names) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise RuntimeError(f"SDF: could only build {len(names)} of {n} {split} pairs ({counts})")
            person = split_ids[split][int(rng.integers(len(split_ids[split])))]
            candidates = [r for r in usable[person] if r not in bad]
            bg_choices = [b for b in split_bg[split] if b not in bad_bg]
            if not bg_choices:
                raise RuntimeError(f"SDF: no readable {split} background under {places!r}")
            background_path = bg_choices[int(rng.integers(len(bg_choices)))]
            scale, rel_x, rel_y = rng.uniform(*PERSON_SCALE), rng.random(), rng.random()
            if len(candidates) < 2:
                continue
            a, b = (candidates[i] for i in rng.choice(len(candidates), size=2, replace=False))
            loaded_a, loaded_b = load_person(a), load_person(b)
            if loaded_a is None or loaded_b is None:
                continue
            background = read_rgb(background_path, size)
            if background is None:
                bad_bg.add(background_path)
                counts["unreadable_backgrounds"] += 1
                continue
            name = f"{split}/{len(names):06d}"
            folder = os.path.join(output, split, f"{len(names):06d}")
            os.makedirs(folder, exist_ok=True)
            for role, rel in (("cond", a), ("target", b)):
                image, mask, pose = loaded_a if rel == a else loaded_b
                out, placed, moved = composite(image, mask, pose, background, scale, rel_x, rel_y)
                moved, hidden = clean_pose(moved, size, size)  # joints pasted off the canvas
                counts["hidden_joints"] += hidden
                cv2.imwrite(os.path.join(folder, f"{role}.png"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
                cv2.imwrite(os.path.join(folder, f"{role}_mask.png"), placed)
                save_pose_json(os.path.join(folder, f"{role}_pose.json"), moved, size, size, person=person,
                               source=rel, image_index=usable[person].index(rel),
                               background=os.path.relpath(background_path, places).replace(os.sep, "/"))
            names.append(name)
            bar.update(1)
        bar.close()
        with open(os.path.join(output, f"{split}.flist"), "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
        summary_pairs[split] = len(names)
    summary = {
        "pairs": summary_pairs,
        "persons": {s: len(v) for s, v in split_ids.items()},
        "backgrounds": {s: len(v) for s, v in split_bg.items()},
        "skipped": counts,
        "settings": {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed,
                     "person_scale": list(PERSON_SCALE)},
        "split_persons": split_ids,
    }
    with open(os.path.join(output, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary


# -------------------------------------------------------------------------------------- dataset


class SDFPairs(torch.utils.data.Dataset):
    """Pairs of a `build_sdf` output, with `PennAction`'s item keys.

    Items: "image", "cond_image" float32 (S, S, 3) in [-1, 1]; "pose", "cond_pose" (13, 3)
    normalised; "pose_px", "cond_pose_px" (13, 3) in pixels of the S x S image; "mask" float32
    (S, S, 1) = pair_mask(cond, target); optional skeletons; "video" = the person id (str);
    "frames" = int64 [cond, target] indices of the source images within the person's images;
    "pair" = the pair folder ("train/000012"); "index".

    Images are resized (plainly; they are square) when `size` differs from the build's. A pair
    that cannot be read is skipped (the next one is returned) and counted in `skipped`, with a
    warning naming it.
    """

    def __init__(self, root: str, split: str = "train", size: int = 256,
                 mask_kwargs: Optional[Mapping[str, Any]] = None, skeletons: bool = False):
        super().__init__()
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"SDF folder not found: {self.root!r}")
        self.split = check_choice("split", split, SPLITS)
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        self.size = int(size)
        self.mask_kwargs = check_mask_kwargs(mask_kwargs)
        self.skeletons = bool(skeletons)
        self.pairs = read_flist(os.path.join(self.root, f"{split}.flist"), f"SDF {split} list", base=self.root)
        self.skipped = 0
        self.unreadable: List[str] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, folder: str, role: str):
        image = read_frame(os.path.join(folder, f"{role}.png"))
        if image is None:
            return None
        height, width = image.shape[:2]
        path = os.path.join(folder, f"{role}_pose.json")
        try:
            pose = load_pose_json(path, height, width)
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            return None
        return (resize_image(image, self.size, "stretch"), resize_pose(pose, height, width, self.size, "stretch"),
                info)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = check_item_index(index, len(self), "SDFPairs")
        for offset in range(len(self)):
            folder = self.pairs[(index + offset) % len(self)]
            cond, target = self._load(folder, "cond"), self._load(folder, "target")
            if cond is not None and target is not None:
                break
            self.skipped += 1
            self.unreadable.append(folder)
            warnings.warn(f"SDFPairs: skipped unreadable pair {folder!r} ({self.skipped} skipped so far)",
                          RuntimeWarning, stacklevel=2)
        else:
            raise RuntimeError(f"SDFPairs: none of the {len(self)} pairs under {self.root!r} could be read")
        item = make_pair_item(cond[0], target[0], cond[1], target[1], self.mask_kwargs, self.skeletons)
        item.update(video=str(target[2].get("person", "")),
                    frames=np.array([cond[2].get("image_index", -1), target[2].get("image_index", -1)], np.int64),
                    pair=os.path.relpath(folder, self.root).replace(os.sep, "/"), index=index)
        return item

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, size={self.size}; {len(self)} pairs)"
