"""SIGKILL at several points of `spl refine` and `spl train`, resume after each: the same outputs as an
uninterrupted run, bit for bit; no temporaries left; no process of the killed job left alive.

Each kill lands at another fraction of an uninterrupted run's wall time (start-up, reading, refining
or training, writing, the final evaluation); the job is then resumed (refine: rerun, train:
``--resume``) and killed again, until a last run completes."""
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

from conftest import alive, collage, descendants
from spl.refine import voc_palette

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")

KILL_FRACTIONS = (0.25, 0.45, 0.6, 0.75, 0.9)


def kill_and_resume(command, wall, resume_extra=()):
    """Runs ``command`` (+ ``resume_extra`` after the first run), SIGKILLs it at each fraction of
    ``wall`` seconds, checks that no process of it survives; then one last run to completion.
    Returns how many kills landed on a running job."""
    landed = 0
    for k, fraction in enumerate(KILL_FRACTIONS):
        cmd = command + (list(resume_extra) if k else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + fraction * wall
        children = []
        while time.time() < deadline and proc.poll() is None:
            children = descendants(proc.pid) or children
            time.sleep(0.02)
        if proc.poll() is None:
            landed += 1
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        end = time.time() + 3  # the workers die with their parent, at once (not after a watchdog)
        while time.time() < end and any(alive(c) for c in children):
            time.sleep(0.05)
        assert not [c for c in children if alive(c)], f"kill {k}: orphaned processes"
    assert subprocess.run(command + list(resume_extra), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE).returncode == 0
    return landed


def no_temporaries(folder):
    return not [f for f in os.listdir(folder) if ".tmp" in f]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-voc")
    for sub in ("images", "gt", "cams"):
        (root / sub).mkdir()
    for i in range(24):
        img, truth = collage(300 + i, size=72, regions=4)
        Image.fromarray(img).save(root / "images" / f"im{i:02d}.jpg", quality=95)
        gt = Image.fromarray(truth.astype(np.uint8), mode="P")
        gt.putpalette(voc_palette())
        gt.save(root / "gt" / f"im{i:02d}.png")
        onehot = torch.nn.functional.one_hot(torch.from_numpy(truth), 21).permute(2, 0, 1).float()[None]
        coarse = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(onehot, 8), size=(72, 72),
                                                 mode="bilinear", align_corners=False)[0, 1:].numpy()
        keys = np.nonzero(coarse.reshape(20, -1).max(1) > 0)[0]
        np.save(root / "cams" / f"im{i:02d}.npy", {"keys": keys, "high_res": coarse[keys].astype(np.float32)})
    return root


def test_refine_killed_five_times_resumes_to_the_same_outputs(voc, tmp_path):
    def command(out):
        return [sys.executable, "-m", "spl", "refine", "--images", str(voc / "images"), "--cams", str(voc / "cams"),
                "--gt", str(voc / "gt"), "--out", str(out), "--device", "cpu", "--n-segments", "60", "--iters", "300",
                "--batch-size", "2", "--workers", "2", "--save-scores", "--quiet"]

    start = time.time()
    assert subprocess.run(command(tmp_path / "whole"), stdout=subprocess.DEVNULL).returncode == 0
    wall = time.time() - start
    assert kill_and_resume(command(tmp_path / "killed"), wall) >= 3
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    names = sorted(f for f in os.listdir(whole) if f.endswith((".png", ".npy")))
    assert len(names) == 48 and sorted(f for f in os.listdir(killed) if f.endswith((".png", ".npy"))) == names
    for f in names:
        if f.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(whole / f)), np.asarray(Image.open(killed / f))), f
        else:
            assert np.array_equal(np.load(whole / f), np.load(killed / f)), f
    a, b = (json.loads((d / "eval.json").read_text()) for d in (whole, killed))
    assert a["images"] == b["images"] == 24 and a["miou_after"] == b["miou_after"] and a["curve"] == b["curve"]
    assert no_temporaries(killed)
    assert not (killed / "errors.jsonl").exists() or not (killed / "errors.jsonl").read_text().strip()


def test_train_killed_five_times_resumes_to_the_same_weights(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(8):
        img, truth = collage(400 + i, size=64, regions=4)
        Image.fromarray(img).save(data / "images" / f"im{i}.png")
        Image.fromarray(truth.astype(np.uint8), mode="L").save(data / "labels" / f"im{i}.png")
    (data / "train.txt").write_text("".join(f"im{i}\n" for i in range(8)))

    def command(out):
        return [sys.executable, "-m", "spl", "train", "--images", str(data / "images"), "--pseudo-labels",
                str(data / "labels"), "--list", str(data / "train.txt"), "--out", str(out), "--model", "deeplabv2-tiny",
                "--crop-size", "48", "--batch-size", "2", "--lr", "0.02", "--device", "cpu", "--workers", "2",
                "--n-segments", "40", "--max-iters", "40", "--checkpoint-every", "3", "--quiet"]

    start = time.time()
    assert subprocess.run(command(tmp_path / "whole"), stdout=subprocess.DEVNULL).returncode == 0
    wall = time.time() - start
    assert kill_and_resume(command(tmp_path / "killed"), wall, resume_extra=["--resume"]) >= 3
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (killed / "train.log").read_text().splitlines()]
    assert [r["iteration"] for r in log] == list(range(1, 41))
    assert [r["loss"] for r in log] == [json.loads(line)["loss"] for line in (whole / "train.log").read_text().splitlines()]
    assert no_temporaries(killed)
