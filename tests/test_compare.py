"""ilat_ext.apps.compare and ilat-compare (scripts/compare.py) on tiny untrained Taming / iLAT runs built
through main.py."""
import csv
import glob
import math
import os
import runpy

import numpy as np
import pytest
import torch
from PIL import Image

from ilat_ext.apps.compare import Method, batch_inputs, compare, load_run_methods, parse_run_spec
from ilat_ext.data import ToyFaces
from tests.helpers import REPO
from tests.test_ilat_chain import train_toy_transformers

SCRIPT = os.path.join(REPO, "scripts", "compare.py")


class EditedMaskFaces(ToyFaces):
    """ToyFaces (64 px, sketches) whose item 0 has an "empty" or "full" mask (the others keep theirs),
    or whose masks are all "small" (32x32: the wrong size)."""

    def __init__(self, kind: str, length: int = 3):
        super().__init__(size=64, length=length, split="test", mask=True, sketch=True)
        self.kind = kind

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.kind == "small":
            item["mask"] = np.ones((32, 32, 1), np.float32)
        elif index == 0:
            item["mask"] = np.full((64, 64, 1), float(self.kind == "full"), np.float32)
        return item


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-step toy iLAT and Taming runs (untrained stages) in real log folders."""
    return train_toy_transformers(tmp_path_factory.mktemp("compare_runs"), ["lightning.trainer.limit_val_batches=0"])


def _names_searched_files(note):
    return (bool(note) and note.startswith("no Inception weights: searched")
            and "inception_v3_google-0cc3c7bd.pth" in note)


@pytest.fixture
def no_inception(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ILAT_EXT_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_parse_run_spec():
    assert parse_run_spec("Taming=logs/x:edit") == ("Taming", "logs/x", "edit")
    assert parse_run_spec("Taming*=logs/x:local") == ("Taming*", "logs/x", "local")
    assert parse_run_spec("iLAT=logs/y") == ("iLAT", "logs/y", "local")
    for bad in ("logs/y", "=logs/y", "x=logs/y:sideways"):
        with pytest.raises(ValueError):
            parse_run_spec(bad)


def test_compare_table_grid_and_local_decoding(runs, tmp_path, no_inception):
    """Taming / Taming* / iLAT plus the Eq. 4 reconstruction (encoded tokens decoded with Eq. 4) on 4 faces."""
    methods = load_run_methods([("Taming", runs["taming"], "edit"), ("Taming*", runs["taming"], "local"),
                                ("iLAT", runs["ilat"], "local")])
    from ilat_ext.runs import load_run
    model, _ = load_run(runs["taming"])

    def reconstruct(batch):
        x, mask, _ = batch_inputs(batch)
        z, kept = model.encode_target(x, mask)
        return model.decode_tokens(z, kept, model.token_mask(x, mask))

    methods.append(Method("Eq4 recon", reconstruct))
    data = ToyFaces(size=64, split="test", length=4, sketch=True, mask=True)
    rows = compare(methods, data, str(tmp_path / "out"), n=4, batch_size=2, progress=False)

    assert [r["method"] for r in rows] == ["Taming", "Taming*", "iLAT", "Eq4 recon"]
    for r in rows:
        for key in ("psnr", "ssim", "mae", "psnr_unmasked", "sec_per_image"):
            assert math.isfinite(r[key]), (r["method"], key)
        assert r["n"] == 4 and r["fid"] is None and _names_searched_files(r["fid_note"])
    by = {r["method"]: r for r in rows}
    # Mechanism: the local methods regenerate exactly the masked tokens, Taming everything after the first one.
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    x, mask, _ = batch_inputs(batch)
    masked_share = model.token_mask(x, mask).float().mean().item()
    assert by["Taming*"]["tokens_regenerated"] == pytest.approx(masked_share)
    assert by["iLAT"]["tokens_regenerated"] == pytest.approx(masked_share)
    assert by["Taming"]["tokens_regenerated"] > masked_share
    # Untrained stages: whether Taming*/iLAT beat Taming outside the mask is chance (it varies per item), so the
    # check is Eq. 4 itself: outside the mask the local edits are the Eq. 4 reconstruction of the input.
    for name in ("Taming*", "iLAT"):
        assert by[name]["psnr_unmasked"] == pytest.approx(by["Eq4 recon"]["psnr_unmasked"], abs=0.1)

    out = tmp_path / "out"
    grid = Image.open(out / "grid.png")
    # input | mask | condition | 4 methods, each with its pasted column; 64 px shown at 128, a label strip on top
    width, height = grid.size
    assert width == 11 * 128 and 4 * 128 < height < 4 * 128 + 64
    with open(out / "metrics.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["Taming", "Taming*", "iLAT", "Eq4 recon"]
    md = (out / "metrics.md").read_text()
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + 4   # header + one row per method
    assert "n/a" in md and "pt_inception-2015-12-05-6726825d.pth" in md


def test_empty_and_full_masks_and_synthetic_methods(runs, tmp_path, no_inception):
    """An empty mask: the local edit returns the input (PSNR inf, shown "inf"); a full mask: no pixel
    outside it (NaN, skipped in the mean); a method that keeps everything outside the mask: inf outside."""
    methods = load_run_methods([("Taming*", runs["taming"], "local")])

    def zero_inside(batch):
        x, mask, _ = batch_inputs(batch)
        return torch.where(mask.bool(), torch.zeros_like(x), x)

    methods.append(Method("keep outside", zero_inside))
    empty = compare(methods, EditedMaskFaces("empty"), str(tmp_path / "empty"), n=2, batch_size=1, fid=False,
                    save_images=True, progress=False)
    assert empty[0]["psnr"] == math.inf and empty[0]["psnr_unmasked"] == math.inf    # item 0 came back exactly
    assert "| inf |" in (tmp_path / "empty" / "metrics.md").read_text()
    assert empty[1]["psnr_unmasked"] == math.inf and math.isfinite(empty[1]["ssim"])
    assert len(glob.glob(str(tmp_path / "empty" / "images" / "keep_outside" / "*.png"))) == 2

    full = compare(methods, EditedMaskFaces("full"), str(tmp_path / "full"), n=2, batch_size=2, fid=False,
                   progress=False)
    for row in full:                                   # item 0 has nothing outside its mask: skipped, not NaN
        assert math.isfinite(row["psnr"]) and not math.isnan(row["psnr_unmasked"])
    assert full[0]["tokens_regenerated"] > 0.5


def test_cli_writes_outputs_and_reports_bad_input(runs, tmp_path, capsys, no_inception):
    main = runpy.run_path(SCRIPT)["main"]
    out = tmp_path / "cli"
    rc = main(["--n", "2", "--batch_size", "2", "--out", str(out), "--device", "cpu", "--no_fid",
               "--run", f"Taming={runs['taming']}:edit", "--run", f"iLAT={runs['ilat']}"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| Taming |" in printed and "| iLAT |" in printed
    width, height = Image.open(out / "grid.png").size
    assert width == 7 * 128 and 2 * 128 < height < 2 * 128 + 64      # 3 + 2 methods x (decode, pasted)

    def error(args):
        rc = main(["--n", "2", "--out", str(tmp_path / "err"), "--device", "cpu", "--no_fid"] + args)
        return rc, capsys.readouterr().err

    rc, err = error(["--run", f"iLAT={tmp_path / 'no_such_run'}"])
    assert rc == 2 and "no_such_run" in err and "no such run" in err
    rc, err = error(["--run", f"iLAT={runs['ilat']}:edit"])
    assert rc == 2 and "sample_edit" in err and "ILATTransformer" in err
    rc, err = error(["--data", "celeba", "--run", f"iLAT={runs['ilat']}"])
    assert rc == 2 and "unknown --data value 'celeba'" in err
    cfg = tmp_path / "bad_mask.yaml"
    cfg.write_text("target: tests.test_compare.EditedMaskFaces\nparams: {kind: small}\n")
    rc, err = error(["--data", f"config:{cfg}", "--run", f"iLAT={runs['ilat']}"])
    assert rc == 2 and "mask size (32, 32)" in err and "(64, 64)" in err
