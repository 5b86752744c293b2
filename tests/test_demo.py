"""The one-command demos end to end on a few training steps: every stage trains through main.py,
the outputs the README promises are written, reruns reuse the trained stages."""
import os

import pytest
from PIL import Image

from ilat_ext.apps import chain, demo_faces, demo_poses

QUICK = ["lightning.trainer.limit_val_batches=1", "lightning.callbacks.image_logger.params.max_images=2"]


def test_face_demo_writes_edits_and_table(tmp_path):
    out = str(tmp_path / "demo")
    lines = []
    rows = demo_faces.run_face_demo(out, scale=0.01, n_edit=2, n_compare=2, train_overrides=QUICK, log=lines.append,
                              n_score=3)
    assert [r["method"] for r in rows] == ["Taming", "Taming*", "iLAT"]
    for r in rows:
        assert r["n"] == 2 and r["sec_per_image"] > 0
    for path in ("edits.png", "edits.md", "comparison/grid.png", "comparison/metrics.md", "comparison/metrics.csv"):
        assert os.path.isfile(os.path.join(out, path)), path
    width, height = Image.open(os.path.join(out, "edits.png")).size
    assert width > 8 * 64 and 2 * 64 < height < 3 * 64      # 8 columns (... iLAT | ceiling | iLAT pasted), 2 faces
    with open(os.path.join(out, "edits.md")) as f:
        text = f.read()
    assert "| ceiling |" in text and "of 3 held-out faces (the grid shows the first 2)" in text
    assert {s.name for s in demo_faces.face_chain()} == {"sketch", "ts1", "ts2", "ilat", "taming"}
    for stage in demo_faces.face_chain(0.01):
        assert chain.find_run(os.path.join(out, "logs"), stage.name), stage.name
    # a second run reuses every stage
    again = []
    chain.train_chain(demo_faces.face_chain(0.01), os.path.join(out, "logs"), log=again.append)
    assert len(again) == 5 and all("reusing" in line for line in again)


def test_train_chain_resumes_a_stopped_stage_and_retrains_what_was_trained_on_it(tmp_path):
    from tests.helpers import TOY_VQGAN

    logs = str(tmp_path / "logs")
    fast = ["data.params.train.params.length=64", "lightning.trainer.val_check_interval=1.0", *QUICK]
    stages = lambda a_steps, b_lr="2e-4": [chain.Stage("a", TOY_VQGAN, a_steps),  # noqa: E731
                                           chain.Stage("b", TOY_VQGAN, 2, ("model.params.ckpt_path={a}",
                                                                         f"model.base_learning_rate={b_lr}"))]
    with pytest.raises((SystemExit, KeyboardInterrupt)):  # Ctrl-C at step 2 of stage a's 4
        chain.train_chain(stages(4), logs, extra=[*fast, "lightning.callbacks.stop.target=tests.helpers.InterruptAt",
                                                 "lightning.callbacks.stop.params.step=2"], log=print)
    stopped = chain.find_run(logs, "a")
    assert chain.run_steps(stopped) == 2 and chain.find_run(logs, "b") is None

    lines = []
    runs = chain.train_chain(stages(4), logs, extra=fast, log=lines.append)
    assert lines[0] == f"[a] resuming {stopped} at step 2 of 4"
    assert runs["a"] == stopped and chain.run_steps(stopped) == 4          # the same run, continued
    assert len(os.listdir(os.path.join(stopped, "configs"))) == 4        # + the resumed run's pair
    assert chain.saved_config(runs["b"]).model.params.ckpt_path == os.path.join(stopped, "checkpoints", "last.ckpt")

    lines = []
    assert chain.train_chain(stages(4), logs, extra=fast, log=lines.append) == runs
    assert [line.split(" ")[1] for line in lines] == ["reusing", "reusing"]

    lines = []  # b with another setting than it was trained with: retrained, a kept
    changed = chain.train_chain(stages(4, b_lr="1e-4"), logs, extra=fast, log=lines.append)
    assert lines[1] == f"[b] not reusing {runs['b']}: it was trained with model.base_learning_rate=0.0002"
    assert changed["a"] == runs["a"] and changed["b"] != runs["b"]

    lines = []  # a longer stage a: trained anew (another schedule), so b is trained anew on it
    again = chain.train_chain(stages(5, b_lr="1e-4"), logs, extra=fast, log=lines.append)
    assert lines[0].startswith("[a] training") and lines[2].startswith("[b] training")
    assert again["a"] != runs["a"] and again["b"] != changed["b"]
    assert chain.saved_config(again["b"]).model.params.ckpt_path == os.path.join(again["a"], "checkpoints", "last.ckpt")


def test_new_stroke_batch_puts_other_strokes_in_the_mask():
    x, mask, sketch, own_sketch = demo_faces.new_stroke_batch(3, 64)
    own = demo_faces.new_stroke_batch(3, 64)[2]
    assert x.shape == (3, 3, 64, 64) and mask.shape == (3, 1, 64, 64) and sketch.shape == (3, 1, 64, 64)
    assert 0.05 < float(mask.mean()) < 0.3
    from ilat_ext.data import ToyFaces
    from ilat_ext.data.sketch import sketch_to_tensor_layout
    import torch
    faces = ToyFaces(size=64, length=6, split="test", mask=False)
    for i in range(3):
        original = torch.from_numpy(sketch_to_tensor_layout(faces.sketch_of(i))).permute(2, 0, 1)
        donor = torch.from_numpy(sketch_to_tensor_layout(faces.sketch_of(3 + i))).permute(2, 0, 1)
        inside = mask[i].bool()
        assert torch.equal(sketch[i][~inside], original[~inside])   # the face's own sketch outside
        assert torch.equal(sketch[i][inside], donor[inside])        # another face's strokes inside
        assert not torch.equal(original[inside], donor[inside])
        assert torch.equal(own_sketch[i], original)
    assert torch.equal(own, sketch)                                  # deterministic


