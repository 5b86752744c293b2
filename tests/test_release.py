"""The authors' released models in ilat_ext: converter, architecture parity and the two editing paths.

Tiny models in the release's exact layout (tests/release_reference.py: key names, shapes, file dicts
and naming from our reading of their code) are saved in both serialisation formats, converted with
`ilat_ext.apps.release_convert`, and checked against a direct computation of the release's maths.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests import release_reference as R
from ilat_ext.apps.release_convert import ConversionError, read_release, write_release_run
from ilat_ext.apps.release_edit import edit_release_run, edit_tensors, encode_tokens
from ilat_ext.masks import feathered_mask, la_attention_mask, release_attention_mask
from ilat_ext.modules.two_stream import whole_map_statistics
from ilat_ext.runs import load_run

SIDE = R.TINY["res"] // 4  # 8 x 8 tokens
L = SIDE * SIDE


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(reference modules in float64, converted ilat_ext model in float64, run dir, folders)."""
    root = tmp_path_factory.mktemp("release")
    sketch, ts, gpt = R.build(seed=0)
    dirs = R.write_folders(str(root), sketch, ts, gpt)
    write_release_run(*dirs, str(root / "run"))
    model, _ = load_run(str(root / "run"))
    return dict(sketch=sketch.double().eval(), ts=ts.double().eval(), gpt=gpt.double().eval(),
                model=model.double().eval(), run=str(root / "run"), dirs=dirs, root=root)


def inputs(seed=0, B=1, mask="partial"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    c = (torch.rand(B, 1, 32, 32, generator=g, dtype=torch.float64) > 0.8).double() * -2 + 1
    m = torch.zeros(B, 1, 32, 32, dtype=torch.float64)
    if mask == "partial":
        for b in range(B):
            m[b, :, 5 + 3 * b:17 + 2 * b, 9:22 - b] = 1
    elif mask == "full":
        m[:] = 1
    return x, m, c


# ----------------------------------------------------------------------------- converter
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_converter_maps_every_key_in_both_formats(tmp_path, legacy):
    sketch, ts, gpt = R.build(seed=1)
    dirs = R.write_folders(str(tmp_path), sketch, ts, gpt, legacy=legacy)
    report = write_release_run(*dirs, str(tmp_path / "run"))
    assert set(report.dropped) == {"z_dec.weight", "c_dec.weight", "c_bias"}
    n_release = len(sketch.state_dict()) + len(ts.state_dict()) + len(gpt.state_dict())
    assert report.mapped == n_release - 3 - 1  # tied/unused dropped; c_sp merged into cond_emb
    model, _ = load_run(str(tmp_path / "run"))  # strict: every model key filled
    sd = model.state_dict()
    assert torch.equal(sd["transformer.tok_emb.weight"], gpt.z_emb.weight)
    assert torch.equal(sd["cond_emb.weight"][-1], gpt.c_sp[0])
    assert torch.equal(sd["cond_stage_model.encoder.conv_in.1.weight"], sketch.encoder.conv_in[1].weight)
    assert sorted(os.listdir(tmp_path)) == ["iLAT_ffhq_V1", "run", "sketch_ffhq_V1", "tsvqgan_ffhq_V1"]


def test_converter_takes_last_when_there_is_no_best_fid(tmp_path):
    sketch, ts, gpt = R.build(seed=1)
    dirs = R.write_folders(str(tmp_path), sketch, ts, gpt, ts_prefix="_last")
    _, _, report, _ = read_release(*dirs)
    assert report.files["tsvqgan"].endswith("TS-VQGAN_g_last.pth")


def test_bad_folders_give_named_errors(tmp_path):
    sketch, ts, gpt = R.build(seed=1)
    sk, tsd, tr = R.write_folders(str(tmp_path), sketch, ts, gpt)
    with pytest.raises(ConversionError, match=r"config.yml not found.*sketch_config.yml: is it another"):
        read_release(sk, sk, tr)                                              # sketch folder as the TS-VQGAN
    os.rename(os.path.join(sk, "SKVQGAN_g_last.pth"), os.path.join(sk, "moved.pth"))
    with pytest.raises(ConversionError, match="no weight file SKVQGAN_g_last.pth or SKVQGAN_g_best_fid.pth"):
        read_release(sk, tsd, tr)
    os.rename(os.path.join(sk, "moved.pth"), os.path.join(sk, "SKVQGAN_g_last.pth"))
    cfg = os.path.join(tsd, "config.yml")
    text = open(cfg).read()
    open(cfg, "w").write(text.replace("ch: 8", "ch: 4"))                     # config that does not fit the weights
    with pytest.raises(ConversionError, match=r"TS-VQGAN_g_best_fid.pth: first_stage_model.encoder.conv_in.weight has "
                                              r"shape \(8, 3, 3, 3\) in the file but \(4, 3, 3, 3\) under .*config.yml"):
        read_release(sk, tsd, tr)
    open(cfg, "w").write(text)
    # the CLI: one line, exit code 2, nothing written
    out = tmp_path / "run"
    cmd = [sys.executable, "scripts/convert_release.py", "--sketch", sk, "--tsvqgan", tr, "--transformer", tr,
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "config.yml not found" in proc.stderr
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".run")]


