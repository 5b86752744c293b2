"""Image-editing metrics of the iLAT paper (Cao et al. 2021, Table 1): PSNR, SSIM, MAE and FID.

All image metrics take batched float tensors (B, C, H, W). By default images are in [-1, 1] as
the models output them (`data_range=2.0`); pass `data_range=1.0` for images in [0, 1]. Values
are not clamped: clamp model outputs first if they should be treated as displayable images
(`ilat_ext.apps.compare` does).

- `psnr(a, b, mask=None)` -> (B,) dB, 10 log10(data_range^2 / MSE). The released code computes
  1 - 10 log10(mse), 1 dB too high; this one does not. Identical images give +inf (MSE 0); an
  image whose `mask` selects no pixel gives NaN, meaning "no pixels to compare" (e.g. the region
  outside a full mask), which `torch.nanmean` skips.
- `mae(a, b, mask=None)` -> (B,) mean absolute error on the [0, 1] scale (|a - b| / data_range),
  the scale of Table 1's MAE column; NaN for an empty mask as above.
- `ssim(a, b)` -> (B,) Wang et al. 2004: 11x11 gaussian window (sigma 1.5), K1 0.01, K2 0.03,
  population covariances, per channel and averaged over the interior where the window fits.
  Equals `skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=data_range, channel_axis=-1)`.
- `stroke_distance(images, sketches, mask)` -> (B,) how far the XDoG lines of edited images are
  from a sketch inside the mask (MAE on the [0, 1] scale): the numeric form of "the edit follows
  the strokes". Compare it against the new strokes and against the original's.
- FID (Heusel et al. 2017): `find_inception_weights`, `load_inception`, `inception_features`,
  `feature_statistics`, `frechet_distance`, `fid`. Nothing is ever downloaded. Supported weight
  files: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF FID Inception, the one papers
  report; loaded into torchvision's Inception3 with pytorch-fid's pooling patches, see
  `_FIDInceptionA` ...) and torchvision's ImageNet `inception_v3_google-0cc3c7bd.pth` (FID values
  with it are not comparable to published ones).
"""
import math
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------- PSNR / MAE


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"images must both be (B, C, H, W) of the same shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


def _masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """values (B, C, H, W) -> (B,) mean over mask (B, 1, H, W) pixels x channels; NaN where the mask is empty."""
    if mask is None:
        return values.flatten(1).mean(1)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != values.shape[0] or mask.shape[2:] != values.shape[2:]:
        raise ValueError(f"mask must be (B, 1, H, W) = {(values.shape[0], 1) + tuple(values.shape[2:])}, "
                         f"got {tuple(mask.shape)}")
    mask = mask.to(values.dtype)
    count = mask.flatten(1).sum(1) * values.shape[1]
    return (values * mask).flatten(1).sum(1) / count  # 0 / 0 = NaN for an empty mask, by design


