"""Our options are validated in one place, removed options are refused with the reason, and the
subclasses take only their own arguments and pass the rest up (no re-declared base signatures)."""
import inspect
import warnings

import pytest

from ilat_ext.models import ILATTransformer, PoseILATTransformer, TamingTransformer
from ilat_ext.models.options import REMOVED_OPTIONS, ConditioningOptions, PoseOptions
from tests.helpers import tiny_ilat, tiny_ilat_config, tiny_pose_model


@pytest.mark.parametrize("kwargs, message", [
    (dict(pos_emb_init="sine"), "pos_emb_init must be one of"),
    (dict(aligned_condition="yes"), "aligned_condition must be true or false"),
    (dict(aligned_condition=True, aligned_kernel=2), "aligned_kernel must be an odd integer"),
    (dict(aligned_condition=True, aligned_kernel=True), "aligned_kernel must be an odd integer"),
    (dict(aligned_condition=True, aligned_kernel=0), "aligned_kernel must be an odd integer"),
    (dict(aligned_kernel=3), "aligned_kernel 3 needs aligned_condition: true"),
])
def test_conditioning_options_refuse_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConditioningOptions(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pose_map=1), "pose_map must be true or false"),
    (dict(joint_position_codes="no"), "joint_position_codes must be true or false"),
    (dict(warp_reference=None), "warp_reference must be true or false"),
    (dict(warp_reach=0), "warp_reach must be a positive number"),
    (dict(warp_reach=True), "warp_reach must be a positive number"),
    (dict(warp_reach="2"), "warp_reach must be a positive number"),
])
def test_pose_options_refuse_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PoseOptions(**kwargs)


def test_models_hold_their_validated_options():
    model = tiny_ilat(pos_emb_init="grid", aligned_condition=True, aligned_kernel=3)
    assert model.conditioning == ConditioningOptions("grid", True, 3)
    assert model.aligned_emb is not None and model.aligned_conv.kernel_size == (3, 3)
    pose = tiny_pose_model(cond_channels=3, pose_map=True, warp_reference=True, warp_reach=2)
    assert pose.pose_options == PoseOptions(pose_map=True, warp_reference=True, warp_reach=2)
    assert pose.pose_map_conv is not None and pose.warp_reference and pose.warp_reach == 2.0
    # the model-level errors are the options' own
    with pytest.raises(ValueError, match="aligned_kernel 3 needs aligned_condition"):
        tiny_ilat(aligned_kernel=3)
    with pytest.raises(ValueError, match="warp_reach must be a positive number"):
        tiny_pose_model(cond_channels=3, warp_reach=-1)


@pytest.mark.parametrize("cls, option, value", [
    (TamingTransformer, "condition_tokens", False),
    (ILATTransformer, "condition_tokens", False),
    (PoseILATTransformer, "warped_condition", True),
])
def test_removed_options_are_refused_with_the_reason(cls, option, value):
    config = tiny_ilat_config(cond_channels=3 if cls is PoseILATTransformer else 1, **{option: value})
    with pytest.raises(ValueError, match=rf"{cls.__name__}: option {option}={value!r} was removed: .*docs/options.md"):
        cls(**config)


@pytest.mark.parametrize("option", sorted(REMOVED_OPTIONS))
def test_a_removed_option_at_todays_value_only_warns(option):
    today = REMOVED_OPTIONS[option][0]
    with pytest.warns(UserWarning, match=f"option {option} was removed"):
        model = tiny_pose_model(cond_channels=3, **{option: today})
    assert isinstance(model, PoseILATTransformer)


def test_unknown_options_are_refused_not_swallowed():
    with pytest.raises(ValueError, match=r"ILATTransformer got unknown option\(s\) \['aligned_kernal'\]"):
        tiny_ilat(aligned_kernal=3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['pose_mapp'\]"):
        tiny_pose_model(cond_channels=3, pose_mapp=True)


def _named(cls):
    return {n for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"}


def test_subclasses_declare_only_their_own_arguments():
    base = _named(TamingTransformer)
    ilat, pose = _named(ILATTransformer), _named(PoseILATTransformer)
    assert ilat == {"layout", "lm_rate", "baseline_config", "input_last_token"}
    assert pose == {"pose_key", "pointmlp_hidden", "joint_embedding", "mask_kwargs", "ref_pose_key",
                    "joint_position_codes", "pose_map", "warp_reference", "warp_reach"}
    assert not (ilat & base) and not (pose & base) and not (pose & ilat)
    for cls in (ILATTransformer, PoseILATTransformer):
        kinds = [p.kind for p in inspect.signature(cls.__init__).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD in kinds and inspect.Parameter.VAR_POSITIONAL in kinds


def test_base_keywords_reach_the_base_through_every_subclass():
    """What drifted before: each base keyword given to a subclass arrives as given."""
    given = dict(sos_token=3, weight_decay=0.2, betas=(0.8, 0.9), mask_key="m", warmup_steps=5, decay_steps=50,
                 pkeep=1.0, downsample_cond_size=-1)
    for build in (lambda **kw: tiny_ilat(**kw), lambda **kw: tiny_pose_model(cond_channels=3, **kw)):
        model = build(**given)
        assert (model.sos_token, model.weight_decay, model.betas, model.mask_key) == (3, 0.2, (0.8, 0.9), "m")
        assert (model.warmup_steps, model.decay_steps, model.pkeep) == (5, 50, 1.0)
    assert tiny_ilat().cond_stage_key == "sketch"              # the subclasses' own defaults
    config = tiny_ilat_config(cond_channels=3)
    del config["cond_stage_key"]
    assert PoseILATTransformer(**config).cond_stage_key == "cond_image"


def test_subclass_constraints_on_base_keywords():
    with pytest.raises(ValueError, match="pkeep 0.5: iLAT's LA training does not corrupt its inputs"):
        tiny_ilat(pkeep=0.5)
    with pytest.raises(ValueError, match="the pose model uses the 'start' layout, got layout 'taming'"):
        tiny_pose_model(cond_channels=3, layout="taming")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiny_pose_model(cond_channels=3, layout="start").layout == "start"
