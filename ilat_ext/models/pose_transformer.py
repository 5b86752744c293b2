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
`aligned_condition` the row predicting cell j sees the moved limb at j) and `warped_condition`
(the same move on tokens, `limb_warp`). The toy configs use `pose_map` and `warp_reference`.
"""
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ilat_ext.models.cond_transformer import EditResult, position_codes, stage_grid
from ilat_ext.models.ilat_transformer import ILATTransformer
from ilat_ext.modules.pointmlp import PointMLP
from ilat_ext.pose_geometry import (  # noqa: F401  (limb_warp: importable here as before)
    LIMBS, NUM_JOINTS, check_pose, limb_map, limb_warp, normalise_pose, pair_mask, warp_image,
)


class PoseCondition(NamedTuple):
    """`pose_features`' output with `warped_condition`: the features (B, 13 + L, n_embd) as without
    it, and the warp of `limb_warp` (source (B, L) long, weight (B, L)). The reference tokens are
    gathered where the condition tokens are known (`position_features`), so the condition frame is
    encoded once, by the step or the edit that needs it anyway."""
    features: torch.Tensor
    source: torch.Tensor
    weight: torch.Tensor


class PoseILATTransformer(ILATTransformer):
    """`ILATTransformer` plus a PointMLP for the target pose (the "start" layout only).

    Args (beyond `ILATTransformer`'s):
        pose_key: batch entry of the target pose, (B, 13, 3) normalised [x/W, y/H, visibility].
        pointmlp_hidden: hidden widths of the PointMLP (the release: 64, 256).
        joint_embedding: add a learned per-joint embedding to the PointMLP features.
        mask_kwargs: `ilat_ext.pose_geometry.pose_mask` options for masks built by `synthesize`.
        joint_position_codes: add to each landmark's features the fixed 2D sinusoidal code of where
            it is (`cond_transformer.position_codes`, the code `pos_emb_init: grid` starts the grid
            cells there with), so "which cells does this limb cross" is a match of codes from the
            first step instead of a map the PointMLP must learn (an addition of ours; the paper
            feeds the coordinates through the MLP only).
        pose_map: also give the row that predicts grid cell j the target skeleton around cell j: the
            `limb_map` of the target pose on the token grid (one channel per limb) through a 3 x 3
            convolution (zero at the start) into transformer-width features, added there as
            `aligned_condition` adds the condition token. Which cells a limb crosses is then read
            off the row itself instead of being inferred from 13 landmark features by attention
            (an addition of ours, off by default; the paper has the PointMLP only). The model's
            extra condition features are then the 13 landmark features followed by the L map
            features (`pose_features`); only the 13 enter the sequence.
        warped_condition: also give the row that predicts grid cell j the reference frame's token
            where the limb nearest j lies in the reference pose (`limb_warp`: each limb's cells are
            carried from the target pose back to the reference pose), through an embedding of its
            own (zero at the start), scaled by how close j is to that limb and added with the map
            features. `aligned_condition` gives the reference token at j itself, which is the
            person only where the person hardly moves (the torso, legs that stay put); a raised arm
            lands where the reference shows background, and its colour had to be found among 256
            condition tokens by attention, which the toy runs did not learn (arm error 0.26
            against 0.17 for the ground-truth codes). Needs the reference pose (`ref_pose_key`)
            and a condition on the image-token grid; `pose_features` then returns a `PoseCondition`.
            An addition of ours, off by default.
        warp_reference: condition on the reference frame with its limbs already moved to the target
            pose (`warp_image`: each pixel near a target limb takes the reference pixel at the same
            place along, beside and beyond that limb in the reference pose), instead of the frame as
            it is. With `aligned_condition` the row predicting cell j then sees the token of the
            moved limb at j, drawn at the target limb's angle. The warp is a function of the image
            and both poses only, applied alike in training (`get_xc`), `edit_inputs` and
            `synthesize`; the model's input format is unchanged. Needs the reference pose
            (`ref_pose_key`); excludes `warped_condition`, which gathers from the unwarped tokens.
            An addition of ours, off by default.
        warp_reach: how far beside a limb pixels move with it, in token cells (x the first stage's
            downsampling = pixels: 4 px on the toy's 64 px frames with 16 x 16 tokens).
        ref_pose_key: batch entry of the reference (condition frame) pose for `warped_condition`
            and `warp_reference`.

    Defaults follow the pose task: first_stage_key "image" (the target frame), cond_stage_key
    "cond_image" (the condition frame).
    """

    n_extra_positions = NUM_JOINTS  # the PointMLP features sit between the condition and the grid

    def __init__(self, transformer_config, first_stage_config, cond_stage_config, permuter_config=None,
                 ckpt_path: Optional[str] = None, ignore_keys: Sequence[str] = (), first_stage_key: str = "image",
                 cond_stage_key: str = "cond_image", mask_key: str = "mask", pose_key: str = "pose",
                 lm_rate: float = 0.0, pointmlp_hidden: Sequence[int] = (64, 256), joint_embedding: bool = True,
                 mask_kwargs: Optional[Mapping[str, Any]] = None, downsample_cond_size: int = -1,
                 sos_token: int = 0, learning_rate: Optional[float] = None, weight_decay: float = 0.01,
                 betas: Tuple[float, float] = (0.9, 0.95), warmup_steps: int = 0,
                 decay_steps: Union[int, str, None] = None, baseline_config=None, pos_emb_init: Optional[str] = None,
                 joint_position_codes: bool = False, aligned_condition: bool = False,
                 aligned_kernel: int = 1, pose_map: bool = False, warped_condition: bool = False,
                 warp_reference: bool = False, warp_reach: float = 1.0, ref_pose_key: str = "cond_pose"):
        super().__init__(transformer_config, first_stage_config, cond_stage_config, permuter_config=permuter_config,
                         ckpt_path=None, first_stage_key=first_stage_key, cond_stage_key=cond_stage_key,
                         mask_key=mask_key, layout="start", lm_rate=lm_rate,
                         downsample_cond_size=downsample_cond_size, sos_token=sos_token,
                         learning_rate=learning_rate, weight_decay=weight_decay, betas=betas,
                         warmup_steps=warmup_steps, decay_steps=decay_steps, baseline_config=baseline_config,
                         pos_emb_init=pos_emb_init, aligned_condition=aligned_condition, aligned_kernel=aligned_kernel)
        self.pose_key = pose_key
        self.mask_kwargs = dict(mask_kwargs or {})
        self.point_mlp = PointMLP(self.transformer.n_embd, NUM_JOINTS, 3, pointmlp_hidden, joint_embedding)
        if not isinstance(joint_position_codes, bool):
            raise ValueError(f"joint_position_codes must be true or false, got {joint_position_codes!r}")
        self.joint_position_codes = joint_position_codes
        if not isinstance(pose_map, bool):
            raise ValueError(f"pose_map must be true or false, got {pose_map!r}")
        self.pose_grid = stage_grid(self.first_stage_model)
        self.pose_map_conv = None
        if pose_map:
            if self.pose_grid is None:
                raise ValueError("pose_map needs a first stage with a known token grid")
            self.pose_map_conv = nn.Conv2d(len(LIMBS), self.transformer.n_embd, 3, padding=1)
            nn.init.zeros_(self.pose_map_conv.weight)
            nn.init.zeros_(self.pose_map_conv.bias)
        if not isinstance(warped_condition, bool):
            raise ValueError(f"warped_condition must be true or false, got {warped_condition!r}")
        self.ref_pose_key = ref_pose_key
        self.warp_emb = None
        if warped_condition:
            cond = stage_grid(self.cond_stage_model, self.downsample_cond_size)
            if self.pose_grid is None or cond != self.pose_grid:
                raise ValueError(f"warped_condition needs the condition tokens on the image-token grid; the "
                                 f"condition stage gives {cond}, the first stage {self.pose_grid}")
            self.warp_emb = nn.Embedding(self.n_cond_codes, self.transformer.n_embd)
            nn.init.zeros_(self.warp_emb.weight)
        if not isinstance(warp_reference, bool):
            raise ValueError(f"warp_reference must be true or false, got {warp_reference!r}")
        if warp_reference and warped_condition:
            raise ValueError("warp_reference and warped_condition exclude each other: warped_condition gathers "
                             "reference tokens from the unwarped frame; choose one")
        if isinstance(warp_reach, bool) or not isinstance(warp_reach, (int, float)) or not warp_reach > 0:
            raise ValueError(f"warp_reach must be a positive number of token cells, got {warp_reach!r}")
        self.warp_reference = warp_reference
        self.warp_reach = float(warp_reach)
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=ignore_keys)

    @property
    def _has_grid_features(self) -> bool:
        return self.pose_map_conv is not None or self.warp_emb is not None

    # ------------------------------------------------------------------ condition
    def _batch_pose(self, batch, key: str, why: str):
        if key not in batch:
            raise KeyError(f"the batch has no '{key}' entry (keys: {sorted(batch)}): {why} (B, 13, 3)")
        return batch[key]

    def condition_features(self, batch):
        """`pose_features` of batch[pose_key] (with `warped_condition`, and of batch[ref_pose_key])."""
        pose = self._batch_pose(batch, self.pose_key, "the pose model needs the normalised target pose")
        if self.warp_emb is None:
            return self.pose_features(pose)
        return self.pose_features(pose, self._batch_pose(
            batch, self.ref_pose_key, "warped_condition needs the normalised reference pose"))

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

    def pose_features(self, pose, ref_pose=None):
        """pose (B, 13, 3) normalised [x/W, y/H, visibility] -> (B, 13, n_embd); with `pose_map` or
        `warped_condition`, (B, 13 + L, n_embd): the landmark features, then the map features of the
        L grid cells (zero without `pose_map`). `warped_condition` needs ref_pose (B, 13, 3),
        normalised as pose, and returns a `PoseCondition`: those features and the warp."""
        pose = torch.as_tensor(pose, dtype=torch.float32, device=self.device)
        features = self.point_mlp(pose)
        if self.joint_position_codes:
            # where the landmark is, in the code `pos_emb_init: grid` gives the grid cells there
            # (zero for invisible joints)
            cells = max(stage_grid(self.first_stage_model))
            codes = position_codes(pose[..., 1], pose[..., 0], features.shape[-1], cells)
            features = features + codes.to(features) * (pose[..., 2:3] > 0)
        if not self._has_grid_features:
            return features
        h, w = self.pose_grid
        grid = features.new_zeros(features.shape[0], h * w, features.shape[-1])
        if self.pose_map_conv is not None:
            grid = grid + self.pose_map_conv(limb_map(pose, h, w)).flatten(2).transpose(1, 2).to(features)
        features = torch.cat([features, grid], dim=1)
        if self.warp_emb is None:
            return features
        if ref_pose is None:
            raise ValueError("warped_condition needs the reference pose: pose_features(pose, ref_pose)")
        ref_pose = torch.as_tensor(ref_pose, dtype=torch.float32, device=self.device)
        return PoseCondition(features, *limb_warp(pose, ref_pose, h, w))

    def _split_extra(self, extra):
        """extra -> (the 13 landmark features for the sequence, the grid features or None, the
        warp (source, weight) or None)."""
        if self.warp_emb is not None:
            if extra is None:
                return None, None, None
            if not isinstance(extra, PoseCondition):
                raise ValueError(f"with warped_condition the extra condition is pose_features(pose, ref_pose)'s "
                                 f"PoseCondition, got {type(extra).__name__}")
            extra, warp = extra.features, (extra.source, extra.weight)
        else:
            warp = None
        if extra is None or not self._has_grid_features:
            return extra, None, warp
        n_grid = self.pose_grid[0] * self.pose_grid[1]
        if extra.dim() != 3 or extra.shape[1] != NUM_JOINTS + n_grid:
            raise ValueError(f"with pose_map or warped_condition the extra features must be (B, {NUM_JOINTS} + "
                             f"{n_grid}, n_embd) (pose_features' output), got {tuple(extra.shape)}")
        return extra[:, :NUM_JOINTS], extra[:, NUM_JOINTS:], warp

    def sequence_inputs(self, c_indices: torch.Tensor, extra: Optional[torch.Tensor] = None):
        """`ILATTransformer.sequence_inputs` with the 13 landmark features as the extra positions."""
        return super().sequence_inputs(c_indices, self._split_extra(extra)[0])

    def position_features(self, c_idx: torch.Tensor, n_pre: int, n_grid: int,
                          extra: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The aligned condition (if any) plus, at the position that predicts cell j (n_pre - 1 + j),
        the grid features of cell j: the map's, and with `warped_condition` weight_j *
        warp_emb(c_idx[source_j]), the condition token where j's limb lies in the reference pose."""
        features = super().position_features(c_idx, n_pre, n_grid, extra)
        _, grid, warp = self._split_extra(extra)
        if grid is None:
            return features
        if grid.shape[1] != n_grid:
            raise ValueError(f"grid features for {grid.shape[1]} cells, the sequence has {n_grid}")
        if warp is not None:
            source, weight = warp
            if c_idx.shape != source.shape:
                raise ValueError(f"warped_condition: condition tokens of shape {tuple(c_idx.shape)}, the warp "
                                 f"needs {tuple(source.shape)} (one per grid cell)")
            grid = grid + (self.warp_emb(c_idx.long().gather(1, source)) * weight[..., None]).to(grid)
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
        extra = self.pose_features(pose, ref) if self.warp_emb is not None else self.pose_features(pose)
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
