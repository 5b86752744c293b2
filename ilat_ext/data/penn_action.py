"""Penn Action pairs for pose-guided person synthesis (iLAT paper, Sec. 3.3 and Sec. 4).

Penn Action (Zhang, Zhu and Derpanis, ICCV 2013): 2,326 videos of 15 actions, 13 joints per frame
(`ilat_ext.data.pose.JOINT_NAMES`). The paper resizes frames to 256 x 256, "randomly gather[s]
pairs of the same video sequence in the training phase dynamically and select[s] 1,000 testing
pairs in the remaining videos"; the region to regenerate is the union of the two poses' dilated
masks (`pair_mask`).

Layout read (the public release)::

    root/frames/<video>/000001.jpg, 000002.jpg, ...   frame k (0-based) is f"{k + 1:06d}.jpg"
    root/labels/<video>.mat                            one MATLAB struct per video

Label fields used (scipy.io.loadmat(squeeze_me=True)): x, y (nframes, 13) pixel coordinates,
visibility (nframes, 13) logical, train (1 = train video, -1 = test video). Others (action, pose,
bbox, dimensions, nframes) are not needed. A one-frame video's (13,) rows are reshaped to (1, 13).
Coordinates are taken as-is as continuous pixel positions (origin at the image's top-left corner).

Resize policy (`resize`): "stretch" (default; the paper's "resized into 256 x 256") resizes the
frame to size x size without keeping its aspect ratio and maps joints by x * size / width,
y * size / height; "pad" pads the short side with black to a centred square first. Joints go
through exactly the transform the pixels go through (`ilat_ext.data.pose.square_resize_params`).
Visible joints that fall outside their frame are hidden (`clean_pose`) and counted in
`hidden_joints`.

Pairs
- train: item i is (video, target frame) number i over the usable frames of the train videos
  (wrapping when `length` is larger); the condition frame is another usable frame of the same
  video, drawn per call from a generator seeded by torch's RNG (so DataLoader workers and
  `seed_everything(workers=True)` give independent, reproducible draws).
- test: a fixed list of `n_test_pairs` (video, cond frame, target frame), drawn with
  `np.random.default_rng([_STREAM_TAG, seed])` from the test videos (each pair: a video uniformly,
  then two distinct frames); the same list on every construction with the same files and seed.

A frame is usable when its label row has at least one visible joint and its jpg exists. Videos
whose label file cannot be read or parsed are skipped at construction, named in one warning (with
the first file's reason) and listed in `bad_labels` (`label_errors` says why for each); videos with
fewer than two usable frames are listed in `skipped_videos`.
A frame that cannot be decoded at __getitem__ is recorded in `unreadable_frames` (distinct, in this
process), counted in `skipped_pairs`, and another pair is returned (train: a random one; test:
the next one in the list): never a crash mid-epoch.
"""
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import cv2
import numpy as np
import scipy.io
import torch

from ilat_ext.data.checks import check_item_index
from ilat_ext.data.pose import RESIZE_MODES, check_choice, make_pair_item, resize_image, resize_pose
from ilat_ext.pose_geometry import NUM_JOINTS, check_mask_kwargs, clean_pose

SPLITS = ("train", "test")
_STREAM_TAG = 0x7E11  # keeps the test-pair stream apart from other seeded generators


# --------------------------------------------------------------------------------------- helpers


def frame_name(frame: int) -> str:
    """File name of 0-based frame `frame`: 000001.jpg for frame 0."""
    return f"{int(frame) + 1:06d}.jpg"


def read_label(path: str) -> Dict[str, Any]:
    """{"poses": float64 (nframes, 13, 3) [x, y, visibility], "train": bool} from a Penn Action .mat.

    Raises ValueError naming the file and the problem (unreadable, missing field, bad shape)."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises many types on corrupt files
        raise ValueError(f"cannot read label file {path!r}: {type(e).__name__}: {e}") from None
    missing = [k for k in ("x", "y", "visibility", "train") if k not in mat]
    if missing:
        raise ValueError(f"label file {path!r} lacks the fields {missing}")
    arrays = []
    for key in ("x", "y", "visibility"):
        try:
            a = np.asarray(mat[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"label file {path!r}: field {key!r} is not numeric") from None
        if a.size == 0 or a.size % NUM_JOINTS:
            raise ValueError(f"label file {path!r}: field {key!r} has shape {a.shape}, expected (nframes, 13)")
        arrays.append(a.reshape(-1, NUM_JOINTS))
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"label file {path!r}: x, y, visibility differ in shape: {[a.shape for a in arrays]}")
    try:
        train = int(np.asarray(mat["train"]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"label file {path!r}: field 'train' is not 1 or -1: {mat['train']!r}") from None
    if train not in (1, -1):
        raise ValueError(f"label file {path!r}: field 'train' is {train}, expected 1 (train) or -1 (test)")
    return {"poses": np.stack(arrays, axis=-1), "train": train == 1}


def read_frame(path: str) -> Optional[np.ndarray]:
    """uint8 (H, W, 3) RGB, or None if the file cannot be read or decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, ValueError, cv2.error):
        return None
    if image is None or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------- dataset


