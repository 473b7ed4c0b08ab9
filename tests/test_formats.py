"""The WSSS ecosystem's files (issue 17): IRN / ReCAM, AMN and CLIP-ES CAMs written exactly as those code
bases write them, MS-COCO's 81 classes, ignore bands, and spl eval."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spl import cli
from spl.formats import COCO_CLASSES, detect_format, read_cam, voc_palette

from conftest import collage, refine_args

SIZE = (72, 88)  # H, W: not multiples of 4, so stride-4 maps have ceil sizes
N = 4


def _scene(seed, num_classes, classes):
    """An image of 4 regions; region r > 0 is class classes[r - 1] (1-based); ground truth and blurred
    per-class scores [num_classes, H, W] normalised to a maximum of 1 per present class."""
    img, truth = collage(seed, size=96, regions=4)
    img, truth = img[: SIZE[0], : SIZE[1]], truth[: SIZE[0], : SIZE[1]]
    lut = np.array([0] + list(classes), np.int64)
    gt = lut[truth]
    onehot = F.one_hot(torch.from_numpy(gt), num_classes + 1).permute(2, 0, 1).float()[None, 1:]
    blurred = F.avg_pool2d(onehot, 9, 1, 4, count_include_pad=False)[0]
    peak = blurred.flatten(1).amax(1).clamp_min(1e-6)
    scores = (blurred / peak[:, None, None]).numpy()
    keys = np.flatnonzero(onehot[0].flatten(1).amax(1).numpy() > 0)
    return np.ascontiguousarray(img), gt.astype(np.uint8), scores.astype(np.float32), keys


def _strided(maps):
    """IRN's "cam": the maps at output stride 4 ([n, ceil(H/4), ceil(W/4)], a torch tensor)."""
    h, w = -(-SIZE[0] // 4), -(-SIZE[1] // 4)
    return F.interpolate(torch.from_numpy(maps)[None], size=(h, w), mode="bilinear", align_corners=False)[0]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsss")
    for sub in ("images", "gt", "irn", "irn_strided", "amn", "clipes", "eps", "array"):
        (root / sub).mkdir()
    palette = voc_palette()
    for i in range(N):
        img, gt, scores, keys = _scene(i, 20, [3 + i, 8, 15 + (i % 3)])
        name = f"2007_{i:06d}"
        Image.fromarray(img).save(root / "images" / f"{name}.jpg", quality=95)
        im = Image.fromarray(gt, mode="P")
        im.putpalette(palette)
        im.save(root / "gt" / f"{name}.png")
        valid_cat = torch.from_numpy(keys)  # IRN: torch.nonzero(label)[:, 0]
        # IRN / ReCAM make_cam.py: keys and "cam" are torch tensors, "high_res" a NumPy array.
        np.save(
            root / "irn" / f"{name}.npy", {"keys": valid_cat, "cam": _strided(scores[keys]), "high_res": scores[keys]}
        )
        np.save(root / "irn_strided" / f"{name}.npy", {"keys": valid_cat, "cam": _strided(scores[keys])})
        # AMN make_amn_cam.py: the background map first (softmax, then min-max per map).
        bg = 1 - scores[keys].max(0, keepdims=True)
        with_bg = np.concatenate([bg, scores[keys]])
        np.save(
            root / "amn" / f"{name}.npy",
            {"keys": valid_cat, "cam": torch.tensor(_strided(with_bg).numpy()), "high_res": with_bg},
        )
        # CLIP-ES: keys as NumPy, attn_highres float16.
        np.save(root / "clipes" / f"{name}.npy", {"keys": keys, "attn_highres": scores[keys].astype(np.float16)})
        np.save(root / "eps" / f"{name}.npy", {int(k): scores[k] for k in keys})  # EPS / L2G / PSA
        np.save(root / "array" / f"{name}.npy", scores)
    # CLIP-ES writes keys [-1] and three zero maps for an image without a class.
    img, gt, _, _ = _scene(9, 20, [1, 2, 3])
    Image.fromarray(img).save(root / "images" / "empty.jpg", quality=95)
    Image.fromarray(np.zeros_like(gt), mode="L").save(root / "gt" / "empty.png")
    np.save(root / "clipes" / "empty.npy", {"keys": np.array([-1]), "attn_highres": np.zeros((3,) + SIZE, np.float16)})
    # The others write no keys (IRN: an empty torch.nonzero; AMN: the background map alone).
    none = torch.zeros(0, dtype=torch.int64)
    np.save(
        root / "irn" / "empty.npy",
        {"keys": none, "cam": torch.zeros(0, 18, 22), "high_res": np.zeros((0,) + SIZE, np.float32)},
    )
    np.save(root / "irn_strided" / "empty.npy", {"keys": none, "cam": torch.zeros(0, 18, 22)})
    np.save(
        root / "amn" / "empty.npy",
        {"keys": none, "cam": torch.ones(1, 18, 22), "high_res": np.ones((1,) + SIZE, np.float32)},
    )
    np.save(root / "array" / "empty.npy", np.zeros((20,) + SIZE, np.float32))
    np.save(root / "eps" / "empty.npy", {})
    return root


def run(*argv):
    return cli.main([str(a) for a in argv])


def refine(root, cams, out, *extra):
    return cli.main(refine_args(out, *map(str, extra), images=root / "images", cams=cams))


def evaluate(pred, gt, out, *extra):
    """spl eval as these tests run it: without worker processes."""
    return run("eval", "--pred", pred, "--gt", gt, "--out", out, "--workers", "0", *extra)


def masks(folder):
    return {
        f: np.asarray(Image.open(os.path.join(folder, f))) for f in sorted(os.listdir(folder)) if f.endswith(".png")
    }


def test_detection_and_reading(voc):
    name = "2007_000001.npy"
    assert detect_format(str(voc / "irn" / name)) == "irn"
    assert detect_format(str(voc / "irn_strided" / name)) == "irn"
    assert detect_format(str(voc / "amn" / name)) == "amn"
    assert detect_format(str(voc / "clipes" / name)) == "clipes"
    want = read_cam(str(voc / "array" / name), "array", 20)
    for fmt in ("irn", "amn", "clipes"):
        got = read_cam(str(voc / fmt / name), "auto", 20)
        assert got.format == fmt and got.stride == 0
        np.testing.assert_array_equal(got.present, want.present)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-3 if fmt == "clipes" else 0)  # float16
    strided = read_cam(str(voc / "irn_strided" / name), "auto", 20)
    assert strided.stride == 4 and strided.scores.shape == (20, 18, 22)
    empty = read_cam(str(voc / "clipes" / "empty.npy"), "auto", 20)
    assert not empty.present.any()


