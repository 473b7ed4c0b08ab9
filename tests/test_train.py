"""spl train: the loss goes down, resume reaches the same weights, torchrun with 2 CPU processes, bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from spl import cli
from spl.apps import models

from conftest import collage, train_args

N_IMAGES = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i in range(N_IMAGES):
        img, truth = collage(100 + i, size=64, regions=4)
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(truth.astype(np.uint8), mode="L").save(root / "labels" / f"im{i}.png")
    (root / "train.txt").write_text("".join(f"im{i}\n" for i in range(N_IMAGES)))
    (root / "val.txt").write_text("im0\nim1\n")
    return root


def train(data, out, *extra, labels=None):
    return cli.main(train_args(data, out, *extra, labels=labels))


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "train.log").read_text().splitlines()]


def test_training_lowers_the_loss(data, tmp_path):
    assert (
        train(data, tmp_path, "--max-iters", "60", "--val-list", str(data / "val.txt"), "--gt", str(data / "labels"))
        == 0
    )
    values = losses(tmp_path)
    assert len(values) == 60
    assert np.mean(values[-15:]) < 0.8 * np.mean(values[:15]), values
    assert (tmp_path / "model.pt").exists() and (tmp_path / "checkpoint.pt").exists()
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["images"] == 2 and 0 <= report["miou"] <= 100


def test_cross_entropy_switch(data, tmp_path):
    assert train(data, tmp_path, "--max-iters", "3", "--loss", "ce") == 0
    assert len(losses(tmp_path)) == 3


def test_resume_reaches_the_same_weights(data, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(data, whole, "--max-iters", "8", "--checkpoint-every", "4") == 0
    assert train(data, split, "--max-iters", "8", "--checkpoint-every", "4", "--stop-after", "3") == 0
    assert not (split / "model.pt").exists()
    assert torch.load(split / "checkpoint.pt", weights_only=False)["iteration"] == 3
    # What a SIGKILL after the checkpoint leaves: log lines past it (logged again by the resumed run),
    # a line cut in half, and a checkpoint temporary.
    with open(split / "train.log", "a") as f:
        f.write('{"iteration": 4, "loss": 1.0}\n{"iteration": 5, "loss": 1.0}\n{"iterat')
    (split / "checkpoint.pt.tmp-99999").write_bytes(b"x" * 1000)
    assert train(data, split, "--max-iters", "8", "--checkpoint-every", "4", "--resume") == 0
    assert not [f for f in os.listdir(split) if ".tmp-" in f]
    assert [json.loads(line)["iteration"] for line in (split / "train.log").read_text().splitlines()] == list(
        range(1, 9)
    )
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(split / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(whole) == losses(split)


def test_superpixels_from_a_folder(data, tmp_path):
    sp = tmp_path / "sp"
    sp.mkdir()
    import spl

    for i in range(N_IMAGES):
        img = np.asarray(Image.open(data / "images" / f"im{i}.png"))
        np.save(sp / f"im{i}.npy", spl.slic(img, 40))
    assert train(data, tmp_path / "out", "--max-iters", "3", "--superpixels", str(sp)) == 0


def test_torchrun_two_cpu_processes(data, tmp_path):
    env = dict(os.environ, SPL_DIST_BACKEND="gloo", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    cmd += ["-m", "spl", *train_args(data, tmp_path, "--max-iters", "4")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(losses(tmp_path)) == 4  # rank 0 alone writes the log
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "model.pt", "train.log"]


def test_bad_inputs(data, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(N_IMAGES):
        (bad / f"im{i}.png").write_bytes((data / "labels" / f"im{i}.png").read_bytes())
    (bad / "im3.png").unlink()
    assert train(data, tmp_path / "o1", "--max-iters", "2", labels=bad) == 2
    assert "missing pseudo-label file" in capsys.readouterr().err
    Image.fromarray(np.zeros((30, 64), np.uint8), mode="L").save(bad / "im3.png")
    assert train(data, tmp_path / "o2", "--max-iters", "2", labels=bad) == 2
    assert "pseudo-label is 30x64 but the image is 64x64" in capsys.readouterr().err
    Image.fromarray(np.full((64, 64), 30, np.uint8), mode="L").save(bad / "im3.png")
    assert train(data, tmp_path / "o3", "--max-iters", "8", labels=bad) == 2
    assert "class index 30 >= num_classes 21" in capsys.readouterr().err
    threads = torch.get_num_threads()
    assert train(data, tmp_path / "o5", "--max-iters", "2", "--threads", "0") == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
    assert train(data, tmp_path / "o6", "--max-iters", "2", "--threads", "1") == 0
    assert torch.get_num_threads() == threads  # the caller's setting comes back
    assert (
        cli.main(
            [
                "train",
                "--images",
                str(data / "images"),
                "--pseudo-labels",
                str(data / "labels"),
                "--list",
                str(tmp_path / "nolist.txt"),
                "--out",
                str(tmp_path / "o4"),
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit):
        cli.main(
            ["train", "--images", "x", "--pseudo-labels", "y", "--list", "z", "--out", "o", "--model", "resnet9000"]
        )


def test_backbone_weights_load(tmp_path):
    model = models.build_model("deeplabv2-tiny", 21)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.backbone.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 64)  # a classifier, dropped
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "w.pt")
    models.load_backbone(model, str(tmp_path / "w.pt"))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not fit"):
        models.load_backbone(models.build_model("deeplabv2-tiny", 21), str(tmp_path / "bad.pt"))
    torch.save({"layer1.0.conv1.weight": model.backbone.layer1[0].conv1.weight}, tmp_path / "part.pt")
    with pytest.raises(ValueError, match="missing keys"):
        models.load_backbone(models.build_model("deeplabv2-tiny", 21), str(tmp_path / "part.pt"))


def test_deeplab_resnet50_layout():
    model = models.build_model("deeplabv2-resnet50", 21).eval()
    keys = set(model.backbone.state_dict())
    # torchvision's ResNet-50 names (its ImageNet weights load as they are)
    for k in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer3.5.bn3.weight",
        "layer4.2.conv3.weight",
    ):
        assert k in keys
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 65))
    assert out.shape == (1, 21, 9, 9)  # output stride 8
