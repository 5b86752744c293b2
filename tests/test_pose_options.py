"""PoseILATTransformer's options on a tiny model (tests/helpers.py's `tiny_pose_model`): joint
position codes, the limb map beside each grid row (`pose_map`) and the warped reference frame
(`warp_reference`).
"""
import pytest
import torch

from ilat_ext.models import transformer_param_groups
from ilat_ext.modules.position_codes import grid_codes
from ilat_ext.pose_geometry import LIMBS, limb_map, warp_image
from tests.helpers import TINY_CODES, TINY_FACTOR, TINY_IMG, dummy_pose_batch, tiny_pose_model


def test_joint_position_codes_are_the_grid_code_where_the_joint_is():
    """PoseILATTransformer(joint_position_codes=True): each visible landmark's features gain exactly
    the position code of its (x, y), invisible ones nothing; the code of a joint at a cell centre is
    that cell's grid code."""
    plain = tiny_pose_model()
    coded = tiny_pose_model(joint_position_codes=True)
    side = TINY_IMG // TINY_FACTOR
    pose = torch.zeros(1, 13, 3)
    cells = torch.arange(13) * 5                                       # grid cells in raster order
    pose[0, :, 0] = (cells % side + 0.5) / side                      # x of the cell centre
    pose[0, :, 1] = (cells // side + 0.5) / side                     # y
    pose[0, :, 2] = 1.0
    pose[0, 4] = 0.0                                                   # an invisible joint
    with torch.no_grad():
        added = coded.pose_features(pose) - plain.pose_features(pose)
    codes = grid_codes(side, side, coded.transformer.n_embd)[cells]
    codes[4] = 0.0
    torch.testing.assert_close(added[0], codes, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="joint_position_codes"):
        tiny_pose_model(joint_position_codes="yes")


# ============================================================================ pose map
def _check_cached_logits_and_that_features_matter(model, batch, c_idx, extra, other):
    """The cached local edit with `extra` draws each generated token from the training forward's
    logits (teacher-forced on the result), and the features `other` change those logits."""
    x, c, mask = batch
    with torch.no_grad():
        r = model.sample_local(x, mask, c, extra, return_logits=True)
        tf, _, _ = model.forward_tokens(r.indices, c_idx, r.token_mask, extra)
        changed, _, _ = model.forward_tokens(r.indices, c_idx, r.token_mask, other)
    generated = r.token_mask
    assert generated.any()
    torch.testing.assert_close(r.logits[generated], tf[generated][:, :TINY_CODES], atol=1e-4, rtol=0)
    assert not torch.allclose(changed[generated], tf[generated], atol=1e-3)


def test_pose_map_adds_the_skeleton_around_cell_j_to_the_row_predicting_it(batch):
    """PoseILATTransformer(pose_map=True): the extra features are the 13 landmark features then one
    per grid cell; only the 13 enter the sequence; the row predicting cell (r, q) gets the 3x3
    convolution of the limb map around (r, q) (brute-force reference), zero at the start; the cached
    local edit uses the training forward's logits; the convolution is trained and decayed."""
    plain = tiny_pose_model(aligned_condition=True)
    model = tiny_pose_model(aligned_condition=True, pose_map=True)
    x, c, mask = batch
    side, L = TINY_IMG // TINY_FACTOR, (TINY_IMG // TINY_FACTOR) ** 2
    pose = torch.rand(3, 13, 3, generator=torch.Generator().manual_seed(5))
    pose[..., 2] = (pose[..., 2] > 0.2).float()
    with torch.no_grad():
        extra, plain_extra = model.pose_features(pose), plain.pose_features(pose)
        assert extra.shape == (3, 13 + L, 32)
        torch.testing.assert_close(extra[:, :13], plain_extra, rtol=0, atol=0)
        assert torch.count_nonzero(extra[:, 13:]) == 0                       # the zero start
        torch.testing.assert_close(model(x, c, mask, extra)[0], plain(x, c, mask, plain_extra)[0], rtol=0, atol=0)
        model.pose_map_conv.weight.normal_(std=0.05)
        model.pose_map_conv.bias.normal_(std=0.05)
        extra = model.pose_features(pose)
        _, c_idx = model.encode_to_c(c)
        emb, prefix, n_cond = model.sequence_inputs(c_idx, extra)
        assert prefix is None and emb.shape[1] == 1 + L + 13 + 1 and n_cond == 1 + L + 13
        features = model.position_features(c_idx, emb.shape[1], L, extra)
        aligned = plain.position_features(c_idx, emb.shape[1], L)
    first_row = emb.shape[1] - 1
    cover = limb_map(pose, side, side)
    weight, bias = model.pose_map_conv.weight, model.pose_map_conv.bias
    assert weight.shape == (32, len(LIMBS), 3, 3)
    torch.testing.assert_close(features[:, :first_row], aligned[:, :first_row], rtol=0, atol=0)
    for b in range(3):
        for j in range(L):
            r, q = divmod(j, side)
            want = aligned[b, first_row + j] + bias
            for dr in (-1, 0, 1):
                for dq in (-1, 0, 1):
                    if 0 <= r + dr < side and 0 <= q + dq < side:
                        want = want + weight[:, :, dr + 1, dq + 1] @ cover[b, :, r + dr, q + dq]
            torch.testing.assert_close(features[b, first_row + j], want, rtol=0, atol=1e-5)
    moved = pose.clone()
    moved[:, :, :2] = 1 - moved[:, :, :2]
    with torch.no_grad():
        other = model.pose_features(moved)
        other[:, :13] = extra[:, :13]                             # only the map differs
    _check_cached_logits_and_that_features_matter(model, batch, c_idx, extra, other)
    groups = transformer_param_groups(model, 0.01)
    assert id(model.pose_map_conv.weight) in {id(p) for p in groups[0]["params"]}
    assert id(model.pose_map_conv.bias) in {id(p) for p in groups[1]["params"]}


def test_pose_map_refuses_bad_values_and_landmark_only_features(batch):

    with pytest.raises(ValueError, match="pose_map must be true or false"):
        tiny_pose_model(pose_map="yes")
    model = tiny_pose_model(pose_map=True)
    x, c, mask = batch
    with pytest.raises(ValueError, match=r"with pose_map.* the extra features must be \(B, 13 \+ 64, n_embd\)"):
        model.sample_local(x, mask, c, torch.zeros(3, 13, 32))
    with pytest.raises(ValueError, match="with pose_map.* the extra features"):
        model(x, c, mask, torch.zeros(3, 13, 32))


# ============================================================================ warped reference frame
def test_warp_reference_conditions_training_and_editing_on_the_warped_frame(batch):
    """PoseILATTransformer(warp_reference=True): the condition frame of training (`get_xc`) and of
    editing (`edit_inputs`) is `warp_image` of the reference from its pose to the target pose, with
    warp_reach token cells of pixels; the model's logits follow the warped frame, not the unwarped
    one; the log shows the warped frame; bad options and a missing pose are refused by name."""
    model = tiny_pose_model(aligned_condition=True, warp_reference=True, warp_reach=0.5,
                   cond_channels=3)
    plain = tiny_pose_model(aligned_condition=True, cond_channels=3)
    ref, _, mask = batch                                    # the reference frame, (3, 3, 32, 32)
    g = torch.Generator().manual_seed(4)
    pose, ref_pose = torch.rand(3, 13, 3, generator=g), torch.rand(3, 13, 3, generator=g)
    pose[..., 2], ref_pose[..., 2] = 1.0, 1.0
    items = dummy_pose_batch(ref, mask, pose, ref_pose)
    want = warp_image(ref, pose, ref_pose, 0.5 * TINY_FACTOR)
    assert (want != ref).float().mean() > 0.1
    target, got = model.get_xc(items)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(target, ref.flip(3))                 # the target frame is not warped
    assert torch.equal(model.get_xc(items, N=2)[1], want[:2])
    inputs = model.edit_inputs(items)
    torch.testing.assert_close(inputs["c"], want, rtol=0, atol=0)
    assert torch.equal(inputs["x"], ref) and torch.equal(inputs["extra"], model.pose_features(pose))
    _, plain_c = plain.get_xc(items)
    assert torch.equal(plain_c, ref) and torch.equal(plain.edit_inputs(items)["c"], ref)
    with torch.no_grad():
        loss = model.shared_step(items, 0)
        torch.testing.assert_close(loss, _masked_nll(model, ref.flip(3), want, mask, inputs["extra"]))
        assert not torch.allclose(loss, _masked_nll(model, ref.flip(3), ref, mask, inputs["extra"]))
    assert torch.equal(model.log_images(items, N=2)["warped_reference"], want[:2])
    with pytest.raises(KeyError, match="'cond_pose'.*warp_reference needs the normalised reference pose"):
        model.get_xc({k: v for k, v in items.items() if k != "cond_pose"})
    with pytest.raises(ValueError, match="warp_reference must be true or false"):
        tiny_pose_model(warp_reference="yes")
    for reach in (0, -1.0, True, "2"):
        with pytest.raises(ValueError, match="warp_reach must be a positive number of token cells"):
            tiny_pose_model(warp_reference=True, warp_reach=reach)


def _masked_nll(model, x, c, mask, extra):
    """Eq. 6 written out: the mean cross-entropy of the masked tokens, from the teacher-forced logits."""
    logits, target, weight = model(x, c, mask, extra)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return (nll * weight).sum() / weight.sum()
