"""LPIPS perceptual distance (Zhang et al., CVPR 2018) that never downloads anything.

Drop-in replacement for `taming.modules.losses.lpips.LPIPS`. Upstream's constructor calls
`torchvision.models.vgg16(pretrained=True)` (a download of VGG16) and then fetches `vgg.pth`
with `requests` into `taming/modules/autoencoder/lpips/` relative to the working directory, so
building the VQGAN loss fails offline. This module builds the same network and reads both weight
files from local disk only.

Parameter and buffer names are exactly upstream's, so the `loss.perceptual_loss.*` entries of a
public VQGAN checkpoint load unchanged:

    scaling_layer.shift, scaling_layer.scale               (1, 3, 1, 1) buffers
    net.slice{1..5}.<i>.weight / .bias                     VGG16 `features` layers 0-29,
                                                           split at 4 / 9 / 16 / 23 / 30
    lin{0..4}.model.1.weight                               (1, C, 1, 1), Dropout at index 0

Weight files and where they are looked for (first hit wins):

    vgg16-397923af.pth   torchvision's ImageNet VGG16 weights (the `features.*` tensors are
                         used; `classifier.*` is ignored).
    vgg.pth              LPIPS v0.1 linear layers, md5 d507d7349b931f0638a25a48a722f98a.

    1. the explicit path argument (`vgg_path=` / `lin_path=`). If given, it is the only place
       looked at: a wrong explicit path is an error, never a silent fall-back to another copy;
    2. `weights_dir/<file>`;
    3. `$ILAT_EXT_WEIGHTS_DIR/<file>`;
    4. `~/.cache/ilat_ext/<file>`;
    5. VGG16 only: torch hub's cache, `os.path.join(torch.hub.get_dir(), "checkpoints")`, where
       `torchvision.models.vgg16(weights="DEFAULT")` would have stored it;
       vgg.pth only: upstream's relative `taming/modules/autoencoder/lpips/vgg.pth`.

If either file is missing, `MissingWeightsError` lists every missing file and every path that was
searched. Training can go on without the perceptual term by setting `perceptual_weight: 0.0` in
the loss config (then no LPIPS is built at all).

Differences from upstream:
- Nothing is downloaded; weights are loaded with `torch.load(weights_only=True)`. Missing keys
  are an error, unexpected keys a warning (upstream loads `vgg.pth` with a silent strict=False).
- The Dropout inside each `lin*` layer is kept for the state-dict layout but never applied.
  Upstream applies it whenever the module is in train mode, which happens during VQGAN training
  because Lightning's `model.train()` recurses into the loss; a frozen metric should not be noisy.
"""
import hashlib
import os
import warnings
import zipfile
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torchvision
from taming.modules.losses.lpips import NetLinLayer, ScalingLayer, normalize_tensor, spatial_average

VGG16_FILE = "vgg16-397923af.pth"
LIN_FILE = "vgg.pth"
LIN_MD5 = "d507d7349b931f0638a25a48a722f98a"
ENV_WEIGHTS_DIR = "ILAT_EXT_WEIGHTS_DIR"
UPSTREAM_LIN_DIR = os.path.join("taming", "modules", "autoencoder", "lpips")

# Where each file can be obtained by hand (we never fetch them ourselves).
_SOURCES = {
    VGG16_FILE: "https://download.pytorch.org/models/vgg16-397923af.pth "
                "(torchvision's VGG16_Weights.IMAGENET1K_V1; sha256 starts with 397923af)",
    LIN_FILE: "taming's https://heibox.uni-heidelberg.de/f/607503859c864bc1b30b/?dl=1, or "
              "lpips/weights/v0.1/vgg.pth of richzhang/PerceptualSimilarity "
              f"(md5 {LIN_MD5})",
}

VGG_CHANNELS = (64, 128, 256, 512, 512)
# VGG16 `features` indices where upstream's five slices end (relu1_2 ... relu5_3).
VGG_SLICE_ENDS = (4, 9, 16, 23, 30)