def test_every_format_refines_and_evaluates(voc, tmp_path):
    results = {}
    for fmt in ("irn", "amn", "clipes", "irn_strided", "eps", "array"):
        out = tmp_path / fmt
        assert refine(voc, voc / fmt, out, "--gt", voc / "gt", "--save-scores") == 0, fmt
        results[fmt] = masks(out)
        assert len(results[fmt]) == N + 1
        report = json.loads((out / "eval.json").read_text())
        assert report["miou_after"] > 50, (fmt, report)
    for fmt in ("amn", "eps", "array"):  # the same maps, other encodings: the same masks
        for name, m in results["irn"].items():
            np.testing.assert_array_equal(results[fmt][name], m, err_msg=fmt)
    for name, m in results["irn"].items():  # float16 / stride-4 maps: nearly the same masks
        assert (results["clipes"][name] == m).mean() > 0.97
        assert (results["irn_strided"][name] == m).mean() > 0.9
    for fmt in results:  # no class: all background
        assert not results[fmt]["empty.png"].any(), fmt
    # spl eval scores the same files without refining; the raw CAM's figure is refine's "before".
    for fmt in ("irn", "amn", "clipes", "irn_strided", "eps", "array"):
        out = tmp_path / f"eval-{fmt}"
        assert evaluate(voc / fmt, voc / "gt", out, "--curve") == 0
        ev = json.loads((out / "eval.json").read_text())
        before = json.loads((tmp_path / fmt / "eval.json").read_text())
        assert ev["cams"] == N + 1 and ev["failed"] == 0
        assert ev["curve"]["CAM"]["miou"] == pytest.approx(before["curve"]["raw"], abs=1e-9 if fmt != "clipes" else 1.0)
        assert (out / "curve.png").stat().st_size > 1000
    # ... and the refined masks (label PNGs) and the saved refined scores.
    assert evaluate(tmp_path / "irn", voc / "gt", tmp_path / "ev-png", "--format", "png") == 0
    ev = json.loads((tmp_path / "ev-png" / "eval.json").read_text())
    assert ev["label_maps"] == N + 1 and ev["miou"] == pytest.approx(
        json.loads((tmp_path / "irn" / "eval.json").read_text())["miou_after"]
    )
    assert evaluate(tmp_path / "irn", voc / "gt", tmp_path / "ev-npy", "--format", "array", "--curve") == 0
    ev = json.loads((tmp_path / "ev-npy" / "eval.json").read_text())
    refined = json.loads((tmp_path / "irn" / "eval.json").read_text())
    assert ev["curve"]["CAM"]["miou"] == pytest.approx(refined["curve"]["asam"])


