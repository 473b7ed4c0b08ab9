"""What the drivers (spl refine, eval, train) share: atomic writes, output folders and their locks,
DataLoader workers that die with their job, the thread budget, and torch.distributed set-up."""

from __future__ import annotations

import os
import sys
from typing import Optional

import torch


def atomic_write(path: str, write) -> None:
    """Writes through ``write(tmp_path)`` then renames: readers never see a partial file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def die_with_parent(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the worker is killed when its parent dies, even by SIGKILL (the
    parent cannot clean up then; each orphaned worker held ~200 MB for minutes). Linux only."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or a job system's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def budget_threads(threads: Optional[int], world: int = 1) -> int:
    """Sets and returns the main process's intra-op threads (--threads). Each DataLoader worker runs
    one thread (torch sets that in every worker). By default the main process takes the CPUs this
    process may use, shared among the processes of a torchrun job: the workers decode and wait most
    of the time, and spl's CPU kernels and asam_refine keep their speed beside them (issue 16; on 2
    cores with 2 workers, 80 VOC images: 2 threads were ~10% faster than 1 idle, and equal beside
    a busy process; README: Threads)."""
    if threads is None:  # the processes of a torchrun job on this machine share its CPUs
        threads = max(1, available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    torch.set_num_threads(threads)
    return threads


class OutputLocked(RuntimeError):
    pass


def lock_output(out_dir: str, what: str, rank: int = 0):
    """Takes ``OUT/.spl-<what>.rank<r>.lock`` (flock: released by the kernel when the process dies, even
    by SIGKILL); returns the open file, to keep. Raises OutputLocked when another live process holds it."""
    import fcntl

    path = os.path.join(out_dir, f".spl-{what}.rank{rank}.lock")
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise OutputLocked(
            f"another spl {what} (pid {holder}) is writing to {out_dir}; wait for it to finish or use another --out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def prepare_output(out_dir: str, prog: str) -> Optional[str]:
    """Creates the output folder and checks that it takes files; returns a one-line message instead of
    raising (an output location that does not work is a usage error, not an image's failure)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".spl-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        return f"{prog}: --out {out_dir} cannot hold the outputs ({e.strerror or type(e).__name__})"
    return None


def distributed():
    """(rank, world size, local rank), initialising torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("SPL_DIST_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), local


def add_dataset_arguments(p, *, background: bool) -> None:
    """--dataset and --num-classes, as spl refine, eval and train take them. background: whether
    --num-classes counts the background (train: the model's outputs) or only the foreground classes
    (refine, eval: the CAMs' channels)."""
    from ..formats import DATASETS

    names = "voc (20 classes + background) or coco (80 + background)"
    p.add_argument("--dataset", default="voc", choices=sorted(DATASETS), help=f"{names}: class count and names")
    if background:
        num_help = "classes, background included (default: the data set's, 21 for voc, 81 for coco)"
    else:
        num_help = "foreground classes (default: the data set's, 20 for voc, 80 for coco)"
    p.add_argument("--num-classes", type=int, default=None, help=num_help)


def add_threads_argument(p) -> None:
    """--threads, as spl refine and train take it (budget_threads applies it)."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads of the main process (each worker runs one); default: the CPUs this "
        "process may use, shared among a torchrun job's processes",
    )