def psnr(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None,
         data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB: 10 log10(data_range^2 / MSE).

    a, b: (B, C, H, W); mask: optional (B, 1, H, W) in {0, 1}, the pixels to compare (the MSE is
    averaged over masked pixels x channels). Returns (B,) float: +inf for identical images,
    NaN where the mask selects no pixel."""
    _check_pair(a, b)
    err = (a.double() - b.double()) ** 2
    mse = _masked_mean(err, None if mask is None else mask.double())
    return (10.0 * torch.log10(data_range ** 2 / mse)).to(a.dtype if a.is_floating_point() else torch.float32)


def mae(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None,
        data_range: float = 2.0) -> torch.Tensor:
    """Mean absolute error per image on the [0, 1] scale (|a - b| / data_range). a, b: (B, C, H, W);
    mask: optional (B, 1, H, W). Returns (B,); NaN where the mask selects no pixel."""
    _check_pair(a, b)
    err = (a.double() - b.double()).abs() / data_range
    out = _masked_mean(err, None if mask is None else mask.double())
    return out.to(a.dtype if a.is_floating_point() else torch.float32)


def sketch_of_images(images: torch.Tensor, upscale: int = 4) -> torch.Tensor:
    """The XDoG sketches of images (B, 3, H, W) in [-1, 1] -> (B, 1, H, W) in [-1, 1] (+1 paper).

    Each image is enlarged `upscale` times (bicubic) and sketched with `sketch_from_canvas`, the
    pipeline that made the toy faces' sketches from their 4x drawings, so an unedited toy face's
    sketch is close to its own."""
    import cv2
    from ilat_ext.data.sketch import sketch_from_canvas

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    H, W = images.shape[2:]
    if H != W:
        raise ValueError(f"sketch_of_images needs square images, got {H} x {W}")
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    drawn = [sketch_from_canvas(cv2.resize(image, (W * upscale, H * upscale), interpolation=cv2.INTER_CUBIC), H)
             for image in pixels]
    return torch.from_numpy(np.stack(drawn).astype(np.float32) / 127.5 - 1.0)[:, None].to(images.device)


def stroke_distance(images: torch.Tensor, sketches: torch.Tensor, mask: torch.Tensor, upscale: int = 4) -> torch.Tensor:
    """Do the edited images draw these strokes? MAE inside `mask` between the XDoG sketch of each
    image (`sketch_of_images`) and the given sketch, on the [0, 1] scale (0 = the same lines).

    images (B, 3, H, W) in [-1, 1]; sketches (B, 1, H, W) in [-1, 1] (+1 paper, the tensor layout
    of `ilat_ext.data.sketch`); mask (B, 1, H, W) in {0, 1}. Returns (B,) float32; NaN where the
    mask is empty. To compare one set of images with several sketches, sketch them once with
    `sketch_of_images` and call `mae` (what this does)."""
    drawn = sketch_of_images(images, upscale)                                          # (B, 1, H, W)
    if sketches.shape != drawn.shape:
        raise ValueError(f"sketches must be (B, 1, H, W) = {tuple(drawn.shape)}, got {tuple(sketches.shape)}")
    return mae(drawn, sketches.float(), mask.float()).float()


# ------------------------------------------------------------------------------------------ SSIM


def gaussian_kernel1d(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """scipy.ndimage's gaussian kernel: radius int(truncate * sigma + 0.5) (5 for sigma 1.5: 11 taps), sums to 1."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over channels. a, b: (B, C, H, W)
    with H, W >= 11. Returns (B,).

    Gaussian-weighted local means, variances and covariance (population, not sample); the SSIM
    map is averaged over the positions where the 11x11 window lies inside the image, which is what
    skimage does (it filters with reflect padding and then crops the window radius), so the
    padding never enters the result."""
    _check_pair(a, b)
    k = gaussian_kernel1d(sigma)
    win = k.numel()
    if a.shape[-1] < win or a.shape[-2] < win:
        raise ValueError(f"ssim needs images of at least {win}x{win} pixels, got {tuple(a.shape[-2:])}")
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    B, C, H, W = a.shape
    x, y = a.to(dtype).reshape(B * C, 1, H, W), b.to(dtype).reshape(B * C, 1, H, W)
    k = k.to(dtype=dtype, device=a.device)
    kh, kw = k.view(1, 1, win, 1), k.view(1, 1, 1, win)

    def blur(t):  # separable valid convolution: (N, 1, H, W) -> (N, 1, H - 10, W - 10)
        return F.conv2d(F.conv2d(t, kh), kw)

    stats = blur(torch.cat([x, y, x * x, y * y, x * y], dim=0)).split(B * C, dim=0)
    ux, uy, uxx, uyy, uxy = stats
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return s.reshape(B, C, -1).mean(dim=(1, 2)).to(a.dtype if a.is_floating_point() else torch.float32)


# ------------------------------------------------------------------------------------------- FID

TORCHVISION_INCEPTION = "inception_v3_google-0cc3c7bd.pth"
PYTORCH_FID_INCEPTION = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_FILES = (PYTORCH_FID_INCEPTION, TORCHVISION_INCEPTION)  # preference order: pytorch-fid is FID's reference
FID_DIMS = (64, 192, 768, 2048)  # pytorch-fid's feature blocks: pool1, pool2, Mixed_6e, final avgpool


class InceptionWeightsNotFound(FileNotFoundError):
    """No Inception weight file in any searched place; the message names every file looked for."""


def inception_candidates(path: Optional[str] = None) -> List[str]:
    """Every file `find_inception_weights(path)` checks, in order: `path` itself when it names a
    file (not a folder), then both supported file names in `path` (a folder), $ILAT_EXT_WEIGHTS_DIR,
    ~/.cache/ilat_ext/ and torch hub's checkpoints folder."""
    out, dirs = [], []
    if path:
        path = os.path.expanduser(os.fspath(path))
        if os.path.isdir(path) or not os.path.splitext(path)[1]:
            dirs.append(path)
        else:
            out.append(path)
    if os.environ.get("ILAT_EXT_WEIGHTS_DIR"):
        dirs.append(os.path.expanduser(os.environ["ILAT_EXT_WEIGHTS_DIR"]))
    dirs.append(os.path.expanduser(os.path.join("~", ".cache", "ilat_ext")))
    dirs.append(os.path.join(torch.hub.get_dir(), "checkpoints"))
    return out + [os.path.join(d, name) for d in dirs for name in INCEPTION_FILES]


def find_inception_weights(path: Optional[str] = None) -> Optional[str]:
    """The first existing Inception weight file among `inception_candidates(path)`, or None. Never downloads."""
    for candidate in inception_candidates(path):
        if os.path.isfile(candidate):
            return candidate
    return None


def missing_weights_message(path: Optional[str] = None) -> str:
    return ("no Inception weights: searched " + ", ".join(inception_candidates(path))
            + f" (put {PYTORCH_FID_INCEPTION} from pytorch-fid or torchvision's {TORCHVISION_INCEPTION} "
              "in one of these folders, or pass its path)")


# pytorch-fid's Inception = torchvision's Inception3 whose pooling branches follow TensorFlow:
# average pools ignore the zero padding, and the last block max-pools. Without these patches the
# TF weights give different features (and FIDs that are not comparable to published ones).
def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _fid_blocks():
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    class FIDInceptionA(InceptionA):
        def _forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))]

    class FIDInceptionC(InceptionC):
        def _forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            b7d = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                b7d = layer(b7d)
            return [self.branch1x1(x), b7, b7d, self.branch_pool(_tf_avg_pool(x))]

    class FIDInceptionE(InceptionE):
        def __init__(self, in_channels: int, max_pool: bool = False):
            super().__init__(in_channels)
            self.max_pool = max_pool  # Mixed_7c (pytorch-fid's FIDInceptionE_2) max-pools

        def _forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
            return [self.branch1x1(x), b3, b3d, self.branch_pool(pooled)]

    return FIDInceptionA, FIDInceptionC, FIDInceptionE