class PennAction(torch.utils.data.Dataset):
    """Pairs of frames of a Penn Action video (module docstring for files, pairs and skipping).

    Items are dicts (S = size):
        "image", "cond_image": float32 (S, S, 3) in [-1, 1], target and condition frames;
        "pose", "cond_pose": float32 (13, 3), [x / S, y / S, visibility], invisible joints zeroed;
        "pose_px", "cond_pose_px": float32 (13, 3) in resized pixels;
        "mask": float32 (S, S, 1) in {0, 1} = pair_mask(cond_pose_px, pose_px, **mask_kwargs);
        "cond_skeleton", "target_skeleton": float32 (S, S, 1) (only if `skeletons`);
        "video": str, "frames": int64 [cond frame, target frame] (0-based), "index": int.

    Args:
        root: the Penn_Action folder (holding frames/ and labels/).
        split: "train" or "test".
        size: output side in pixels.
        n_test_pairs: number of fixed test pairs (the paper: 1,000).
        seed: seed of the test-pair list.
        mask_kwargs: `pose_mask` settings (`ilat_ext.data.pose.check_mask_kwargs`).
        length: train: number of items (default: the usable train frames); test: use the first
            `length` pairs (at most n_test_pairs).
        resize: "stretch" or "pad" (module docstring).
        skeletons: add the rendered skeletons.

    Raises FileNotFoundError naming root/labels or root/frames if missing; ValueError if no
    video is usable for the split.
    """

    def __init__(self, root: str, split: str = "train", size: int = 256, n_test_pairs: int = 1000, seed: int = 0,
                 mask_kwargs: Optional[Mapping[str, Any]] = None, length: Optional[int] = None,
                 resize: str = "stretch", skeletons: bool = False):
        super().__init__()
        self.root = os.fspath(root)
        self.split = check_choice("split", split, SPLITS)
        for what, value, low in (("size", size, 8), ("n_test_pairs", n_test_pairs, 1), ("seed", seed, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
        if length is not None and (not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1):
            raise ValueError(f"length must be a positive integer or None, got {length!r}")
        if split == "test" and length is not None and length > n_test_pairs:
            raise ValueError(f"length ({length}) cannot exceed n_test_pairs ({n_test_pairs}) on the test split")
        self.size, self.n_test_pairs, self.seed = int(size), int(n_test_pairs), int(seed)
        self.resize = check_choice("resize", resize, RESIZE_MODES)
        self.mask_kwargs = check_mask_kwargs(mask_kwargs)
        if not isinstance(skeletons, bool):
            raise ValueError(f"skeletons must be True or False, got {skeletons!r}")
        self.skeletons = skeletons

        labels_dir, self.frames_dir = os.path.join(self.root, "labels"), os.path.join(self.root, "frames")
        for what, path in (("Penn Action root", self.root), ("Penn Action labels folder", labels_dir),
                           ("Penn Action frames folder", self.frames_dir)):
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{what} not found: {path!r}")
        self.bad_labels: List[str] = []
        self.label_errors: Dict[str, str] = {}  # path -> why it was skipped
        self.skipped_videos: Dict[str, str] = {}
        self.videos: List[str] = []
        self.poses: List[np.ndarray] = []  # per video: (nframes, 13, 3) raw label poses
        self.usable: List[np.ndarray] = []  # per video: sorted usable 0-based frame indices
        for name in sorted(n for n in os.listdir(labels_dir) if n.lower().endswith(".mat")):
            video, path = name[:-4], os.path.join(labels_dir, name)
            try:
                label = read_label(path)
            except ValueError as err:
                self.bad_labels.append(path)
                self.label_errors[path] = str(err)
                continue
            if label["train"] != (self.split == "train"):
                continue
            folder = os.path.join(self.frames_dir, video)
            present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
            poses = label["poses"]
            visible = (np.nan_to_num(poses[:, :, 2]) > 0).any(1)
            usable = np.array([k for k in range(len(poses)) if visible[k] and frame_name(k) in present], np.int64)
            if len(usable) < 2:
                self.skipped_videos[video] = (f"{len(usable)} usable frame(s) (jpg present and a visible joint) "
                                              f"of {len(poses)}")
                continue
            self.videos.append(video)
            self.poses.append(poses)
            self.usable.append(usable)
        if self.bad_labels:
            shown = ", ".join(repr(p) for p in self.bad_labels[:5])
            warnings.warn(f"PennAction: skipped {len(self.bad_labels)} unreadable label file(s): {shown}"
                          f"{' ...' if len(self.bad_labels) > 5 else ''} (the first: "
                          f"{self.label_errors[self.bad_labels[0]]})", RuntimeWarning, stacklevel=2)
        if not self.videos:
            raise ValueError(
                f"no usable {split} videos under {self.root!r} ({len(self.bad_labels)} unreadable label files, "
                f"{len(self.skipped_videos)} {split} videos with fewer than 2 usable frames)"
            )
        if self.split == "train":
            counts = np.array([len(u) for u in self.usable])
            self._offsets = np.concatenate([[0], np.cumsum(counts)])
            self.length = int(self._offsets[-1]) if length is None else int(length)
        else:
            rng = np.random.default_rng([_STREAM_TAG, self.seed])
            self.test_pairs: List[Tuple[int, int, int]] = []
            for _ in range(self.n_test_pairs):
                v = int(rng.integers(len(self.videos)))
                cond, target = rng.choice(self.usable[v], size=2, replace=False)
                self.test_pairs.append((v, int(cond), int(target)))
            self.length = self.n_test_pairs if length is None else int(length)
        self.unreadable_frames: List[str] = []
        self._unreadable = set()
        self.skipped_pairs = 0
        self.hidden_joints = 0

    def __len__(self) -> int:
        return self.length

    @property
    def num_frames(self) -> int:
        """Usable frames over the split's videos."""
        return int(sum(len(u) for u in self.usable))

    def pair(self, index: int, rng: Optional[np.random.Generator] = None) -> Tuple[int, int, int]:
        """(video number, cond frame, target frame) of item `index`; train draws the condition
        frame from `rng` (default: seeded from torch's RNG)."""
        if self.split == "test":
            return self.test_pairs[index % self.n_test_pairs]
        flat = index % int(self._offsets[-1])
        v = int(np.searchsorted(self._offsets, flat, side="right") - 1)
        target = int(self.usable[v][flat - self._offsets[v]])
        rng = rng if rng is not None else np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        others = self.usable[v][self.usable[v] != target]
        return v, int(others[rng.integers(len(others))]), target

    def _load(self, v: int, frame: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(uint8 (S, S, 3), pose in resized pixels) of one frame; None if unreadable."""
        path = os.path.join(self.frames_dir, self.videos[v], frame_name(frame))
        image = None if path in self._unreadable else read_frame(path)
        if image is None:
            if path not in self._unreadable:
                self._unreadable.add(path)
                self.unreadable_frames.append(path)
            return None
        height, width = image.shape[:2]
        pose, hidden = clean_pose(self.poses[v][frame], height, width, name=f"{self.videos[v]} frame {frame}")
        self.hidden_joints += hidden
        return (resize_image(image, self.size, self.resize),
                resize_pose(pose, height, width, self.size, self.resize))

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = check_item_index(index, self.length, "PennAction")
        attempt_index = index
        for attempt in range(max(self.length, 1) + 16):
            v, cond, target = self.pair(attempt_index)
            loaded = [self._load(v, cond), self._load(v, target)]
            if all(x is not None for x in loaded):
                break
            self.skipped_pairs += 1
            warnings.warn(f"PennAction: skipped a pair with an unreadable frame in video {self.videos[v]!r} "
                          f"({len(self.unreadable_frames)} unreadable frames so far in this process)",
                          RuntimeWarning, stacklevel=2)
            if self.split == "test":
                attempt_index = (attempt_index + 1) % self.length
            else:
                attempt_index = int(torch.randint(0, self.length, ()).item())
        else:
            raise RuntimeError(f"PennAction: no readable pair found after {attempt + 1} attempts under {self.root!r}")
        (cond_image, cond_pose), (target_image, target_pose) = loaded
        item = make_pair_item(cond_image, target_image, cond_pose, target_pose, self.mask_kwargs, self.skeletons)
        item.update(video=self.videos[v], frames=np.array([cond, target], np.int64), index=index)
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, size={self.size}, "
                f"resize={self.resize!r}; {len(self.videos)} videos, {self.num_frames} frames, length {self.length})")
