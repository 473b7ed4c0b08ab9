"""spl bench: the quick benchmark end to end (tables, JSON, plots), timing rules, peers, bad arguments."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from spl.apps import bench
from spl.cli import main


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    with open(out / "bench.json") as f:
        return out, json.load(f)


def test_quick_bench_writes_every_figure(quick_report):
    out, report = quick_report
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["date"][:4].isdigit()
    assert env["copy_bandwidth_gb_s"] > 0
    rows = report["results"]
    assert {r["workload"] for r in rows} == {"W1", "W1 quality", "W2", "W3", "W3 quality", "refine"}
    for r in rows:
        if "ms" in r:
            assert 0 < r["ms_min"] <= r["ms"] <= r["ms_max"] and r["runs"] >= 1 and r["images"] >= 1
            assert r["ms_per_image"] == pytest.approx(r["ms"] / r["images"])
    for w in ("W1", "W2", "W3"):  # spl and its reference on the same device, the floor beside both
        mine = [r for r in rows if r["workload"] == w]
        assert any(r["method"].startswith("spl.reference") and r["vs_spl"] > 0 for r in mine)
        assert all(0 < r["floor_fraction"] for r in mine if r["method"].startswith("spl"))
    slic = next(r for r in rows if r["workload"] == "W1" and r["method"] == "spl")
    assert 0 < slic["boundary_recall"] <= 1 and 0 <= slic["undersegmentation_error"] < 1
    sweep = [r for r in rows if r["workload"] == "W1 quality"]  # spl only without --peers
    assert {r["method"] for r in sweep} == {"spl"} and [r["compactness"] for r in sweep] == [5.0, 10.0, 20.0]
    assert all(0 < r["boundary_recall"] <= 1 and r["segments"] > 0 for r in sweep)
    quality = {r["method"]: r for r in rows if r["workload"] == "W3 quality"}
    assert set(quality) == {"raw CAM", "ASAM (defaults)"}  # DenseCRF only with --peers
    assert quality["ASAM (defaults)"]["gain"] > 0
    refine = next(r for r in rows if r["workload"] == "refine" and r["method"] == "spl refine, end to end")
    assert refine["images_per_s"] > 0 and refine["miou_after"] > refine["miou_before"]
    # ... and the same driver on the reference ops (python -m spl.apps.reference_refine), slower.
    ref = next(r for r in rows if r["workload"] == "refine" and r["method"] == "the same driver on spl.reference ops")
    assert ref["images_per_s"] > 0 and ref["vs_spl"] > 1
    # Every op swept along all three axes, at least spl and the reference.
    for op in ("SLIC", "ASAM"):
        points = [s for s in report["scaling"] if s["op"] == op]
        assert {s["axis"] for s in points} == {"batch", "size", "K"}
        assert {"spl", "spl.reference"} <= {s["method"].split(" (")[0] for s in points}
    for name in ("scaling_slic.png", "scaling_asam.png", "quality_slic.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    text = (out / "bench.md").read_text()
    assert "### W1" in text and "### W1 quality against compactness" in text and "### W3 quality" in text
    assert "| spl |" in text


def test_quality_at_equal_boundary_recall_interpolates_along_spl_curve():
    def row(method, c, br, ue, asa):
        return {
            "workload": "W1 quality",
            "case": "x",
            "method": method,
            "compactness": c,
            "boundary_recall": br,
            "undersegmentation_error": ue,
            "achievable_segmentation_accuracy": asa,
            "segments": 100,
        }

    # spl's points out of BR order on purpose (BR falls as compactness grows).
    rows = [
        row("spl", 20, 0.70, 0.010, 0.990),
        row("spl", 5, 0.90, 0.030, 0.970),
        row("spl", 10, 0.80, 0.020, 0.980),
        row("peer", 1, 0.85, 0.020, 0.990),
        row("peer", 2, 0.80, 0.010, 0.975),
        row("peer", 3, 0.95, 0.0, 1.0),
        row("peer", 4, 0.65, 0.0, 1.0),
    ]
    bench.compare_at_equal_recall(rows)
    p1, p2, p3, p4 = rows[3:]
    assert p1["spl_ue_at_br"] == pytest.approx(0.025) and p1["spl_asa_at_br"] == pytest.approx(0.975)
    assert p2["spl_ue_at_br"] == pytest.approx(0.020) and p2["spl_asa_at_br"] == pytest.approx(0.980)
    assert "spl_ue_at_br" not in p3 and "spl_ue_at_br" not in p4  # outside spl's BR range
    assert all("spl_ue_at_br" not in r for r in rows[:3])
    text = "\n".join(bench.slic_quality_table(rows))
    # p1: spl worse on UE (0.025 > 0.020) and ASA (0.975 < 0.990); p2: spl worse on UE, better on ASA.
    assert "UE is as low or lower at 0 of 2 points, its ASA as high or higher at 1 of 2" in text
    assert text.count("outside spl's BR range") == 2


def test_measure_warms_up_rotates_and_counts():
    calls = []
    t = bench.measure(calls.append, "cpu", repeats=7, budget_s=100.0)
    assert calls == list(range(8)) and t.runs == 7  # the warm-up (0) is not timed
    assert 0 <= t.low <= t.median <= t.high
    # Calls slower than the budget: one timed call after the warm-up, not seven.
    import time

    calls.clear()
    t = bench.measure(lambda r: (calls.append(r), time.sleep(0.02)), "cpu", repeats=7, budget_s=0.01)
    assert t.runs == 1 and len(calls) == 2 and t.median >= 0.02


def test_missing_peers_are_skipped_not_errors(monkeypatch, tmp_path):
    for module in ("fast_slic", "fast_slic.avx2", "cv2", "pydensecrf", "pydensecrf.densecrf", "cuda_slic"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    peers = bench.slic_peers("cpu", 100, 10.0, 10)
    assert peers["fast-slic (AVX2)"] is None and peers["OpenCV ximgproc SLIC"] is None
    assert not bench.has_densecrf()
    b = bench.Bench("cpu", quick=True, peers=True, voc=None)
    b.budget = 0.2
    b.w1()
    skipped = " ".join(b.skipped)
    assert "fast-slic" in skipped and "OpenCV" in skipped
    assert any(r["method"].startswith("scikit-image") for r in b.rows)  # the installed peer still runs


def test_quality_without_voc_uses_scenes_of_known_shapes(tmp_path):
    described, items = bench.cam_set(None, None, 2, str(tmp_path))
    assert "scenes" in described and len(items) == 2
    name, rgb, truth, cam, present = items[0]
    assert rgb.shape[:2] == truth.shape == cam.shape[1:] and cam.shape[0] == 20
    assert set(np.nonzero(present)[0] + 1) == set(np.unique(truth[truth > 0]))
    b = bench.Bench("cpu", quick=True, voc=None)
    b._asam_quality()
    gains = {r["method"]: r["gain"] for r in b.rows}
    assert gains["ASAM (defaults)"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workload", "W9"], "--workload"),
        (["--workload", ""], "--workload"),
        (["--voc", "/nonexistent/voc"], "--voc"),
        (["--synth", "/nonexistent/synth.py"], "--synth"),
        (["--scaling-only", "--no-scaling"], "--scaling-only"),
        (["--scaling-only", "--workload", "W2"], "--scaling-only"),
    ]
    + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device cuda")]),
)
def test_bad_arguments_are_clear_errors(argv, message, tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o" / "bench.json")


def test_workload_names_are_case_insensitive():
    assert bench.parse_workloads("w1, Refine") == ["W1", "refine"]


def test_merge_combines_runs_of_one_device_and_rejects_others(quick_report, tmp_path, capsys):
    out, report = quick_report
    w1 = dict(report, results=[r for r in report["results"] if r["workload"] == "W1"], scaling=[])
    rest = dict(report, results=[r for r in report["results"] if r["workload"] != "W1"])
    paths = []
    for i, part in enumerate((w1, rest)):
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(json.dumps(part))
    assert main(["bench", "--merge", *map(str, paths), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "bench.json").read_text())
    assert len(merged["results"]) == len(report["results"]) and merged["scaling"] == report["scaling"]
    assert (tmp_path / "merged" / "scaling_slic.png").is_file()
    other = dict(report, environment=dict(report["environment"], device="cuda", gpu="Some GPU"))
    (tmp_path / "other.json").write_text(json.dumps(other))
    (tmp_path / "bad.json").write_text("{not json")
    for bad in ("other.json", "bad.json", "missing.json"):
        capsys.readouterr()
        assert main(["bench", "--merge", str(paths[0]), str(tmp_path / bad), "--out", str(tmp_path / "x")]) == 2
        assert "--merge" in capsys.readouterr().err


def test_profile_tool_runs_on_the_cpu():
    """tools/profile_kernels.py (the GPU sessions' per-kernel profile) on small inputs, so that it cannot rot."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(root, "tools", "profile_kernels.py"),
            "--device",
            "cpu",
            "--quick",
            "--rows",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for workload in (
        "W1 slic",
        "W2 pool(mean)+unpool fwd+bwd",
        "W2 consistency_weights",
        "W3 asam_refine, SLIC included",
        "W3 asam_refine, superpixels given",
    ):
        assert f"## {workload}: " in result.stdout
    assert "spl::sparse_propagate" in result.stdout and "spl::slic" in result.stdout


def test_contention_workloads_and_report(monkeypatch, tmp_path):
    """spl bench --contention: every workload runs and is timed in-process (what each child does);
    the section pairs the three settings of each workload and size, and the table shows them."""
    from spl.apps.bench import contention as bc

    threads = torch.get_num_threads()
    try:
        for name in bc.WORKLOADS:
            r = bc.time_workload(name, 1, 1, None, budget_s=0.0)
            assert r["calls"] == 5 and 0 < r["min_ms"] <= r["ms"] <= r["max_ms"] and r["threads"] == 1
    finally:
        torch.set_num_threads(threads)
    fake = {None: 10.0, 1: 8.0}
    monkeypatch.setattr(
        bc,
        "_child",
        lambda name, batch, threads, voc, budget: {
            "ms": fake[threads] * batch,
            "min_ms": 1.0,
            "max_ms": 99.0,
            "calls": 5,
            "threads": threads or 2,
        },
    )
    monkeypatch.setattr(bc.time, "sleep", lambda s: None)
    section = bc.run_contention(None, quick=True, log=lambda line: None)
    assert [(r["workload"], r["batch"]) for r in section["rows"]] == [("slic", 1), ("sparse_propagate", 1)]
    assert all(r["busy_over_one_thread"] == pytest.approx(1.25) for r in section["rows"])
    table = "\n".join(bc.contention_table(section))
    assert "| slic | 1 | 10.0 ms (2) | 10.0 ms | 8.0 ms | 1.25 |" in table


def test_contention_needs_the_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    from spl import ops

    monkeypatch.setattr(ops, "has_cuda_kernels", lambda: True)
    assert main(["bench", "--contention", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "--contention measures the CPU kernels" in capsys.readouterr().err


def test_the_checkouts_files_are_found_from_any_folder(tmp_path, monkeypatch):
    # spl bench finds benchmarks/splits (W3's report half) relative to its own source, not the cwd.
    from spl.apps.bench import data

    monkeypatch.chdir(tmp_path)
    split = data.report_split()
    assert split is not None and split.endswith(os.path.join("benchmarks", "splits", "voc-val-dev-report.txt"))
    assert os.path.isfile(split)
