"""The peers as spl bench runs them: scikit-image, fast-slic, OpenCV ximgproc and cuda-slic SLIC; DenseCRF."""

from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------- peers


def slic_peers(device: str, n_segments: int, compactness: float, iters: int) -> Dict[str, Optional[Callable]]:
    """name -> segment(rgb uint8 (H, W, 3)) -> labels, or None where the peer is not installed. The GPU
    peer (cuda-slic) only for a CUDA run, the CPU peers for either (they run on the host)."""
    peers: Dict[str, Optional[Callable]] = {}
    try:
        import skimage
        from skimage.segmentation import slic as sk_slic

        peers[f"scikit-image {skimage.__version__} slic"] = lambda im: sk_slic(
            im, n_segments=n_segments, compactness=compactness, max_num_iter=iters, start_label=0
        )
    except ImportError:
        peers["scikit-image slic"] = None
    try:
        from fast_slic.avx2 import SlicAvx2

        peers["fast-slic (AVX2)"] = lambda im: SlicAvx2(
            num_components=n_segments, compactness=compactness, num_threads=torch.get_num_threads()
        ).iterate(np.ascontiguousarray(im), max_iter=iters)
    except ImportError:
        peers["fast-slic (AVX2)"] = None
    try:
        import cv2

        cv2.ximgproc.createSuperpixelSLIC  # noqa: B018  (only opencv-contrib has it)

        def opencv(im):
            lab = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2LAB)
            step = max(1, int(round((im.shape[0] * im.shape[1] / n_segments) ** 0.5)))
            s = cv2.ximgproc.createSuperpixelSLIC(lab, algorithm=cv2.ximgproc.SLIC, region_size=step, ruler=compactness)
            s.iterate(iters)
            s.enforceLabelConnectivity(25)
            return s.getLabels()

        peers[f"OpenCV {cv2.__version__} ximgproc SLIC"] = opencv
    except (ImportError, AttributeError):
        peers["OpenCV ximgproc SLIC"] = None
    if device.startswith("cuda"):
        try:
            from cuda_slic.slic import slic as cuda_slic

            def gpu_peer(im):
                # cuda-slic runs on pycuda when it can import it, and pycuda.autoinit makes a context of
                # its own current: torch's later kernels would then run in it, on pointers of another
                # context. Hide pycuda during the call so that cuda-slic takes its CuPy path, which
                # shares torch's (primary) context.
                saved = {m: sys.modules.get(m) for m in ("pycuda", "pycuda.autoinit")}
                sys.modules.update(dict.fromkeys(saved))  # None: "import pycuda" raises ImportError
                try:
                    return cuda_slic(im, n_segments=n_segments, compactness=compactness, max_iter=iters)
                finally:
                    for m, module in saved.items():
                        if module is None:
                            sys.modules.pop(m, None)
                        else:
                            sys.modules[m] = module

            peers["cuda-slic"] = gpu_peer
        except Exception:  # ImportError, or pycuda failing to find a device or compiler
            peers["cuda-slic"] = None
    return peers


def compare_at_equal_recall(rows: List[dict]) -> None:
    """Adds ``spl_ue_at_br`` and ``spl_asa_at_br`` to each peer row of a quality sweep: spl's UE and
    ASA at the peer's boundary recall, linear between the two spl points of nearest BR on either side
    (spl's points ordered by BR). A peer point outside the BR range of spl's sweep gets none."""
    mine = sorted((r for r in rows if r["method"] == "spl"), key=lambda r: r["boundary_recall"])
    for r in rows:
        if r["method"] == "spl":
            continue
        br = r["boundary_recall"]
        for lo, hi in zip(mine, mine[1:]):
            if lo["boundary_recall"] <= br <= hi["boundary_recall"]:
                span = hi["boundary_recall"] - lo["boundary_recall"]
                w = (br - lo["boundary_recall"]) / span if span > 0 else 0.0
                for key, out in (
                    ("undersegmentation_error", "spl_ue_at_br"),
                    ("achievable_segmentation_accuracy", "spl_asa_at_br"),
                ):
                    r[out] = (1 - w) * lo[key] + w * hi[key]
                break


def densecrf(rgb: np.ndarray, cam: np.ndarray, present: np.ndarray, t: float) -> np.ndarray:
    """Labels (H, W) 0..20 by DenseCRF (``spl.apps.peers.densecrf_labels``) of the present classes' scores."""
    from ..peers import densecrf_labels

    return np.concatenate([[0], np.nonzero(present)[0] + 1])[densecrf_labels(rgb, cam[present], t)]