class MissingWeightsError(FileNotFoundError):
    """One or more LPIPS weight files were not found locally.

    `missing` maps each missing file name to the list of paths that were searched for it.
    """

    def __init__(self, missing: Dict[str, List[str]], weights_dir: Optional[str] = None):
        self.missing = missing
        super().__init__(_missing_message(missing, weights_dir))


def _missing_message(missing: Dict[str, List[str]], weights_dir: Optional[str]) -> str:
    lines = [f"LPIPS needs {len(missing)} weight file(s) that were not found on this machine "
             "(ilat_ext never downloads weights):"]
    for name, searched in missing.items():
        lines.append(f"  {name}: {_SOURCES[name]}")
        lines.append("    searched:")
        lines.extend(f"      {p}" for p in searched)
    target = weights_dir or os.environ.get(ENV_WEIGHTS_DIR) or _user_cache_dir()
    lines += [
        f"Put the file(s) in {target} (or in any directory passed as `lpips_weights_dir` / "
        f"`weights_dir`, or named by ${ENV_WEIGHTS_DIR}); VGG16 may also sit in torch hub's "
        "cache, .../hub/checkpoints/.",
        "To train without the perceptual term instead, set `perceptual_weight: 0.0` in the loss "
        "config; then no LPIPS network is built and no file is needed.",
    ]
    return "\n".join(lines)


def _user_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "ilat_ext")


def _candidates(name: str, explicit: Optional[str], weights_dir: Optional[str]) -> List[str]:
    """Paths to look for weight file `name`, in search order (see the module docstring)."""
    if explicit is not None:
        return [os.path.abspath(os.path.expanduser(os.fspath(explicit)))]
    dirs = []
    if weights_dir is not None:
        dirs.append(os.fspath(weights_dir))
    if os.environ.get(ENV_WEIGHTS_DIR):
        dirs.append(os.environ[ENV_WEIGHTS_DIR])
    dirs.append(_user_cache_dir())
    if name == VGG16_FILE:
        dirs.append(os.path.join(torch.hub.get_dir(), "checkpoints"))
    else:
        dirs.append(UPSTREAM_LIN_DIR)
    paths = []
    for d in dirs:
        p = os.path.abspath(os.path.join(os.path.expanduser(d), name))
        if p not in paths:
            paths.append(p)
    return paths


def find_lpips_weights(weights_dir: Optional[str] = None, vgg_path: Optional[str] = None,
                       lin_path: Optional[str] = None) -> Tuple[str, str]:
    """Locate (vgg16-397923af.pth, vgg.pth) on disk; raise MissingWeightsError naming all misses."""
    found, missing = {}, {}
    for name, explicit in ((VGG16_FILE, vgg_path), (LIN_FILE, lin_path)):
        searched = _candidates(name, explicit, weights_dir)
        hit = next((p for p in searched if os.path.isfile(p)), None)
        if hit is None:
            missing[name] = searched
        else:
            found[name] = hit
    if missing:
        raise MissingWeightsError(missing, weights_dir)
    return found[VGG16_FILE], found[LIN_FILE]


def _load_file(path: str) -> Dict[str, torch.Tensor]:
    # mmap avoids reading VGG16's 400 MB classifier, which we do not use; it needs the zip format
    # (torch >= 1.6), older files are read whole.
    mmap = zipfile.is_zipfile(path)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if not isinstance(state, dict):
        raise TypeError(f"{path} holds a {type(state).__name__}, expected a state_dict")
    return state


