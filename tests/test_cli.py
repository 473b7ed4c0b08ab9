import subprocess
import sys

import spl


def run(*args):
    return subprocess.run([sys.executable, "-m", "spl", *args], capture_output=True, text=True, timeout=300)


def test_info():
    result = run("info")
    assert result.returncode == 0, result.stderr
    assert "spl " in result.stdout and "torch " in result.stdout
    assert isinstance(spl.cuda_version(), int)
    assert (spl.cuda_version() > 0) == spl.has_cuda_kernels()


def test_demo_writes_overlays(tmp_path):
    result = run("demo", "--out", str(tmp_path), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    from PIL import Image

    for name in ("astronaut", "coffee", "chelsea"):
        path = tmp_path / f"{name}_slic.png"
        assert path.exists()
        with Image.open(path) as im:
            assert im.mode == "RGB" and min(im.size) >= 300
    for i in range(4):  # ASAM strips: superpixels | before | after | truth
        with Image.open(tmp_path / f"scene{i}_asam.png") as im:
            assert im.size == (4 * 288, 288)
    assert "mIoU at each one's best background threshold: raw CAM" in result.stdout and "-> ASAM" in result.stdout


def test_usage_errors():
    result = run()
    assert result.returncode != 0 and "usage" in result.stderr.lower()
    result = run("no-such-command")
    assert result.returncode != 0
