"""Pose-guided person synthesis with iLAT (Cao et al. 2021, Sec. 3.3 "Non-iconic posed-guiding", Fig. 2).

`PoseILATTransformer` is an `ILATTransformer` whose condition is a picture of the person (the
condition image, encoded by the first stage without a mask: `cond_stage_config: __is_first_stage__`)
plus the 13 target-pose landmarks through a `PointMLP`, placed after the condition tokens:

    [c_s, c_1 .. c_N, pose_1 .. pose_13, z_s, z_0 .. z_{L-2}]

The LA mask treats the pose features as condition positions. Training pairs are two frames of one
video (condition frame, target frame); the target is encoded with the union of the two dilated
pose masks (`ilat_ext.pose_geometry.pair_mask`) and the masked tokens are learned (Eq. 6). At
inference the target image is the reference image itself and the mask is the union of the
reference-pose and target-pose masks: the person is redrawn in the target pose, the background
outside the mask is kept exactly (Eq. 4).

The Taming baseline of the pose task (vanilla AR with the same pose features) is the same class
trained with `lm_rate: 1.0` (plain causal attention, loss on every token); only such a model
offers `sample_edit` (Taming's edit: everything from the first masked token on, fully quantized).
iLAT* (paper Table 1: without two-stream convolutions) is this class with a plain `VQModel` first
stage.

Options of ours put the poses on the token grid, at the row that predicts each cell (off by
default): `pose_map` (the target skeleton around the cell, `limb_map`), `warp_reference` (the
condition frame with its limbs moved to the target pose pixel by pixel, `warp_image`; with
`aligned_condition` the row predicting cell j sees the moved limb at j), validated together as
`ilat_ext.models.options.PoseOptions`. The toy configs use `pose_map` and `warp_reference`.
"""
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ilat_ext.models.cond_transformer import EditResult
from ilat_ext.models.ilat_transformer import ILATTransformer
from ilat_ext.models.options import PoseOptions
from ilat_ext.models.stages import stage_grid
from ilat_ext.modules.position_codes import position_codes
from ilat_ext.modules.pointmlp import PointMLP
from ilat_ext.pose_geometry import LIMBS, NUM_JOINTS, check_pose, limb_map, normalise_pose, pair_mask, warp_image