def _md5(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


class VGG16Slices(nn.Module):
    """VGG16 conv trunk (features 0-29) cut into upstream's five slices.

    Same attribute names as `taming.modules.losses.lpips.vgg16`, but built without weights.
    forward: (B, 3, H, W) -> 5 feature maps relu1_2 (B, 64, H, W) ... relu5_3 (B, 512, H/16, W/16).
    """

    def __init__(self, features: nn.Sequential):
        super().__init__()
        start = 0
        for i, end in enumerate(VGG_SLICE_ENDS, start=1):
            block = nn.Sequential()
            for idx in range(start, end):
                block.add_module(str(idx), features[idx])
            setattr(self, f"slice{i}", block)
            start = end

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = []
        for i in range(1, len(VGG_SLICE_ENDS) + 1):
            x = getattr(self, f"slice{i}")(x)
            outs.append(x)
        return tuple(outs)


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG distance with upstream's state-dict layout; weights from local files only.

    Args:
        weights_dir: directory searched first for both files.
        vgg_path: explicit path to `vgg16-397923af.pth` (then no other place is searched).
        lin_path: explicit path to `vgg.pth` (then no other place is searched).

    Raises:
        MissingWeightsError: a file was not found; the message lists every searched path.
        RuntimeError: a file lacks tensors the network needs, or has wrong shapes.
    """

    def __init__(self, weights_dir: Optional[str] = None, vgg_path: Optional[str] = None,
                 lin_path: Optional[str] = None):
        super().__init__()
        vgg_file, lin_file = find_lpips_weights(weights_dir, vgg_path, lin_path)

        self.scaling_layer = ScalingLayer()
        self.chns = list(VGG_CHANNELS)
        # Build on the meta device: torchvision would otherwise allocate and randomly initialise
        # the 120M-parameter classifier that LPIPS throws away. Every kept tensor is then
        # overwritten from the file (missing keys raise), so no uninitialised memory survives.
        with torch.device("meta"):
            vgg = torchvision.models.vgg16(weights=None)
        self.net = VGG16Slices(vgg.features).to_empty(device="cpu")
        for i, ch in enumerate(self.chns):
            setattr(self, f"lin{i}", NetLinLayer(ch, use_dropout=True))

        self.load_report = {
            VGG16_FILE: self._load_vgg(vgg_file, set(vgg.state_dict())),
            LIN_FILE: self._load_lin(lin_file),
        }
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def _load_vgg(self, path: str, torchvision_keys: set) -> dict:
        state = _load_file(path)
        ours = self.net.state_dict()
        # "features.<idx>.<w>" in the torchvision file -> "slice<k>.<idx>.<w>" here.
        rename = {f"features.{k.split('.', 1)[1]}": k for k in ours}
        missing = sorted(k for k in rename if k not in state)
        if missing:
            raise RuntimeError(f"{path} lacks VGG16 tensors LPIPS needs: {missing}")
        unexpected = sorted(k for k in state if k not in torchvision_keys)
        if unexpected:
            warnings.warn(f"{path}: ignoring keys that torchvision's VGG16 does not have: "
                          f"{unexpected}", stacklevel=3)
        self.net.load_state_dict({ours_k: state[file_k] for file_k, ours_k in rename.items()})
        return {"path": path, "missing": missing, "unexpected": unexpected}

    def _load_lin(self, path: str) -> dict:
        md5 = _md5(path)
        if md5 != LIN_MD5:
            warnings.warn(f"{path} has md5 {md5}, expected {LIN_MD5} (LPIPS v0.1 vgg.pth); "
                          "loading it anyway", stacklevel=3)
        state = _load_file(path)
        needed = [f"lin{i}.model.1.weight" for i in range(len(self.chns))]
        missing = [k for k in needed if k not in state]
        if missing:
            raise RuntimeError(f"{path} lacks LPIPS linear-layer tensors: {missing}")
        unexpected = sorted(k for k in state if k not in needed)
        if unexpected:
            warnings.warn(f"{path}: ignoring unexpected keys {unexpected}", stacklevel=3)
        for i, key in enumerate(needed):
            getattr(self, f"lin{i}").load_state_dict({"model.1.weight": state[key]})
        return {"path": path, "md5": md5, "missing": missing, "unexpected": unexpected}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """input, target: (B, 3, H, W) in [-1, 1] -> distance (B, 1, 1, 1).

        Gradients flow to both images; the network itself is frozen.
        """
        feats0 = self.net(self.scaling_layer(input))
        feats1 = self.net(self.scaling_layer(target))
        val = 0
        for i, (f0, f1) in enumerate(zip(feats0, feats1)):
            diff = (normalize_tensor(f0) - normalize_tensor(f1)) ** 2  # (B, C_i, H_i, W_i)
            conv = getattr(self, f"lin{i}").model[1]  # skip the Dropout at index 0
            val = val + spatial_average(conv(diff), keepdim=True)  # (B, 1, 1, 1)
        return val
