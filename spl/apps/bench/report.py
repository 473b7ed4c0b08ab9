"""Reporting: the environment, tables, plots, merged reports, the files written."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import List

import torch

from .data import SOURCE_ROOT

# ---------------------------------------------------------------------------------------- reporting


def environment(device: str, bandwidth: float) -> dict:
    import spl

    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "spl": spl.__version__,
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "spl_cuda_kernels": spl.cuda_version() or None,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
    }
    try:
        env["git"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=SOURCE_ROOT, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        env["git"] = None
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3g}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def tables(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"spl bench on {env['gpu'] or env['cpu']} ({env['device']}), torch {env['torch']}, "
        f"{env['cpu_threads']} CPU threads, {env['date']}; copy bandwidth {env['copy_bandwidth_gb_s']:.0f} GB/s"
    ]
    rows = report["results"]
    order = ("W1", "W1 quality", "W2", "W3", "W3 quality", "refine")
    for workload in [w for w in order if any(r["workload"] == w for r in rows)]:
        mine = [r for r in rows if r["workload"] == workload]
        lines.append("")
        if workload == "W1 quality":
            lines += slic_quality_table(mine)
            continue
        if workload == "W3 quality":
            lines.append(f"### W3 quality: {mine[0]['case']}")
            lines.append(
                "Each method refines once with its defaults; the background threshold t is swept over "
                "its output (DenseCRF, which takes t as input, runs at each t)."
            )
            lines.append(
                "| method | mIoU (best t) | gain over raw CAM | best t | mIoU at the raw CAM's t | ms / image |"
            )
            lines.append("|---|---|---|---|---|---|")
            for r in mine:
                at = r.get("miou_at_raw_t")
                lines.append(
                    f"| {r['method']} | {r['miou']:.2f} | {r['gain']:+.2f} | {r['threshold']:.2f} | "
                    f"{'' if at is None else f'{at:.2f}'} | {_fmt_ms(r['ms_per_image'])} |"
                )
            continue
        for case in dict.fromkeys(r["case"] for r in mine):
            lines.append(f"### {workload}: {case}")
            lines.append(
                "| method | device | images / call | ms / call (median, min-max, runs) | ms / image | "
                "x spl's time | floor ms (achieved) | quality |"
            )
            lines.append("|---|---|---|---|---|---|---|---|")
            for r in (r for r in mine if r["case"] == case):
                floor = f"{_fmt_ms(r['floor_ms'])} ({r['floor_fraction']:.0%})" if "floor_ms" in r else ""
                q = ""
                if "boundary_recall" in r:
                    q = (
                        f"BR {r['boundary_recall']:.3f}, UE {r['undersegmentation_error']:.4f}, "
                        f"ASA {r['achievable_segmentation_accuracy']:.4f}, {r['segments']:.0f} segments"
                    )
                elif "miou_after" in r:
                    q = f"mIoU {r['miou_before']:.1f} -> {r['miou_after']:.1f}"
                if "images_per_s" in r:
                    q = (q + "; " if q else "") + f"{r['images_per_s']:.1f} images/s"
                vs = f"{r['vs_spl']:.1f}x" if "vs_spl" in r else ""
                lines.append(
                    f"| {r['method']} | {r['device']} | {r['images']} | {_fmt_ms(r['ms'])} "
                    f"({_fmt_ms(r['ms_min'])}-{_fmt_ms(r['ms_max'])}, {r['runs']}) | "
                    f"{_fmt_ms(r['ms_per_image'])} | {vs} | {floor} | {q} |"
                )
        for n in report["notes"].get(workload, []):
            lines.append(f"- {n}")
    if report.get("contention"):
        from .contention import contention_table

        lines += [""] + contention_table(report["contention"])
    if report["skipped"]:
        lines.append("\nskipped: " + "; ".join(report["skipped"]))
    return "\n".join(lines)


def slic_quality_table(rows: List[dict]) -> List[str]:
    """The quality sweep of W1 as a table, and per peer how often spl does better at equal BR."""
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        lines.append(f"### W1 quality against compactness: {case}")
        lines.append("| method | compactness | BR | UE | ASA | segments | spl's UE at this BR | spl's ASA at this BR |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in mine:
            at = (
                f"{r['spl_ue_at_br']:.4f} | {r['spl_asa_at_br']:.4f}"
                if "spl_ue_at_br" in r
                else ("" if r["method"] == "spl" else "outside spl's BR range") + " | "
            )
            lines.append(
                f"| {r['method']} | {r['compactness']:g} | {r['boundary_recall']:.3f} | "
                f"{r['undersegmentation_error']:.4f} | {r['achievable_segmentation_accuracy']:.4f} | "
                f"{r['segments']:.0f} | {at} |"
            )
        for peer in dict.fromkeys(r["method"] for r in mine if r["method"] != "spl"):
            inside = [r for r in mine if r["method"] == peer and "spl_ue_at_br" in r]
            if inside:
                ue = sum(r["spl_ue_at_br"] <= r["undersegmentation_error"] for r in inside)
                asa = sum(r["spl_asa_at_br"] >= r["achievable_segmentation_accuracy"] for r in inside)
                lines.append(
                    f"- {peer}: at equal boundary recall spl's UE is as low or lower at {ue} of "
                    f"{len(inside)} points, its ASA as high or higher at {asa} of {len(inside)}"
                )
    return lines


def plot_slic_quality(report: dict, out: str) -> List[str]:
    """UE against BR over the compactness sweep, one curve per method (lower right is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["workload"] == "W1 quality"]
    if not rows:
        return []
    env = report["environment"]
    fig, ax = plt.subplots(figsize=(7, 5))
    for method in dict.fromkeys(r["method"] for r in rows):
        line = [r for r in rows if r["method"] == method]
        ax.plot(
            [r["boundary_recall"] for r in line], [r["undersegmentation_error"] for r in line], marker="o", label=method
        )
        for r in line:
            ax.annotate(
                f"{r['compactness']:g}",
                (r["boundary_recall"], r["undersegmentation_error"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("boundary recall (r = 2 px), higher is better")
    ax.set_ylabel("undersegmentation error, lower is better")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"SLIC quality against compactness (labels): {rows[0]['case'].split(' (')[0]}", fontsize=9)
    fig.suptitle(f"spl bench: {env['gpu'] or env['cpu']}, {env['date'][:10]}", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "quality_slic.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot(report: dict, out: str) -> List[str]:
    """One PNG per swept op: time against batch size, image size and K (log-log), one line per method."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    env = report["environment"]
    for op in dict.fromkeys(s["op"] for s in report["scaling"]):
        points = [s for s in report["scaling"] if s["op"] == op]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
        for ax, axis in zip(axes, ("batch", "size", "K")):
            on_axis = [s for s in points if s["axis"] == axis]
            for method in dict.fromkeys(s["method"] for s in on_axis):
                line = [s for s in on_axis if s["method"] == method]
                ax.errorbar(
                    [s["value"] for s in line],
                    [s["ms"] for s in line],
                    yerr=[[s["ms"] - s["ms_min"] for s in line], [s["ms_max"] - s["ms"] for s in line]],
                    marker="o",
                    capsize=2,
                    label=f"{method} ({line[0]['device']})",
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xticks(sorted({s["value"] for s in on_axis}))
            ax.grid(True, which="both", alpha=0.3)
            fixed = {k: on_axis[0][k] for k in ("batch", "size", "K") if k != axis} if on_axis else {}
            label = {"batch": "batch size", "size": "image side (pixels, square)", "K": "superpixels K"}[axis]
            ax.set_xlabel(label)
            ax.set_ylabel("ms per call (median)")
            ax.set_title(", ".join(f"{k} {v}" for k, v in fixed.items()), fontsize=10)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"spl bench, {op}: {env['gpu'] or env['cpu']}, torch {env['torch']}, {env['date'][:10]}")
        fig.tight_layout()
        path = os.path.join(out, f"scaling_{op.lower()}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
