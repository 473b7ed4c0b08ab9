"""SIGKILL at several points of `spl refine` and `spl train`, resume after each: the same outputs as an
uninterrupted run, bit for bit; no temporaries left; no process of the killed job left alive.

Ten kills per driver (20 in all): one during start-up, then each once the resumed run has made a
step of progress (2 masks written, 4 iterations logged), so the kills walk through reading,
refining or training, writing and checkpointing; after each the job is resumed (refine: rerun,
train: ``--resume``), and a last run completes."""

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

from spl.formats import voc_palette

from conftest import alive, collage, descendants, refine_args, train_args

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")

KILLS = 10  # per driver: 20 in all
N_IMAGES = 40


def timed_run(command):
    start = time.time()
    assert subprocess.run(command, stdout=subprocess.DEVNULL).returncode == 0
    return time.time() - start


def kill_and_resume(command, progress, step, startup, resume_extra=()):
    """Runs ``command`` (+ ``resume_extra`` after the first run) and SIGKILLs it KILLS times, checking
    each time that no process of it survives; then one last run to completion. Returns how many kills
    landed on a running job.

    The first kill lands halfway through start-up (``startup`` seconds: a run with nothing left to do).
    Every later run is killed once ``progress()`` (outputs written, iterations logged) has grown by
    ``step`` since the run started, a few milliseconds later each time, so the kills walk through the
    job: reading, refining or training, writing, checkpointing."""
    landed = 0
    for k in range(KILLS):
        cmd = command + (list(resume_extra) if k else [])
        start_progress = progress()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + (0.5 * startup if k == 0 else 30 * startup)
        children = []
        while time.time() < deadline and proc.poll() is None:
            children = descendants(proc.pid) or children
            if k and progress() >= start_progress + step:
                time.sleep(0.007 * k)
                break
            time.sleep(0.01)
        if proc.poll() is None:
            landed += 1
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        end = time.time() + 3  # the workers die with their parent, at once (not after a watchdog)
        while time.time() < end and any(alive(c) for c in children):
            time.sleep(0.05)
        assert not [c for c in children if alive(c)], f"kill {k}: orphaned processes"
    assert (
        subprocess.run(command + list(resume_extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0
    )
    return landed


def no_temporaries(folder):
    return not [f for f in os.listdir(folder) if ".tmp" in f]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    # Enough images that every kill lands on a running job (each resumed run is killed after 2 more
    # masks, and a few more may be in flight) however fast the refinement gets.
    root = tmp_path_factory.mktemp("kill-voc")
    for sub in ("images", "gt", "cams"):
        (root / sub).mkdir()
    for i in range(N_IMAGES):
        img, truth = collage(300 + i, size=72, regions=4)
        Image.fromarray(img).save(root / "images" / f"im{i:02d}.jpg", quality=95)
        gt = Image.fromarray(truth.astype(np.uint8), mode="P")
        gt.putpalette(voc_palette())
        gt.save(root / "gt" / f"im{i:02d}.png")
        onehot = torch.nn.functional.one_hot(torch.from_numpy(truth), 21).permute(2, 0, 1).float()[None]
        coarse = torch.nn.functional.interpolate(
            torch.nn.functional.avg_pool2d(onehot, 8), size=(72, 72), mode="bilinear", align_corners=False
        )[0, 1:].numpy()
        keys = np.nonzero(coarse.reshape(20, -1).max(1) > 0)[0]
        np.save(root / "cams" / f"im{i:02d}.npy", {"keys": keys, "high_res": coarse[keys].astype(np.float32)})
    return root


def test_refine_killed_ten_times_resumes_to_the_same_outputs(voc, tmp_path):
    def command(out):
        extra = ("--gt", str(voc / "gt"), "--iters", "600", "--batch-size", "2", "--save-scores")
        return [
            sys.executable,
            "-m",
            "spl",
            *refine_args(out, *extra, images=voc / "images", cams=voc / "cams", workers=2),
        ]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    timed_run(command(whole))
    startup = timed_run(command(whole))  # every image done: start-up and evaluation only

    def masks_written():
        return len([f for f in os.listdir(killed) if f.endswith(".png")]) if killed.exists() else 0

    assert kill_and_resume(command(killed), masks_written, 2, startup) >= KILLS - 1
    names = sorted(f for f in os.listdir(whole) if f.endswith((".png", ".npy")))
    assert len(names) == 2 * N_IMAGES and sorted(f for f in os.listdir(killed) if f.endswith((".png", ".npy"))) == names
    for f in names:
        if f.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(whole / f)), np.asarray(Image.open(killed / f))), f
        else:
            assert np.array_equal(np.load(whole / f), np.load(killed / f)), f
    a, b = (json.loads((d / "eval.json").read_text()) for d in (whole, killed))
    assert a["images"] == b["images"] == N_IMAGES and a["miou_after"] == b["miou_after"] and a["curve"] == b["curve"]
    assert no_temporaries(killed)
    assert not (killed / "errors.jsonl").exists() or not (killed / "errors.jsonl").read_text().strip()


def test_train_killed_ten_times_resumes_to_the_same_weights(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(8):
        img, truth = collage(400 + i, size=64, regions=4)
        Image.fromarray(img).save(data / "images" / f"im{i}.png")
        Image.fromarray(truth.astype(np.uint8), mode="L").save(data / "labels" / f"im{i}.png")
    (data / "train.txt").write_text("".join(f"im{i}\n" for i in range(8)))

    def command(out):
        extra = ("--max-iters", "80", "--checkpoint-every", "3")
        return [sys.executable, "-m", "spl", *train_args(data, out, *extra, workers=2)]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    timed_run(command(whole))
    startup = timed_run(command(whole) + ["--resume"])  # at its last iteration: nothing to train

    def iterations_logged():
        return len((killed / "train.log").read_text().splitlines()) if (killed / "train.log").exists() else 0

    assert kill_and_resume(command(killed), iterations_logged, 4, startup, resume_extra=["--resume"]) >= KILLS - 1
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (killed / "train.log").read_text().splitlines()]
    assert [r["iteration"] for r in log] == list(range(1, 81))
    assert [r["loss"] for r in log] == [
        json.loads(line)["loss"] for line in (whole / "train.log").read_text().splitlines()
    ]
    assert no_temporaries(killed)