class PoseILATTransformer(ILATTransformer):
    """`ILATTransformer` plus a PointMLP for the target pose (the "start" layout only).

    Args (beyond `ILATTransformer`'s):
        pose_key: batch entry of the target pose, (B, 13, 3) normalised [x/W, y/H, visibility].
        pointmlp_hidden: hidden widths of the PointMLP (the release: 64, 256).
        joint_embedding: add a learned per-joint embedding to the PointMLP features.
        mask_kwargs: `ilat_ext.pose_geometry.pose_mask` options for masks built by `synthesize`.
        ref_pose_key: batch entry of the reference (condition frame) pose, for `warp_reference`.
        joint_position_codes, pose_map, warp_reference, warp_reach: options of ours, off by default
            (`ilat_ext.models.options.PoseOptions`; docs/options.md).
    Every other keyword is `ILATTransformer`'s (and `TamingTransformer`'s), passed up as given;
    the layout is always "start".

    Defaults follow the pose task: first_stage_key "image" (the target frame), cond_stage_key
    "cond_image" (the condition frame).
    """

    n_extra_positions = NUM_JOINTS  # the PointMLP features sit between the condition and the grid

    def __init__(self, *args, pose_key: str = "pose", pointmlp_hidden: Sequence[int] = (64, 256),
                 joint_embedding: bool = True, mask_kwargs: Optional[Mapping[str, Any]] = None,
                 ref_pose_key: str = "cond_pose", joint_position_codes: bool = False, pose_map: bool = False,
                 warp_reference: bool = False, warp_reach: float = 1.0, **kwargs):
        if kwargs.setdefault("layout", "start") != "start":
            raise ValueError(f"the pose model uses the 'start' layout, got layout {kwargs['layout']!r}")
        kwargs.setdefault("cond_stage_key", "cond_image")
        self.pose_options = PoseOptions(joint_position_codes, pose_map, warp_reference, warp_reach)
        self.pose_key, self.ref_pose_key = pose_key, ref_pose_key
        self.mask_kwargs = dict(mask_kwargs or {})
        self._pointmlp_args = (tuple(pointmlp_hidden), joint_embedding)
        super().__init__(*args, **kwargs)

    def build_modules(self) -> None:
        """The PointMLP and, with `pose_map`, the map's convolution (zero at the start)."""
        super().build_modules()
        options = self.pose_options
        self.point_mlp = PointMLP(self.transformer.n_embd, NUM_JOINTS, 3, *self._pointmlp_args)
        self.pose_grid = stage_grid(self.first_stage_model)
        self.pose_map_conv = None
        if options.pose_map:
            if self.pose_grid is None:
                raise ValueError("pose_map needs a first stage with a known token grid")
            self.pose_map_conv = nn.Conv2d(len(LIMBS), self.transformer.n_embd, 3, padding=1)
            nn.init.zeros_(self.pose_map_conv.weight)
            nn.init.zeros_(self.pose_map_conv.bias)

    @property
    def joint_position_codes(self) -> bool:
        return self.pose_options.joint_position_codes

    @property
    def warp_reference(self) -> bool:
        return self.pose_options.warp_reference

    @property
    def warp_reach(self) -> float:
        return float(self.pose_options.warp_reach)

    # ------------------------------------------------------------------ condition
    def _batch_pose(self, batch, key: str, why: str):
        if key not in batch:
            raise KeyError(f"the batch has no '{key}' entry (keys: {sorted(batch)}): {why} (B, 13, 3)")
        return batch[key]

    def condition_features(self, batch):
        """`pose_features` of batch[pose_key]."""
        return self.pose_features(self._batch_pose(batch, self.pose_key, "the pose model needs the normalised "
                                                                          "target pose"))

    def condition_image(self, reference: torch.Tensor, pose, ref_pose) -> torch.Tensor:
        """The condition frame the model reads: `reference` (B, 3, H, W) itself, or with
        `warp_reference` its limbs moved from ref_pose to pose (`warp_image`; both (B, 13, 3)
        normalised)."""
        if not self.warp_reference:
            return reference
        as_tensor = lambda p: torch.as_tensor(p, dtype=torch.float32, device=reference.device)  # noqa: E731
        return warp_image(reference, as_tensor(pose), as_tensor(ref_pose), self.warp_reach * self.first_stage_factor)

    def _batch_condition_image(self, batch, reference: torch.Tensor) -> torch.Tensor:
        if not self.warp_reference:
            return reference
        n = reference.shape[0]
        pose = self._batch_pose(batch, self.pose_key, "warp_reference needs the normalised target pose")
        ref_pose = self._batch_pose(batch, self.ref_pose_key, "warp_reference needs the normalised reference pose")
        return self.condition_image(reference, pose[:n], ref_pose[:n])

    def get_xc(self, batch, N=None):
        """(target frame, condition frame) of a training batch; the condition frame through
        `condition_image`."""
        x, c = super().get_xc(batch, N)
        return x, self._batch_condition_image(batch, c)

    def pose_features(self, pose):
        """pose (B, 13, 3) normalised [x/W, y/H, visibility] -> (B, 13, n_embd); with `pose_map`,
        (B, 13 + L, n_embd): the landmark features, then the map features of the L grid cells."""
        pose = torch.as_tensor(pose, dtype=torch.float32, device=self.device)
        features = self.point_mlp(pose)
        if self.joint_position_codes:
            # where the landmark is, in the code `pos_emb_init: grid` gives the grid cells there
            # (zero for invisible joints)
            cells = max(stage_grid(self.first_stage_model))
            codes = position_codes(pose[..., 1], pose[..., 0], features.shape[-1], cells)
            features = features + codes.to(features) * (pose[..., 2:3] > 0)
        if self.pose_map_conv is None:
            return features
        h, w = self.pose_grid
        grid = features.new_zeros(features.shape[0], h * w, features.shape[-1])
        grid = grid + self.pose_map_conv(limb_map(pose, h, w)).flatten(2).transpose(1, 2).to(features)
        return torch.cat([features, grid], dim=1)

    def _split_extra(self, extra):
        """extra -> (the 13 landmark features for the sequence, the grid features or None)."""
        if extra is None or self.pose_map_conv is None:
            return extra, None
        n_grid = self.pose_grid[0] * self.pose_grid[1]
        if extra.dim() != 3 or extra.shape[1] != NUM_JOINTS + n_grid:
            raise ValueError(f"with pose_map the extra features must be (B, {NUM_JOINTS} + {n_grid}, n_embd) "
                             f"(pose_features' output), got {tuple(extra.shape)}")
        return extra[:, :NUM_JOINTS], extra[:, NUM_JOINTS:]

    def sequence_inputs(self, c_indices: torch.Tensor, extra: Optional[torch.Tensor] = None):
        """`ILATTransformer.sequence_inputs` with the 13 landmark features as the extra positions."""
        return super().sequence_inputs(c_indices, self._split_extra(extra)[0])

    def position_features(self, c_idx: torch.Tensor, n_pre: int, n_grid: int,
                          extra: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The aligned condition (if any) plus, at the position that predicts cell j (n_pre - 1 + j),
        the pose map's features of cell j."""
        features = super().position_features(c_idx, n_pre, n_grid, extra)
        _, grid = self._split_extra(extra)
        if grid is None:
            return features
        if grid.shape[1] != n_grid:
            raise ValueError(f"grid features for {grid.shape[1]} cells, the sequence has {n_grid}")
        grid = torch.nn.functional.pad(grid, (0, 0, n_pre - 1, 0))
        return grid if features is None else features + grid.to(features)

    def sequence_positions(self, n_cond_tokens: int, n_grid: int) -> int:
        """Transformer positions of a sequence of N condition tokens, the 13 pose features and L grid tokens."""
        return super().sequence_positions(n_cond_tokens, n_grid) + self.point_mlp.n_joints

    def edit_inputs(self, batch) -> Dict[str, Any]:
        """Inference on a pair item: the reference (condition frame) is the image being edited and
        the condition; the mask is the union of both poses' masks; the target pose is the extra
        condition. -> sample_local/sample_edit keywords x, mask, c, extra."""
        ref = self.get_input(self.cond_stage_key, batch).to(self.device)
        mask = self.get_mask(batch, ref)
        return {"x": ref, "mask": mask, "c": self._batch_condition_image(batch, ref),
                "extra": self.condition_features(batch)}

    # ------------------------------------------------------------------ synthesis
    def masks_for(self, ref_pose_px, target_pose_px, height: int, width: int) -> torch.Tensor:
        """(B, 13, 3) pixel poses -> the union masks (B, 1, H, W) of `pair_mask`, validated."""
        ref, tgt = np.asarray(ref_pose_px, np.float32), np.asarray(target_pose_px, np.float32)
        ref, tgt = (ref[None] if ref.ndim == 2 else ref), (tgt[None] if tgt.ndim == 2 else tgt)
        if ref.shape[0] != tgt.shape[0]:
            raise ValueError(f"{ref.shape[0]} reference poses but {tgt.shape[0]} target poses")
        masks = [pair_mask(check_pose(r, height, width, "reference pose"), check_pose(t, height, width, "target pose"),
                           height, width, **self.mask_kwargs) for r, t in zip(ref, tgt)]
        return torch.from_numpy(np.stack(masks))[:, None].to(self.device)

    @torch.no_grad()
    def synthesize(self, reference: torch.Tensor, ref_pose_px, target_pose_px, mode: str = "local",
                   mask: Optional[torch.Tensor] = None, **sampling) -> EditResult:
        """The person of `reference` (B, 3, H, W) in [-1, 1], posed `ref_pose_px`, redrawn in
        `target_pose_px` (both (B, 13, 3) or (13, 3) [x, y, visibility] in the image's pixels).
        mask: (B, 1, H, W), default the union of both poses' masks. mode "local" (iLAT) or "edit"
        (Taming's edit, for a model trained with lm_rate 1). `sampling`: `sample_local` keywords."""
        pose, ref = self._normalised_poses(reference, ref_pose_px, target_pose_px)
        if mask is None:
            mask = self.masks_for(ref_pose_px, target_pose_px, *reference.shape[2:])
        reference = reference.to(self.device)
        extra = self.pose_features(pose)
        edit = self.sample_local if mode == "local" else self.sample_edit
        return edit(reference, mask, self.condition_image(reference, pose, ref), extra, **sampling)

    def condition_image_px(self, reference: torch.Tensor, ref_pose_px, target_pose_px) -> torch.Tensor:
        """The condition frame `synthesize` gives the model (`condition_image`; with `warp_reference`
        the reference's limbs moved to the target pose), from poses in the image's pixels as there."""
        pose, ref = self._normalised_poses(reference, ref_pose_px, target_pose_px)
        return self.condition_image(reference.to(self.device), pose, ref)

    @staticmethod
    def _normalised_poses(reference: torch.Tensor, ref_pose_px, target_pose_px):
        """Pixel poses for the B references (B, 3, H, W) -> (target (B, 13, 3), reference (B, 13, 3)),
        normalised and validated; one reference pose may serve every target pose."""
        if reference.dim() != 4 or reference.shape[1] != 3:
            raise ValueError(f"reference of shape {tuple(reference.shape)} must be (B, 3, H, W)")
        B, _, H, W = reference.shape
        tgt = np.asarray(target_pose_px, np.float32)
        tgt = tgt[None] if tgt.ndim == 2 else tgt
        if tgt.shape[0] != B:
            raise ValueError(f"{tgt.shape[0]} target poses for {B} reference images")
        ref = np.asarray(ref_pose_px, np.float32)
        ref = ref[None] if ref.ndim == 2 else ref
        if ref.shape[0] not in (1, B):
            raise ValueError(f"{ref.shape[0]} reference poses for {B} target poses")
        ref = np.broadcast_to(ref, (B, *ref.shape[1:]))
        pose = np.stack([normalise_pose(check_pose(t, H, W, "target pose"), H, W) for t in tgt])
        return pose, np.stack([normalise_pose(check_pose(r, H, W, "reference pose"), H, W) for r in ref])

    # ------------------------------------------------------------------ logging
    @torch.no_grad()
    def log_images(self, batch, N: int = 4, **kwargs):
        """reference | mask | ground truth (target frame) | [warped reference: the condition frame,
        with `warp_reference`] | synthesis: the reference redrawn in the target pose (iLAT's local
        edit, or Taming's edit for an lm_rate-1 baseline)."""
        batch = {k: v[:N] for k, v in batch.items()}
        inputs = self.edit_inputs(batch)
        log = {"reference": inputs["x"], "mask": inputs["mask"] * 2 - 1,
               "target": self.get_input(self.first_stage_key, batch).to(self.device)}
        if self.warp_reference:
            log["warped_reference"] = inputs["c"]
        log["taming" if self.trained_causal else "ilat"] = (
            self.sample_edit(**inputs) if self.trained_causal else self.sample_local(**inputs)).image
        if self._baseline:
            log["taming_star"] = self._baseline[0].to(self.device).sample_local(**inputs).image
        return log