def test_unsafe_pickles_are_refused(tmp_path):
    sketch, ts, gpt = R.build(seed=1)
    sk, tsd, tr = R.write_folders(str(tmp_path), sketch, ts, gpt)
    torch.save({"iteration": 1, "model": gpt.state_dict(), "opt": {"x": os.getcwd}}, os.path.join(tr, "iLAT_last.pth"))
    with pytest.raises(ConversionError, match="iLAT_last.pth: refusing to load"):
        read_release(sk, tsd, tr)


# ----------------------------------------------------------------------------- architecture parity
def test_sketch_vqgan_indices_and_decoding_match_the_release(release):
    _, _, c = inputs(3, B=2)
    model, ref = release["model"], release["sketch"]
    _, idx = model.encode_to_c(c)
    want = ref.encode_indices(c)
    assert torch.equal(idx, want)
    ours = model.cond_stage_model.decode(model.cond_stage_model.quantize.embedding(idx).view(2, SIDE, SIDE, -1)
                                         .permute(0, 3, 1, 2))
    torch.testing.assert_close(ours, ref.decode_indices(want, SIDE), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["empty", "partial", "full"])
def test_tsvqgan_encode_and_decode_match_the_release(release, kind):
    x, m, _ = inputs(4, B=2, mask=kind)
    model, ref = release["model"], release["ts"]
    fs = model.first_stage_model
    with whole_map_statistics():
        ours = fs.encode_features(x, m)
    want = ref.quant_conv(ref.encoder(x, None if kind == "empty" else m))
    torch.testing.assert_close(ours, want, rtol=1e-9, atol=1e-9)
    z, _ = encode_tokens(model, x, m, "release")
    assert torch.equal(z, ref.quantize.indices(want))
    torch.testing.assert_close(model.decode_tokens(z, ours, None), ref.decode_indices(z, SIDE), rtol=1e-9, atol=1e-9)


def test_tsvqgan_parity_fails_without_the_release_options(release):
    """The test can fail: masked statistics (ilat's) are not the release's whole-map ones."""
    x, m, _ = inputs(4, B=1)
    ref = release["ts"]
    ours = release["model"].first_stage_model.encode_features(x, m)
    assert (ours - ref.quant_conv(ref.encoder(x, m))).abs().max() > 1e-4