class InceptionFeatures(nn.Module):
    """Inception-v3 feature extractor as pytorch-fid uses it.

    forward(images (B, 3, H, W) in [-1, 1]) -> (B, dims): bilinear resize to `resize` (299, as FID
    requires), the network up to the block of `dims` (64: first max pool, 192: second max pool,
    768: Mixed_6e, 2048: final average pool), spatially averaged. Both supported weight files
    expect [-1, 1] input (torchvision's `transform_input` only maps ImageNet-normalised input back
    to [-1, 1]), so no normalisation is applied."""

    def __init__(self, net: nn.Module, dims: int = 2048, resize: int = 299, variant: str = "torchvision"):
        super().__init__()
        if dims not in FID_DIMS:
            raise ValueError(f"dims must be one of {FID_DIMS}, got {dims}")
        self.net, self.dims, self.resize, self.variant = net, dims, int(resize), variant

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        n = self.net
        x = F.interpolate(images.float(), size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        stages = [[n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1],
                  [n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2],
                  [n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e],
                  [n.Mixed_7a, n.Mixed_7b, n.Mixed_7c]]
        for layers in stages[:FID_DIMS.index(self.dims) + 1]:
            for layer in layers:
                x = layer(x)
        return x.mean(dim=(2, 3))  # (B, dims)


def load_inception(weights_path: str, dims: int = 2048, resize: int = 299, unsafe: bool = False) -> InceptionFeatures:
    """Build torchvision's Inception3 and load `weights_path` into it (strictly, through the safe loader).

    The layout is told by the classifier: 1008 classes is pytorch-fid's TF Inception (its pooling
    patches are applied), 1000 is torchvision's ImageNet model (its `AuxLogits.*` are dropped).
    Returns an `InceptionFeatures` in eval mode on the CPU."""
    from torchvision.models.inception import Inception3

    from ilat_ext.checkpoint import load_checkpoint, load_state_dict_report
    state = load_checkpoint(weights_path, unsafe=unsafe)["state_dict"]
    if "fc.weight" not in state:
        raise ValueError(f"{weights_path} is not an Inception-v3 state dict (no fc.weight)")
    num_classes = int(state["fc.weight"].shape[0])
    if num_classes == 1008:
        variant = "pytorch-fid"
        block_a, block_c, block_e = _fid_blocks()
        net = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        for name, ch, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
            setattr(net, name, block_a(ch, pool_features=pool))
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            setattr(net, name, block_c(768, channels_7x7=c7))
        net.Mixed_7b, net.Mixed_7c = block_e(1280), block_e(2048, max_pool=True)
    elif num_classes == 1000:
        variant = "torchvision"
        net = Inception3(num_classes=1000, aux_logits=False, transform_input=False, init_weights=False)
    else:
        raise ValueError(f"{weights_path}: an Inception-v3 classifier with {num_classes} classes is neither "
                         f"torchvision's (1000) nor pytorch-fid's (1008)")
    state = dict(state)
    for key, value in net.state_dict().items():  # BatchNorm step counters are unused in eval; older files lack them
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    load_state_dict_report(net, state, ignore_keys=("AuxLogits.",), strict=True, source=weights_path)
    return InceptionFeatures(net, dims=dims, resize=resize, variant=variant).eval()


@torch.no_grad()
def inception_features(images: torch.Tensor, weights_path: Union[str, InceptionFeatures, None] = None,
                       dims: int = 2048, batch_size: int = 32, device: Optional[Union[str, torch.device]] = None,
                       resize: int = 299) -> torch.Tensor:
    """images (N, 3, H, W) in [-1, 1] -> features (N, dims) float64 on the CPU.

    weights_path: a weight file, a folder to search, a loaded `InceptionFeatures`, or None (search
    the default places). Raises `InceptionWeightsNotFound` naming every searched file."""
    if isinstance(weights_path, InceptionFeatures):
        model = weights_path
    else:
        found = find_inception_weights(weights_path)
        if found is None:
            raise InceptionWeightsNotFound(missing_weights_message(weights_path))
        model = load_inception(found, dims=dims, resize=resize)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device)
    feats = [model(images[i:i + batch_size].to(device)).double().cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(feats) if feats else torch.zeros(0, model.dims, dtype=torch.float64)


def feature_statistics(features: Union[torch.Tensor, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """features (N, D) -> (mean (D,), covariance (D, D)) in float64; the covariance is unbiased (N - 1),
    as pytorch-fid's np.cov(rowvar=False). Needs N >= 2; with N <= D the covariance is singular."""
    f = np.asarray(features.cpu().numpy() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Frechet distance of two gaussians.

    (S1 S2)^(1/2) by scipy.linalg.sqrtm; if it is not finite (singular product), eps * I is added
    to both covariances first (pytorch-fid's fallback); a tiny imaginary part from rounding is
    dropped, a large one raises."""
    from scipy import linalg
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm gave an imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid(real: Union[torch.Tensor, np.ndarray], fake: Union[torch.Tensor, np.ndarray],
        weights_path: Union[str, InceptionFeatures, None] = None, dims: int = 2048, **kwargs) -> float:
    """FID between two image sets (N, 3, H, W) in [-1, 1] (or two precomputed feature arrays (N, dims)).
    kwargs go to `inception_features`. Raises `InceptionWeightsNotFound` without weights."""
    def feats(x):
        if x.ndim == 2:
            return x
        return inception_features(torch.as_tensor(x), weights_path, dims=dims, **kwargs)
    return frechet_distance(*feature_statistics(feats(real)), *feature_statistics(feats(fake)))


def format_metric(value: Optional[float], digits: int = 3) -> str:
    """Table text: "inf" for +inf (identical images), "nan" for NaN (nothing to compare), "n/a" for None."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


__all__: Sequence[str] = (
    "psnr", "mae", "ssim", "gaussian_kernel1d", "find_inception_weights", "inception_candidates",
    "missing_weights_message", "InceptionWeightsNotFound", "InceptionFeatures",
    "load_inception", "inception_features", "feature_statistics", "frechet_distance", "fid", "format_metric",
    "TORCHVISION_INCEPTION", "PYTORCH_FID_INCEPTION", "FID_DIMS",
)
