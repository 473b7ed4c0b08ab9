"""spl refine: CAM formats, lists, bad files, resume after SIGKILL, torchrun, batch-size invariance."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from spl import cli
from spl.formats import read_cam, voc_palette

from conftest import alive, collage, descendants, refine_args

N_IMAGES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Collage images with known regions; CAMs = blurred, coarse one-hot maps of classes 1..6 (0-based
    foreground indices 0..5 for region labels 1..6; region 0 is background). Written in every format."""
    root = tmp_path_factory.mktemp("voc")
    for sub in ("images", "gt", "irn", "eps", "array", "array21", "png"):
        (root / sub).mkdir()
    palette = voc_palette()
    for i in range(N_IMAGES):
        img, truth = collage(i, size=80, regions=4)
        name = f"img{i}"
        Image.fromarray(img).save(root / "images" / f"{name}.jpg", quality=95)
        gt = Image.fromarray(truth.astype(np.uint8), mode="P")
        gt.putpalette(palette)
        gt.save(root / "gt" / f"{name}.png")
        onehot = torch.nn.functional.one_hot(torch.from_numpy(truth), 21).permute(2, 0, 1).float()[None]
        coarse = torch.nn.functional.interpolate(
            torch.nn.functional.avg_pool2d(onehot, 8), size=(80, 80), mode="bilinear", align_corners=False
        )[0, 1:]
        scores = coarse.numpy().astype(np.float32)  # [20, 80, 80]
        keys = np.nonzero(scores.reshape(20, -1).max(1) > 0)[0]
        np.save(root / "irn" / f"{name}.npy", {"keys": keys, "high_res": scores[keys]})
        np.save(root / "eps" / f"{name}.npy", {int(k): scores[k] for k in keys})
        np.save(root / "array" / f"{name}.npy", scores)
        np.save(root / "array21" / f"{name}.npy", np.concatenate([np.zeros((1, 80, 80), np.float32), scores]))
        lab = Image.fromarray(np.where(scores.max(0) > 0.5, scores.argmax(0) + 1, 0).astype(np.uint8), mode="L")
        lab.save(root / "png" / f"{name}.png")
    return root


def refine(dataset, out, *extra, cams="irn"):
    return cli.main(refine_args(out, *extra, images=dataset / "images", cams=dataset / cams))


def outputs(folder):
    return {
        f: np.asarray(Image.open(os.path.join(folder, f))) for f in sorted(os.listdir(folder)) if f.endswith(".png")
    }


def test_formats_and_outputs(dataset, tmp_path):
    results = {}
    for fmt in ("irn", "eps", "array", "array21"):
        out = tmp_path / fmt
        assert refine(dataset, out, "--format", "auto", cams=fmt) == 0
        results[fmt] = outputs(out)
        assert len(results[fmt]) == N_IMAGES
        im = Image.open(out / "img0.png")
        assert im.mode == "P" and im.size == (80, 80) and im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
        assert not [f for f in os.listdir(out) if ".tmp" in f]
    for fmt in ("eps", "array", "array21"):  # one CAM, four encodings: the same masks
        for name in results["irn"]:
            np.testing.assert_array_equal(results[fmt][name], results["irn"][name])
    # Label PNGs, with an explicit format, and saved scores.
    out = tmp_path / "png"
    assert refine(dataset, out, "--format", "png", "--save-scores", cams="png") == 0
    assert len(outputs(out)) == N_IMAGES
    scores = np.load(out / "img0.npy")
    assert scores.shape == (20, 80, 80) and scores.dtype == np.float32


def test_read_cam_formats_agree(dataset):
    a = read_cam(str(dataset / "irn" / "img1.npy"), "auto", 20)
    for fmt in ("eps", "array", "array21"):
        b = read_cam(str(dataset / fmt / "img1.npy"), "auto", 20)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.present, b.present)


def test_ground_truth_evaluation(dataset, tmp_path, capsys):
    assert refine(dataset, tmp_path, "--gt", str(dataset / "gt"), "--bg-threshold", "0.3") == 0
    printed = capsys.readouterr().out
    assert "mIoU over 6 images" in printed
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["images"] == N_IMAGES and report["miou_after"] > report["miou_before"]