def test_transformer_logits_match_the_release_under_its_mask(release):
    model, gpt = release["model"], release["gpt"]
    g = torch.Generator().manual_seed(5)
    z = torch.randint(0, R.TINY["n_e"], (2, L), generator=g)
    c = torch.randint(0, R.TINY["n_e"], (2, L), generator=g)
    m = torch.rand(2, SIDE, SIDE, generator=g) < 0.3
    want = gpt(c, z, R.build_mask(m[:, None].double()))                         # (B, L + 1, V)
    assert torch.equal(release_attention_mask(m, L + 1), R.build_mask(m[:, None].double()).bool())
    emb, _, n_cond = model.sequence_inputs(c)
    logits, _ = model.transformer(z, emb, attn_mask=release_attention_mask(m, n_cond))
    torch.testing.assert_close(logits[:, n_cond:], want, rtol=1e-9, atol=1e-9)
    # the fast decoding step (tied head) computes what forward computes, on a mask a cache can serve
    E = emb.shape[1]
    allowed = release_attention_mask(m, n_cond)
    allowed[:, :E, E:] = False                                                  # leading rows: leading columns only
    full, _ = model.transformer(z, emb, attn_mask=allowed)
    cache = model.transformer.new_cache()
    model.transformer(None, emb, attn_mask=allowed[:, :E, :E], cache=cache)
    step = model.transformer.decode(z, torch.arange(E, E + L).expand(2, -1), allowed[:, E:], cache)
    torch.testing.assert_close(step, full[:, E:], rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- the release path
def test_release_sampling_gives_the_release_tokens(release):
    model, gpt, ts = release["model"], release["gpt"], release["ts"]
    x, m, c = inputs(6, B=2)
    out = edit_tensors(model, x, m, c, path="release")
    singles = [edit_tensors(model, x[b:b + 1], m[b:b + 1], c[b:b + 1], path="release") for b in range(2)]
    for b in range(2):
        m_q = torch.nn.functional.max_pool2d(m[b:b + 1], 4, 4)
        z0 = ts.quantize.indices(ts.quant_conv(ts.encoder(x[b:b + 1], m[b:b + 1])))
        want = R.sample(gpt, z0, release["sketch"].encode_indices(c[b:b + 1]), m_q)
        assert torch.equal(out.tokens[b], want[0]) and torch.equal(singles[b].tokens[0], want[0])
        assert not torch.equal(want, z0)
        dec = ts.decode_indices(want, SIDE)
        gmask = R.combined_mask(m[b:b + 1])
        torch.testing.assert_close(out.image[b:b + 1], x[b:b + 1] * (1 - gmask) + dec * gmask, rtol=1e-9, atol=1e-9)
    assert out.steps == int(torch.nn.functional.max_pool2d(m, 4, 4).flatten(1).sum(1).max())


def test_feathered_mask_is_the_release_blend():
    m = torch.zeros(2, 1, 64, 64)
    m[0, :, 10:30, 20:50] = 1
    m[1, :, 40:, :7] = 1
    torch.testing.assert_close(feathered_mask(m), R.combined_mask(m))


# ----------------------------------------------------------------------------- the ilat path
def test_ilat_path_leaks_nothing_in_float64(release):
    model = release["model"]
    x, m, _ = inputs(7, B=1)
    x2 = torch.where(m > 0, torch.rand_like(x) * 2 - 1, x)                 # other content under the mask
    m_q = model.token_mask(x, m)[0]
    z1, f1 = encode_tokens(model, x, m, "ilat")
    z2, f2 = encode_tokens(model, x2, m, "ilat")
    keep = ~m_q.view(SIDE, SIDE)
    assert torch.equal(f1[0][:, keep], f2[0][:, keep]) and torch.equal(z1[0][~m_q], z2[0][~m_q])
    r1, r2 = encode_tokens(model, x, m, "release")[1], encode_tokens(model, x2, m, "release")[1]
    assert not torch.equal(r1[0][:, keep], r2[0][:, keep])                    # the release's leak


def test_ilat_path_cached_equals_teacher_forced(release):
    model = release["model"]
    x, m, c = inputs(8, B=2)
    cached = edit_tensors(model, x, m, c, path="ilat")
    uncached = edit_tensors(model, x, m, c, path="ilat", use_cache=False)
    assert torch.equal(cached.tokens, uncached.tokens)
    _, c_idx = model.encode_to_c(c)
    m_q = model.token_mask(x, m)
    logits, target, _ = model.forward_tokens(cached.tokens, c_idx, m_q)      # teacher-forced on the result
    edit = model._edit_tokens(encode_tokens(model, x, m, "ilat")[0], encode_tokens(model, x, m, "ilat")[1], m_q,
                              c_idx, mode="local", return_logits=True)
    torch.testing.assert_close(edit.logits[m_q], logits[m_q][:, :R.TINY["n_e"]], rtol=1e-9, atol=1e-9)
    assert torch.equal(logits[m_q].argmax(-1), cached.tokens[m_q])
    assert logits.shape[1] == L
    # the LA mask with every grid token an input has the release's 2 (L + 1) positions
    assert la_attention_mask(m_q, L + 1, input_last=True).shape[1] == 2 * (L + 1)


def test_edit_release_run_on_uint8_inputs_both_paths_is_what_edit_face_sends(release):
    """The library call gives each path's edit of the inputs `edit_face.py --path` prepares (one
    photo layer: `edit.prepare_arrays`), and the condition sketch it made."""
    from ilat_ext.apps import edit

    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 16:44] = True
    strokes = np.full((64, 64), 255, np.uint8)
    strokes[30, 18:40] = 0
    model = release["model"].float()
    try:
        inputs = edit.prepare_arrays(face, mask, strokes, 32, "release")
        for path in ("release", "ilat"):
            out = edit_release_run(model, face, mask, strokes, path=path, size=32)
            assert out["result"].shape == (32, 32, 3) and out["result"].dtype == np.uint8
            assert out["sketch"].shape == (32, 32) and out["tokens"].shape == (L,) and out["token_mask"].sum() > 0
            expected = edit_tensors(model, inputs.x, inputs.mask, inputs.sketch, path)
            assert np.array_equal(out["result"], ((expected.image[0].clamp(-1, 1) + 1) * 127.5).round()
                                  .to(torch.uint8).permute(1, 2, 0).numpy()), path
            assert np.array_equal(out["sketch"].astype(np.float32) / 127.5 - 1, inputs.sketch[0, 0].numpy())
    finally:
        release["model"].double()


def test_release_shaped_models_have_the_release_parameter_counts():
    """The real configs give the notebook's printed counts (74554369, 74872771, 89194240; the
    release's transformer also holds c_bias (2048), which the converter drops)."""
    from ilat_ext.cli.benchmark_edit import build_release_shaped, parameter_counts

    with torch.device("meta"):
        counts = parameter_counts(build_release_shaped())
    assert counts == {"sketch_vqgan": 74554369, "tsvqgan": 74872771, "transformer": 89194240 - 2048}


