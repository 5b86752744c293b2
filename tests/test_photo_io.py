"""ilat_ext.apps.photo_io on generated photo-like files: formats, EXIF, alpha, 16-bit and palette
images, the pixel limit read from the header, broken files; masks and strokes at other resolutions,
as paint layers, in both polarities; regions; the paste-back that keeps every pixel outside the mask."""
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from ilat_ext.apps import photo_io as pio
from tests import photos
from tests.helpers import REPO


@pytest.fixture(scope="module")
def source():
    return photos.photo(120, 160, seed=1)


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("ext, lossless", [(".png", True), (".bmp", True), (".tif", True), (".webp", False),
                                           (".jpg", False)])
def test_every_format_reads_as_rgb_at_its_size(tmp_path, source, ext, lossless):
    path = photos.save(tmp_path / f"a{ext}", source)
    got = pio.read_photo(path)
    assert got.rgb.dtype == np.uint8 and got.rgb.shape == source.shape and not got.notes
    if lossless:
        assert np.array_equal(got.rgb, source)
    else:
        assert np.abs(got.rgb.astype(int) - source).mean() < 8
        assert np.array_equal(got.rgb, photos.decoded(path))


def test_gray_16_bit_palette_and_cmyk_images_are_converted(tmp_path, source):
    gray = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    g = pio.read_photo(photos.save(tmp_path / "g.png", gray)).rgb
    assert g.shape == source.shape and np.array_equal(g[:, :, 0], gray) and np.array_equal(g[:, :, 2], gray)
    sixteen = (gray.astype(np.uint16) * 257)                     # 0..65535, as a 16-bit scan
    path16 = str(tmp_path / "g16.png")
    assert cv2.imwrite(path16, sixteen)
    assert Image.open(path16).mode.startswith("I")
    assert np.array_equal(pio.read_photo(path16).rgb[:, :, 1], gray)       # scaled, not clipped at 255
    colour16 = str(tmp_path / "c16.tif")
    assert cv2.imwrite(colour16, cv2.cvtColor(source, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert np.array_equal(pio.read_photo(colour16).rgb, source)
    palette = Image.fromarray(source).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.save(tmp_path / "p.png")
    assert np.array_equal(pio.read_photo(str(tmp_path / "p.png")).rgb, np.asarray(palette.convert("RGB")))
    Image.fromarray(source).convert("CMYK").save(tmp_path / "k.tif")
    assert pio.read_photo(str(tmp_path / "k.tif")).rgb.shape == source.shape


def test_transparency_is_composited_on_white_and_said(tmp_path, source):
    alpha = np.full(source.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0
    alpha[:, 40:60] = 128
    got = pio.read_photo(photos.save(tmp_path / "a.png", np.dstack([source, alpha])))
    assert (got.rgb[:, :40] == 255).all() and np.array_equal(got.rgb[:, 60:], source[:, 60:])
    half = np.rint(source[:, 40:60] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(got.rgb[:, 40:60] - half).max() <= 1
    assert len(got.notes) == 1 and "composited on white" in got.notes[0]
    opaque = pio.read_photo(photos.save(tmp_path / "o.png", np.dstack([source, np.full_like(alpha, 255)])))
    assert np.array_equal(opaque.rgb, source) and not opaque.notes       # an all-opaque alpha says nothing


def test_exif_orientation_is_applied(tmp_path):
    displayed = photos.photo(90, 160, seed=2)
    path = photos.jpeg_with_orientation(tmp_path / "r.jpg", displayed)
    with Image.open(path) as raw:
        assert raw.size == (90, 160)                              # stored portrait
    assert pio.image_size(path) == (90, 160)                      # (H, W) as displayed
    got = pio.read_photo(path).rgb
    assert got.shape == (90, 160, 3) and np.abs(got.astype(int) - displayed).mean() < 6


def test_small_photos_are_noted_as_upscaled(tmp_path, source):
    got = pio.read_photo(photos.save(tmp_path / "s.png", source), min_side=256)
    assert any(n.startswith("warning:") and "smaller than the model's 256 px" in n for n in got.notes)


def test_the_pixel_limit_is_checked_from_the_header_without_decoding(tmp_path):
    big = photos.oversized_png_header(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(pio.InputError) as e:
        pio.read_photo(big)
    message = str(e.value)
    assert "huge.png" in message and "20000x20000" in message and "400.0 MP" in message
    assert "--max_pixels" in message and "\n" not in message
    with pytest.raises(pio.InputError, match="over the limit of 0.0 MP"):
        pio.image_size(photos.save(tmp_path / "s.png", photos.photo(20, 20)), max_pixels=100)
    # in a fresh process: refused in well under a second, the resident memory that of the imports
    # (VmHWM: the peak of this process's own memory; ru_maxrss would count the forking pytest process too)
    code = ("import time, sys; t = time.perf_counter(); from ilat_ext.apps import photo_io as p\n"
            "try:\n    p.read_photo(sys.argv[1])\nexcept p.InputError as e:\n    print('refused', e)\n"
            "peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print(time.perf_counter() - t, peak)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, big], capture_output=True, text=True, cwd=REPO, check=True)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("refused") and time.perf_counter() - start < 20
    seconds, peak_kib = lines[-1].split()
    assert float(seconds) < 5 and int(peak_kib) < 200 * 1024     # decoding would need 1.2 GB


def test_broken_files_are_named_in_one_line(tmp_path, source):
    png, jpg = photos.save(tmp_path / "a.png", source), photos.save(tmp_path / "a.jpg", source, quality=90)
    cases = {photos.truncated_copy(png, tmp_path / "t.png"): "truncated or corrupt",
             photos.truncated_copy(jpg, tmp_path / "t.jpg"): "truncated or corrupt",
             photos.truncated_copy(png, tmp_path / "zero.png", 0.0): "empty file (0 bytes)",
             str(tmp_path / "missing.png"): "not found"}
    (tmp_path / "notes.png").write_text("not an image")
    cases[str(tmp_path / "notes.png")] = "not an image file"
    for path, expected in cases.items():
        with pytest.raises(pio.InputError) as e:
            pio.read_photo(path)
        assert expected in str(e.value) and repr(path) in str(e.value) and "\n" not in str(e.value), path


# ------------------------------------------------------------------------------- masks and strokes


def test_masks_at_half_resolution_antialiased_thresholded_at_half(tmp_path):
    H, W = 200, 320
    half = photos.ellipse_mask(H // 2, W // 2, (60, 50), (30, 20))
    assert 0 < ((half > 0) & (half < 255)).sum()                               # grey edge pixels
    got = pio.read_mask(photos.save(tmp_path / "m.png", half), (H, W))
    expected = cv2.resize(half, (W, H), interpolation=cv2.INTER_LINEAR) >= 127.5
    assert got.mask.shape == (H, W) and np.array_equal(got.mask, expected)
    assert any("resized from 160x100 to the image's 320x200" in n for n in got.notes)
    low = pio.read_mask(photos.save(tmp_path / "m.png", half), (H, W), threshold=0.1).mask
    assert low.sum() > got.mask.sum() and (low | got.mask).sum() == low.sum()


def test_a_paint_layer_is_read_by_its_alpha_whatever_the_colour_underneath(tmp_path):
    H, W = 90, 160
    gray = photos.ellipse_mask(H, W, (80, 45), (30, 20))
    plain = pio.read_mask(photos.save(tmp_path / "gray.png", gray), (H, W)).mask
    layers = [pio.read_mask(photos.save(tmp_path / f"layer{s}.png", photos.paint_layer(gray, seed=s)), (H, W))
              for s in (0, 1)]
    for layer in layers:
        assert np.array_equal(layer.mask, plain)
        assert any("alpha channel is the mask" in n for n in layer.notes)
    # the colour of a layer painted white over transparent black would read as a mask too, but the alpha rules
    inverted = photos.paint_layer(gray)
    inverted[:, :, :3] = 255 - gray[:, :, None]
    assert np.array_equal(pio.read_mask(photos.save(tmp_path / "inv.png", inverted), (H, W)).mask, plain)


def test_mask_errors_and_notes(tmp_path):
    H, W = 90, 160
    with pytest.raises(pio.InputError) as e:
        pio.read_mask(photos.save(tmp_path / "sq.png", np.zeros((64, 64), np.uint8)), (H, W), "photo.jpg")
    assert "64x64" in str(e.value) and "160x90" in str(e.value) and "photo.jpg" in str(e.value)
    with pytest.raises(pio.InputError, match="covers nothing"):
        pio.read_mask(photos.save(tmp_path / "empty.png", np.full((H, W), 100, np.uint8)), (H, W))
    assert not pio.read_mask(str(tmp_path / "empty.png"), (H, W), allow_empty=True).mask.any()
    full = pio.read_mask(photos.save(tmp_path / "full.png", np.full((H, W), 255, np.uint8)), (H, W))
    assert full.mask.all() and any("covers the whole image" in n for n in full.notes)
    # one pixel of rounding in the aspect ratio is fine (1600x900 -> 801x450)
    assert pio.read_mask(photos.save(tmp_path / "r.png", np.full((450, 801), 255, np.uint8)), (900, 1600)).mask.all()


def test_strokes_polarity_detected_inverted_before_resizing_or_forced(tmp_path):
    H, W = 200, 320
    light = photos.strokes_light_on_dark(H // 2, W // 2, [((20, 20), (140, 80)), ((30, 70), (100, 30))])
    a = pio.read_strokes(photos.save(tmp_path / "light.png", light), (H, W))
    b = pio.read_strokes(photos.save(tmp_path / "dark.png", 255 - light), (H, W))
    assert (a.polarity, b.polarity) == ("light", "dark")
    assert np.array_equal(a.sketch, b.sketch)                        # a file and its inverse: identical
    assert a.sketch.shape == (H, W) and np.median(a.sketch) == 255 and a.sketch.min() < 64
    assert any("light lines on a dark background (detected from the background): inverted" in n for n in a.notes)
    forced = pio.read_strokes(str(tmp_path / "light.png"), (H, W), polarity="dark")
    assert np.abs(forced.sketch.astype(int) - (255 - a.sketch)).max() <= 1     # not inverted (up to rounding)
    assert "as given by --strokes_polarity" in forced.notes[-1]
    layer = np.zeros((H // 2, W // 2, 4), np.uint8)
    layer[:, :, :3] = np.random.default_rng(0).integers(0, 256, (H // 2, W // 2, 3))
    layer[:, :, 3] = light                                            # opaque = ink, any colour
    c = pio.read_strokes(photos.save(tmp_path / "layer.png", layer), (H, W))
    assert np.array_equal(c.sketch, a.sketch) and c.polarity == "layer"
    with pytest.raises(pio.InputError, match="aspect ratio"):
        pio.read_strokes(str(tmp_path / "light.png"), (H, H))


# ------------------------------------------------------------------------------ regions and paste


def test_regions_and_the_auto_choice():
    mask = np.zeros((900, 1600), bool)
    mask[400:460, 700:780] = True                                     # small, central
    full, why = pio.choose_region("auto", mask, 64, whole_images=True)
    assert full == pio.Region(0, 350, 900) and "whole images" in why
    small, why = pio.choose_region("auto", mask, 64, whole_images=False)
    assert "small edit in a large image" in why and small.side == 160  # 80 px box, margin 0.5 on each side
    t, b, l, r = small.inside(mask.shape)
    assert (t, l) <= (400, 700) and (b, r) >= (460, 780) and pio.covered_outside(small, mask) == 0
    edge = np.zeros((900, 1600), bool)
    edge[100:300, 20:200] = True                                      # outside the centred square
    with pytest.raises(pio.InputError, match="outside the centred 900x900 square"):
        pio.choose_region("full", edge, 64)
    region, why = pio.choose_region("auto", edge, 64, whole_images=True)
    assert "outside the centred square" in why and pio.covered_outside(region, edge) == 0
    assert region.left == 0                                           # kept inside the photo
    wide = np.zeros((100, 400), bool)
    wide[40:60, 10:390] = True                                        # wider than the photo is high
    region = pio.mask_region(wide, 64)
    assert region.side == 400 and region.top < 0 and pio.covered_outside(region, wide) == 0
    crop = region.crop(np.arange(100 * 400).reshape(100, 400))
    assert crop.shape == (400, 400) and np.array_equal(crop[-region.top:-region.top + 100], np.arange(40000).reshape(100, 400))


def test_paste_edit_is_exact_outside_the_mask_and_feathered_only_inside(source):
    H, W = source.shape[:2]
    mask = photos.ellipse_mask(H, W, (80, 60), (40, 25)) >= 128
    region = pio.full_region((H, W))
    edited = np.full((64, 64, 3), 17, np.uint8)
    out = pio.paste_edit(source, mask, edited, region, feather=3)
    assert np.array_equal(out[~mask], source[~mask])
    assert (out[mask] != source[mask]).any()
    weights = pio.feather_map(mask, 3)
    assert (weights[~mask] == 0).all() and weights.max() == 1 and ((weights > 0) & (weights < 1))[mask].any()
    hard = pio.paste_edit(source, mask, edited, region, feather=0)
    big = pio.resize_to(edited, (region.side, region.side))
    window = mask[:, region.left:region.left + region.side]                  # the region: the centred square
    assert np.array_equal(hard[:, region.left:region.left + region.side][window], big[window])
    assert pio.default_feather(1024, 256) == 4.0 and pio.default_feather(64, 64) == 0.0


def test_the_command_line_defaults_are_the_layers():
    """ilat_ext.cli repeats two defaults so that parsing needs no numpy; they must stay the layer's."""
    from ilat_ext import cli
    from ilat_ext.apps.edit import ReadOptions

    assert cli.DEFAULT_MAX_PIXELS == pio.DEFAULT_MAX_PIXELS == ReadOptions().max_pixels
    parser = cli.ArgumentParser(prog="x")
    cli.add_photo_arguments(parser)
    args = parser.parse_args([])
    assert args.margin == pio.DEFAULT_MARGIN and args.mask_threshold == ReadOptions().mask_threshold
