"""PointMLP: the target pose as condition features (iLAT, Cao et al. 2021, Sec. 3.3, Fig. 2).

"To avoid adding too many sequences with excessive computations, we use the coordinates of 13
target pose landmarks as the supplemental condition to the iLAT. They are encoded with 3 fully
connected layers with ReLU." The authors' one released model file applies the MLP to each
landmark on its own (3 -> 64 -> 256 -> n_embd, ReLU after every layer), so the 13 landmarks
become 13 condition positions (`c_pose` in Fig. 2), placed after the condition-image tokens; the
LA mask treats them as condition positions (`ILATTransformer`'s `extra` features).

Input: (B, J, 3) rows [x / width, y / height, visibility] (`ilat_ext.pose_geometry.normalise_pose`:
invisible joints are all zeros). Each landmark also gets a learned joint embedding added to its
features, so the transformer knows which joint a feature came from even where two joints have the
same coordinates (an addition of ours: without it the features are a set, and the learned position
embedding of the sequence is the only cue).
"""
from typing import Sequence

import torch
from torch import nn


class PointMLP(nn.Module):
    """(B, n_joints, in_features) -> (B, n_joints, n_embd): a shared per-landmark MLP with ReLU after
    every layer (the release: 3 -> 64 -> 256 -> n_embd), plus a learned per-joint embedding."""

    def __init__(self, n_embd: int, n_joints: int = 13, in_features: int = 3, hidden: Sequence[int] = (64, 256),
                 joint_embedding: bool = True):
        super().__init__()
        if n_joints < 1 or in_features < 1 or n_embd < 1:
            raise ValueError(f"n_joints, in_features and n_embd must be positive, got {n_joints}, {in_features}, "
                             f"{n_embd}")
        widths = [int(in_features), *[int(h) for h in hidden], int(n_embd)]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.n_joints, self.in_features, self.n_embd = int(n_joints), int(in_features), int(n_embd)
        self.joint_emb = nn.Parameter(torch.zeros(1, self.n_joints, self.n_embd)) if joint_embedding else None
        if self.joint_emb is not None:
            nn.init.normal_(self.joint_emb, std=0.02)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (B, n_joints, in_features), normalised -> features (B, n_joints, n_embd)."""
        if pose.dim() != 3 or pose.shape[1:] != (self.n_joints, self.in_features):
            raise ValueError(f"pose of shape {tuple(pose.shape)} must be (B, {self.n_joints}, {self.in_features}): "
                             f"{self.n_joints} landmarks of [x, y, visibility] normalised to [0, 1]")
        if not torch.isfinite(pose).all():
            raise ValueError("pose has NaN or infinite values (zero the rows of invisible joints)")
        features = self.mlp(pose.to(self.mlp[0].weight.dtype))
        return features if self.joint_emb is None else features + self.joint_emb