def test_list_and_bad_files(dataset, tmp_path, capsys):
    bad = tmp_path / "bad"
    for sub in ("images", "irn"):
        (bad / sub).mkdir(parents=True)
    for i in range(4):
        for sub, ext in (("images", ".jpg"), ("irn", ".npy")):
            (bad / sub / f"img{i}{ext}").write_bytes((dataset / sub / f"img{i}{ext}").read_bytes())
    (bad / "irn" / "img1.npy").write_bytes(b"\x93NUMPY garbage")  # corrupt CAM
    (bad / "irn" / "img2.npy").unlink()  # missing CAM
    data = (bad / "images" / "img3.jpg").read_bytes()
    (bad / "images" / "img3.jpg").write_bytes(data[: len(data) // 3])  # truncated image
    (bad / "list.txt").write_text("img0\nimg1\nimg2\nimg3\n")
    out = tmp_path / "out"
    code = cli.main(
        refine_args(out, "--list", str(bad / "list.txt"), images=bad / "images", cams=bad / "irn", workers=2)
    )
    assert code == 1
    assert sorted(outputs(out)) == ["img0.png"]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    by_image = {e["image"]: e for e in errors}
    assert set(by_image) == {"img1", "img2", "img3"}
    assert by_image["img1"]["stage"] == "cam" and "npy" in by_image["img1"]["error"]
    assert by_image["img2"]["stage"] == "cam" and "no CAM" in by_image["img2"]["error"]
    assert by_image["img3"]["stage"] == "image"
    assert "1 refined, 0 already done, 3 failed" in capsys.readouterr().out
    # A list restricted to one image.
    (bad / "one.txt").write_text("img0\n")
    out2 = tmp_path / "out2"
    one = refine_args(out2, "--list", str(bad / "one.txt"), images=bad / "images", cams=bad / "irn", workers=None)
    assert cli.main(one) == 0
    assert sorted(outputs(out2)) == ["img0.png"]


def test_outputs_do_not_depend_on_batch_size_or_workers(dataset, tmp_path):
    assert refine(dataset, tmp_path / "a", "--batch-size", "1") == 0
    assert refine(dataset, tmp_path / "b", "--batch-size", "4", "--workers", "2") == 0
    a, b = outputs(tmp_path / "a"), outputs(tmp_path / "b")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_rerun_skips_finished_outputs(dataset, tmp_path, capsys):
    assert refine(dataset, tmp_path) == 0
    first = outputs(tmp_path)
    os.remove(tmp_path / "img2.png")
    capsys.readouterr()
    assert refine(dataset, tmp_path) == 0
    assert "1 refined, 5 already done, 0 failed" in capsys.readouterr().out
    again = outputs(tmp_path)
    assert all(np.array_equal(first[k], again[k]) for k in first)


def _command(dataset, out, *extra):
    args = refine_args(out, "--batch-size", "1", *extra, images=dataset / "images", cams=dataset / "irn")
    return [sys.executable, "-m", "spl", *args]


def test_killed_job_resumes_to_the_same_outputs(dataset, tmp_path):
    reference = tmp_path / "reference"
    assert refine(dataset, reference, "--batch-size", "1") == 0
    out = tmp_path / "killed"
    # Slow each image down (many rounds) so that the kill lands in the middle of the job.
    slow = ("--iters", "4000")
    proc = subprocess.Popen(_command(dataset, out, *slow), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any(f.endswith(".png") for f in os.listdir(out))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [f for f in os.listdir(out) if f.endswith(".png")]
    assert 1 <= len(finished) < N_IMAGES, "the kill should land mid-job"
    for f in finished:  # whatever exists is complete
        assert np.asarray(Image.open(out / f)).shape == (80, 80)
    # Resume with the reference settings: finished files are kept, the rest are made.
    for f in finished:  # the slow run used other settings: start those over too, to compare
        os.remove(out / f)
    # A kill during a write leaves a temporary behind (make sure there is one): the rerun removes it.
    (out / "img2.png.tmp-99999").write_bytes(b"\x89PNG half")
    assert subprocess.run(_command(dataset, out), stdout=subprocess.DEVNULL).returncode == 0
    resumed, expected = outputs(out), outputs(reference)
    assert resumed.keys() == expected.keys() and all(np.array_equal(resumed[k], expected[k]) for k in expected)
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_torchrun_two_cpu_processes(dataset, tmp_path):
    single = tmp_path / "single"
    assert refine(dataset, single, "--gt", str(dataset / "gt")) == 0
    out = tmp_path / "ranks"
    env = dict(os.environ, SPL_DIST_BACKEND="gloo", OMP_NUM_THREADS="1")
    args = refine_args(out, "--gt", str(dataset / "gt"), images=dataset / "images", cams=dataset / "irn")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    cmd += ["-m", "spl", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 refined, 0 already done, 0 failed (6 images, 2 processes" in result.stdout
    a, b = outputs(single), outputs(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    one, two = json.loads((single / "eval.json").read_text()), json.loads((out / "eval.json").read_text())
    assert one["miou_after"] == pytest.approx(two["miou_after"]) and two["images"] == N_IMAGES


def test_bad_arguments(dataset, tmp_path, capsys):
    assert (
        cli.main(
            [
                "refine",
                "--images",
                str(tmp_path / "nowhere"),
                "--cams",
                str(dataset / "irn"),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "--images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            [
                "refine",
                "--images",
                str(dataset / "images"),
                "--cams",
                str(dataset / "irn"),
                "--out",
                str(tmp_path / "o"),
                "--format",
                "jpeg",
            ]
        )


@pytest.mark.parametrize(
    "option, message",
    [
        (("--iters", "-1"), "--iters must be in [0, 10000], got -1"),
        (("--steps", "100000"), "--steps must be in [0, 10000]"),
        (("--hops", "100"), "--hops must be in [1, 64]"),
        (("--alpha", "2"), "--alpha must be a finite number"),
        (("--n-segments", "0"), "--n-segments must be in [1,"),
        (("--compactness", "nan"), "--compactness must be a finite number > 0.0"),
        (("--edge-sigma", "-1"), "--edge-sigma must be a finite number > 0.0"),
        (("--bg-threshold", "0"), "--bg-threshold must be a finite number > 0"),
        (("--batch-size", "0"), "--batch-size must be at least 1"),
        (("--workers", "-1"), "--workers must be at least 0"),
        (("--threads", "0"), "--threads must be at least 1"),
    ],
)
def test_bad_options_stop_before_any_image(dataset, tmp_path, capsys, option, message):
    """An option out of range is one usage error (exit code 2) before anything is read or written,
    not a failure of every image (one errors.jsonl line each, exit code 1)."""
    out = tmp_path / "out"
    assert refine(dataset, out, *option) == 2
    err = capsys.readouterr().err
    assert f"spl refine: {message}" in err and "Traceback" not in err
    assert not out.exists()


def test_one_bad_item_never_fails_its_batch(dataset, tmp_path, monkeypatch):
    """A CAM with a zero-size dimension is rejected by the reader; an image whose refinement fails
    is retried alone, so the other images of its batch are refined (issue 19: 2 valid images lost)."""
    bad = tmp_path / "cams"
    bad.mkdir()
    for i in range(N_IMAGES):
        (bad / f"img{i}.npy").write_bytes((dataset / "irn" / f"img{i}.npy").read_bytes())
    np.save(bad / "img1.npy", {"keys": np.array([0]), "high_res": np.zeros((1, 0, 80), np.float32)})
    from spl import asam

    real = asam.asam_refine
    poisoned = np.asarray(Image.open(dataset / "images" / "img4.jpg"))[0, 0]

    def flaky(images, cams, *args, **kwargs):  # fails on any batch that holds img4
        hit = (images[:, :, 0, 0].permute(0, 1).cpu() == torch.from_numpy(poisoned)[None]).all(1).any()
        if bool(hit):
            raise RuntimeError("refinement failed for this image")
        return real(images, cams, *args, **kwargs)

    monkeypatch.setattr(asam, "asam_refine", flaky)
    out = tmp_path / "out"
    code = cli.main(refine_args(out, "--batch-size", "8", images=dataset / "images", cams=bad))
    assert code == 1
    errors = {e["image"]: e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"img1", "img4"}
    assert errors["img1"]["stage"] == "cam" and "at least 1x1" in errors["img1"]["error"]
    assert errors["img4"]["stage"] == "refine"
    assert sorted(outputs(out)) == [f"img{i}.png" for i in (0, 2, 3, 5)]


def test_output_location_problems_are_one_line_usage_errors(dataset, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below"):
        assert refine(dataset, out) == 2
        err = capsys.readouterr().err
        assert f"--out {out} cannot hold the outputs" in err and "Traceback" not in err
    out = tmp_path / "out"
    (out / "errors.jsonl").mkdir(parents=True)
    assert refine(dataset, out) == 2
    assert "errors.jsonl is a folder" in capsys.readouterr().err


def test_a_clean_rerun_clears_earlier_failures(dataset, tmp_path):
    cams = tmp_path / "cams"
    cams.mkdir()
    for i in range(N_IMAGES):
        (cams / f"img{i}.npy").write_bytes((dataset / "irn" / f"img{i}.npy").read_bytes())
    (cams / "img3.npy").write_bytes(b"garbage")
    out = tmp_path / "out"
    args = refine_args(out, images=dataset / "images", cams=cams)
    assert cli.main(args) == 1
    assert "img3" in (out / "errors.jsonl").read_text()
    (cams / "img3.npy").write_bytes((dataset / "irn" / "img3.npy").read_bytes())  # fixed
    assert cli.main(args) == 0
    assert (out / "errors.jsonl").read_text() == ""


def test_two_refines_on_one_folder(dataset, tmp_path):
    """The second waits for nothing and deletes nothing: it stops at once with exit code 3 and a
    message naming the first, which goes on undisturbed; once the first is gone (even killed), the
    lock is free again."""
    out = tmp_path / "out"
    first = subprocess.Popen(
        _command(dataset, out, "--iters", "10000", "--steps", "1000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "errors.jsonl").exists():  # past the lock
            time.sleep(0.05)
        second = subprocess.run(_command(dataset, out), capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"another spl refine (pid {first.pid}) is writing to" in second.stderr
        assert first.poll() is None  # still running
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert subprocess.run(_command(dataset, out), stdout=subprocess.DEVNULL).returncode == 0
    assert len(outputs(out)) == N_IMAGES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_killed_refine_leaves_no_orphaned_workers(dataset, tmp_path):
    out = tmp_path / "out"
    cmd = _command(dataset, out, "--iters", "4000")
    cmd[cmd.index("--workers") + 1] = "2"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 2:
        workers = descendants(proc.pid)
        time.sleep(0.1)
    assert len(workers) >= 2, "the DataLoader workers should have started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Immediately, not after torch's 5-second watchdog (which a busy worker does not even reach).
    deadline = time.time() + 2
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    orphans = [w for w in workers if alive(w)]
    assert not orphans, f"orphaned workers: {orphans}"


def test_threads_option_sets_the_main_process_threads_and_gives_them_back(dataset, tmp_path, monkeypatch):
    from spl.apps import common
    from spl.apps import refine as refine_module

    seen = []
    real = refine_module.budget_threads

    def spy(threads, world=1):
        seen.append(real(threads, world))
        seen.append(torch.get_num_threads())
        return seen[-1]

    monkeypatch.setattr(refine_module, "budget_threads", spy)
    before = torch.get_num_threads()
    assert refine(dataset, tmp_path / "a", "--threads", "1") == 0
    assert seen == [1, 1] and torch.get_num_threads() == before
    seen.clear()
    monkeypatch.setattr(common, "available_cpus", lambda: 6)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert refine(dataset, tmp_path / "b") == 0
    assert seen == [3, 3] and torch.get_num_threads() == before  # 6 CPUs shared by 2 processes