def test_benchmark_edit_script_ends_with_one_json_line(capsys):
    import json
    from ilat_ext.cli.benchmark_edit import main

    assert main(["--tiny", "--repeats", "1", "--batches", "1", "2", "--rates", "0.25"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {(r["path"], r["batch"]) for r in summary["rows"]} == {("release", 1), ("ilat", 1), ("release", 2), ("ilat", 2)}
    assert all(r["seconds_per_edit"] > 0 and r["transformer_seconds_per_edit"] > 0 for r in summary["rows"])


def test_converted_run_finetunes_and_edits_through_the_existing_tools(release, tmp_path):
    """main.py builds the model from the run's config (its ckpt_path is the converted weights) and a
    training step runs; scripts/edit_face.py --run edits a face with it (the ilat path)."""
    import cv2
    from omegaconf import OmegaConf
    from ilat_ext.util import instantiate_from_config

    run = release["run"]
    config = OmegaConf.load(os.path.join(run, "configs", "release-project.yaml"))
    model = instantiate_from_config(OmegaConf.to_container(config.model, resolve=True))
    assert model.ckpt_load_report.missing == [] and model.ckpt_load_report.unexpected == []
    x, m, c = (t.float() for t in inputs(9, B=2))
    model.train()
    loss = model.shared_step({"image": x.permute(0, 2, 3, 1), "sketch": c.permute(0, 2, 3, 1),
                              "mask": m.permute(0, 2, 3, 1)}, 0)
    loss.backward()
    assert torch.isfinite(loss) and model.transformer.head_tied.dense.weight.grad is not None

    face = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:24] = 255
    strokes = np.full((32, 32), 255, np.uint8)
    for name, img in (("face.png", face[:, :, ::-1]), ("mask.png", mask), ("strokes.png", strokes)):
        cv2.imwrite(str(tmp_path / name), img)
    repo = os.path.dirname(os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "scripts/edit_face.py", "--run", run, "--image", str(tmp_path / "face.png"),
                           "--mask", str(tmp_path / "mask.png"), "--strokes", str(tmp_path / "strokes.png"),
                           "--out", str(tmp_path / "out.png")], capture_output=True, text=True, cwd=repo,
                          env=dict(os.environ, PYTHONPATH=repo))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert cv2.imread(str(tmp_path / "out.png")).shape == (32, 32, 3)


def test_edit_face_runs_both_paths_on_a_converted_run_and_shows_both(release, tmp_path, capsys):
    """--path ilat | release through the command: the result is each path's edit pasted into the
    photo (exact outside the mask), the grid input | mask | sketch | release | iLAT | result."""
    import runpy

    import cv2

    from ilat_ext.apps import edit, release_edit

    rng = np.random.default_rng(2)
    face = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 16:48] = 255
    strokes = np.full((64, 64), 255, np.uint8)
    cv2.line(strokes, (18, 20), (44, 36), 0, 2)
    paths = {}
    for name, img in (("face.png", face[:, :, ::-1]), ("mask.png", mask), ("strokes.png", strokes)):
        paths[name] = str(tmp_path / name)
        cv2.imwrite(paths[name], img)
    main = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "edit_face.py"))["main"]
    outs = {}
    for path in ("ilat", "release"):
        outs[path] = str(tmp_path / f"{path}.png")
        grid = str(tmp_path / f"{path}_grid.png")
        assert main(["--run", release["run"], "--image", paths["face.png"], "--mask", paths["mask.png"], "--strokes",
                     paths["strokes.png"], "--out", outs[path], "--grid", grid, "--path", path, "--device", "cpu"]) == 0
        assert f"{path} path" in capsys.readouterr().out
        size = edit.load_editor(release["run"]).size
        assert cv2.imread(grid).shape[1] == 6 * size + 5 * 2
    editor = edit.load_editor(release["run"])
    inputs = edit.prepare_inputs(paths["face.png"], paths["mask.png"], paths["strokes.png"], editor.size,
                                 editor.sketch_style)
    for path, out in outs.items():
        expected = release_edit.edit_tensors(editor.model, inputs.x, inputs.mask, inputs.sketch, path)
        pasted = edit.paste_results(inputs, expected.image)[0]
        assert np.array_equal(cv2.imread(out)[:, :, ::-1], pasted), path
        inside = mask > 127
        assert np.array_equal(pasted[~inside], face[~inside])
    # a missing run is a one-line error (the --path refusal for other runs: tests/test_edit_face.py)
    assert main(["--run", release["run"] + "_nope", "--image", paths["face.png"], "--mask", paths["mask.png"],
                 "--strokes", paths["strokes.png"], "--out", str(tmp_path / "x.png")]) == 2