def test_pose_demo_writes_poses_sequence_and_table(tmp_path):
    out = str(tmp_path / "demo_poses")
    lines = []
    rows = demo_poses.run_pose_demo(out, scale=0.01, n_show=2, n_compare=2, train_overrides=QUICK, log=lines.append)
    assert [r["method"] for r in rows] == ["Taming", "iLAT*", "iLAT"]
    for path in ("poses.png", "sequence/sequence.gif", "sequence/strip.png", "sequence/frame_000.png",
                 "comparison/metrics.md"):
        assert os.path.isfile(os.path.join(out, path)), path
    assert any("PSNR outside the masks" in line for line in lines)
    with Image.open(os.path.join(out, "poses.png")) as grid:   # 9 columns: the toy configs warp the reference; iLAT pasted last
        assert grid.size[0] == 9 * 64 + 8 * 2


def test_stroke_table_tells_a_face_that_follows_the_strokes_from_one_that_does_not():
    """The stroke metric on known answers: the unedited faces are close to their own strokes and
    far from the new ones; the donor faces (whose strokes were put in the mask) the other way round."""
    import numpy as np
    import torch
    from ilat_ext.data import ToyFaces

    n = 6
    x, mask, sketch, own = demo_faces.new_stroke_batch(n, 64)
    faces = ToyFaces(size=64, length=2 * n, split="test", mask=False, sketch=False)
    donors = torch.from_numpy(np.stack([faces.face(n + i) for i in range(n)]).astype(np.float32) / 127.5 - 1)
    assert torch.equal(demo_faces.donor_faces(n, 64), donors.permute(0, 3, 1, 2))   # the faces the strokes came from
    rows = {r["method"]: r for r in demo_faces.stroke_table({"input": x, "donor": demo_faces.donor_faces(n, 64)},
                                                      mask, sketch, own)}
    assert rows["input"]["to_own_strokes"] < 0.5 * rows["input"]["to_new_strokes"]
    assert rows["input"]["closer_to_new"] == 0.0
    assert rows["donor"]["to_new_strokes"] < 0.5 * rows["donor"]["to_own_strokes"]
    assert rows["donor"]["closer_to_new"] == 1.0
    assert "| donor |" in demo_faces.stroke_markdown(list(rows.values()))
    from ilat_ext.metrics import stroke_distance
    import pytest
    assert abs(float(stroke_distance(x, sketch, mask).mean()) - rows["input"]["to_new_strokes"]) < 1e-6
    with pytest.raises(ValueError, match="sketches must be"):
        stroke_distance(x, sketch[:, :, :32], mask)
    with pytest.raises(ValueError, match="images must be"):
        stroke_distance(x[:, :1], sketch, mask)


def test_ceiling_edit_puts_the_donor_codes_in_the_mask_and_nothing_else():
    """Full mask: the donor's quantized reconstruction; empty mask: the input's Eq. 4 decoding,
    whatever the donor."""
    import torch
    from tests.helpers import TINY_IMG as IMG, tiny_ilat

    model = tiny_ilat()
    g = torch.Generator().manual_seed(3)
    x, donor, other = (torch.rand(2, 3, IMG, IMG, generator=g) * 2 - 1 for _ in range(3))
    full, empty = torch.ones(2, 1, IMG, IMG), torch.zeros(2, 1, IMG, IMG)
    with torch.no_grad():
        fs = model.first_stage_model
        quantized_donor = fs.decode(fs.quantize(fs.quant_conv(fs.encoder(donor)))[0])
        torch.testing.assert_close(demo_faces.ceiling_edit(model, x, full, donor), quantized_donor, atol=1e-4, rtol=0)
        kept = demo_faces.ceiling_edit(model, x, empty, donor)
        torch.testing.assert_close(kept, demo_faces.ceiling_edit(model, x, empty, other), atol=0, rtol=0)
        torch.testing.assert_close(kept, fs.decode(model.encode_target(x, empty)[1]), atol=1e-4, rtol=0)


def _stage_config(stage: "chain.Stage"):
    """The stage's config with its overrides applied ({run} placeholders left out)."""
    from omegaconf import OmegaConf

    overrides = [o for o in stage.overrides if "{" not in o]
    return OmegaConf.merge(OmegaConf.load(stage.config), OmegaConf.from_dotlist(overrides))


def test_demo_stages_use_their_whole_schedule():
    """Each first stage of the face demo reaches its GAN term well before its last step (the toy
    runs were once shorter than disc_start, so the GAN never switched on and the images stayed
    blurs; stage 2 restarts the step count, so its GAN is on from step 0), and each transformer
    stage of both demos decays its learning rate to 0 at the stage's own last step."""
    for stage in demo_faces.face_chain():
        loss = _stage_config(stage).model.params.get("lossconfig", {}).get("params", {})
        if "disc_start" in loss:
            assert loss.disc_start <= stage.steps // 2, (stage.name, loss.disc_start, stage.steps)
    ts2 = next(s for s in demo_faces.face_chain() if s.name == "ts2")
    assert _stage_config(ts2).model.params.lossconfig.params.disc_start == 0
    transformers = [s for s in demo_faces.face_chain() + demo_poses.pose_chain() if "transformer_config" in
                    _stage_config(s).model.params]
    assert [s.name for s in transformers] == ["ilat", "taming", "pose_ilat", "pose_ilat_star", "pose_taming"]
    for stage in transformers:
        params = _stage_config(stage).model.params
        assert params.decay_steps == "max_steps" and params.warmup_steps < stage.steps // 4, stage.name