def test_format_mismatches_name_the_file(voc, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "2007_000000.npy", {"keys": np.array([2]), "nothing": 1})
    np.save(bad / "2007_000001.npy", {"foo": np.zeros((2, 2))})
    np.save(bad / "2007_000002.npy", {"keys": np.array([2, 7]), "high_res": np.zeros((5,) + SIZE, np.float32)})
    np.save(bad / "2007_000003.npy", {"keys": np.array([25]), "high_res": np.zeros((1,) + SIZE, np.float32)})
    out = tmp_path / "out"
    assert refine(voc, bad, out) == 1
    errors = {e["image"]: e["error"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert "2007_000000.npy: a dict with 'keys' but no maps" in errors["2007_000000"]
    assert "2007_000001.npy: a dict that matches no CAM format" in errors["2007_000001"]
    assert "expected one of: IRN/ReCAM" in errors["2007_000001"]
    assert "2 keys but 5 maps" in errors["2007_000002"]
    assert "class index 25 outside [0, 20)" in errors["2007_000003"]
    # An AMN file read as IRN says what it looks like.
    assert refine(voc, voc / "amn", tmp_path / "o2", "--format", "irn") == 1
    line = json.loads((tmp_path / "o2" / "errors.jsonl").read_text().splitlines()[0])
    assert "an AMN CAM, background first? use --format amn" in line["error"]
    # spl eval: the same messages, on stderr and in errors.jsonl, exit code 1.
    assert evaluate(bad, voc / "gt", tmp_path / "ev") == 1
    assert len((tmp_path / "ev" / "errors.jsonl").read_text().splitlines()) == 4


def test_ignore_band(voc, tmp_path):
    plain, band = tmp_path / "plain", tmp_path / "band"
    assert refine(voc, voc / "irn", plain, "--save-scores", "--bg-threshold", "0.3") == 0
    assert refine(voc, voc / "irn", band, "--ignore-band", "0.2", "0.5", "--gt", voc / "gt") == 0
    for name, m in masks(band).items():
        scores = np.load(plain / name.replace(".png", ".npy"))
        top = scores.max(0)
        assert ((m == 255) == ((top >= 0.2) & (top < 0.5))).all()
        assert (m[top < 0.2] == 0).all()
        np.testing.assert_array_equal(m[top >= 0.5], (scores.argmax(0) + 1)[top >= 0.5])
    report = json.loads((band / "eval.json").read_text())
    assert 0 < report["ignore_band"]["ignored_share"] < 0.5 and report["ignore_band"]["miou_confident"] > 50
    # A rerun skips the finished images and still reports (their masks hold 255).
    assert refine(voc, voc / "irn", band, "--ignore-band", "0.2", "0.5", "--gt", voc / "gt") == 0
    assert json.loads((band / "eval.json").read_text())["ignore_band"]["ignored_share"] == pytest.approx(
        report["ignore_band"]["ignored_share"]
    )


@pytest.mark.parametrize(
    "band,message", [(("0.5", "0.2"), "LOW < HIGH"), (("-1", "0.2"), "0 <= LOW"), (("nan", "0.3"), "finite")]
)
def test_bad_ignore_band_is_a_usage_error(voc, tmp_path, capsys, band, message):
    assert refine(voc, voc / "irn", tmp_path, "--ignore-band", *band) == 2
    assert "--ignore-band" in capsys.readouterr().err and not masks(tmp_path)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A COCO-style fixture: label PNGs 0..80 (grayscale, 255 ignored), IRN-format CAMs with 0-based
    indices among 80 classes, classes above 20 included."""
    root = tmp_path_factory.mktemp("coco")
    for sub in ("images", "gt", "cams"):
        (root / sub).mkdir()
    for i in range(N):
        img, gt, scores, keys = _scene(20 + i, 80, [1, 45 + i, 78 + (i % 3)])
        gt[:2] = 255  # an ignored border
        name = f"COCO_train2014_{i:012d}"
        Image.fromarray(img).save(root / "images" / f"{name}.jpg", quality=95)
        Image.fromarray(gt, mode="L").save(root / "gt" / f"{name}.png")
        np.save(root / "cams" / f"{name}.npy", {"keys": torch.from_numpy(keys), "high_res": scores[keys]})
    (root / "train.txt").write_text("".join(f"COCO_train2014_{i:012d}\n" for i in range(N)))
    return root


def test_coco_refines_evaluates_and_trains(coco, tmp_path, capsys):
    out = tmp_path / "refined"
    assert refine(coco, coco / "cams", out, "--dataset", "coco", "--gt", coco / "gt", "--save-scores") == 0
    printed = capsys.readouterr().out
    assert "81 classes" in printed and "hair drier" in printed and "teddy bear" in printed
    report = json.loads((out / "eval.json").read_text())
    assert report["dataset"] == "coco" and set(report["iou_after"]) == set(COCO_CLASSES)
    assert report["miou_after"] > 50
    im = Image.open(out / "COCO_train2014_000000000000.png")
    assert im.mode == "P" and len(set(map(tuple, np.array(im.getpalette()[: 81 * 3]).reshape(81, 3)))) == 81
    assert np.asarray(im).max() > 20  # class ids beyond VOC's
    # VOC's class count rejects these CAMs, naming the option.
    assert refine(coco, coco / "cams", tmp_path / "voc") == 1
    err = json.loads((tmp_path / "voc" / "errors.jsonl").read_text().splitlines()[0])["error"]
    assert "outside [0, 20)" in err and "--dataset" in err
    # spl eval over 81 classes: the raw CAMs' curve is refine's "before".
    assert evaluate(coco / "cams", coco / "gt", tmp_path / "ev", "--dataset", "coco", "--curve") == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["num_classes"] == 81 and ev["curve"]["CAM"]["miou"] == pytest.approx(report["curve"]["raw"])
    # spl train on the pseudo-labels (with an ignore band: 255 is ignored), 81 classes.
    labels = tmp_path / "band"
    assert refine(coco, coco / "cams", labels, "--dataset", "coco", "--ignore-band", "0.2", "0.5") == 0
    assert any((m == 255).any() for m in masks(labels).values())
    assert (
        run(
            "train",
            "--images",
            coco / "images",
            "--pseudo-labels",
            labels,
            "--list",
            coco / "train.txt",
            "--out",
            tmp_path / "train",
            "--dataset",
            "coco",
            "--model",
            "deeplabv2-tiny",
            "--crop-size",
            "48",
            "--batch-size",
            "2",
            "--max-iters",
            "3",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--n-segments",
            "30",
            "--quiet",
            "--val-list",
            coco / "train.txt",
            "--gt",
            coco / "gt",
        )
        == 0
    )
    ev = json.loads((tmp_path / "train" / "eval.json").read_text())
    assert ev["classes"] == list(COCO_CLASSES) and len(ev["iou"]) == 81


def test_eval_usage_errors(voc, tmp_path, capsys):
    assert run("eval", "--pred", tmp_path / "nope", "--gt", voc / "gt") == 2
    assert "--pred" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run("eval", "--pred", tmp_path / "empty", "--gt", voc / "gt") == 2
    assert "no predictions" in capsys.readouterr().err
    assert run("eval", "--pred", voc / "irn", "--gt", voc / "gt", "--bg-threshold", "nan") == 2
    # A label PNG has no scores to sweep: named, counted as failed.
    (tmp_path / "png").mkdir()
    Image.fromarray(np.zeros(SIZE, np.uint8), mode="L").save(tmp_path / "png" / "2007_000000.png")
    assert run("eval", "--pred", tmp_path / "png", "--gt", voc / "gt", "--curve", "--workers", "0") == 1
    assert "2007_000000.png: a label PNG has no scores to sweep" in capsys.readouterr().err
