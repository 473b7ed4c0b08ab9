"""``spl refine`` on the reference ops: the same driver (reading, batching, writing, evaluation) with
``spl.reference``'s SLIC and ASAM (torch.sparse) in place of the kernels. ``spl bench``'s refine
workload times it against ``spl refine``, each in a process of its own, as a user runs it:

    python -m spl.apps.reference_refine --images ... --cams ... --out ...   (spl refine's options)
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import torch

from .. import reference
from ..asam import THRESHOLDS
from .refine import ASAM_OPTIONS, run_refine

# The ASAM options the reference takes; the others configure the kernels' pipeline (n_segments and
# compactness are the SLIC call's, below).
KERNEL_ONLY_OPTIONS = ("n_segments", "compactness", "hops", "edge_sigma")
REFERENCE_OPTIONS = tuple(name for name in ASAM_OPTIONS if name not in KERNEL_ONLY_OPTIONS)


def reference_asam_refine(images, cams, class_mask=None, n_segments=500, compactness=10.0, **options):
    """``spl.asam_refine``'s signature on ``spl.reference``'s SLIC and ASAM."""
    if class_mask is None:
        class_mask = torch.ones(cams.shape[:2], dtype=torch.bool, device=cams.device)
    labels = reference.slic(images, n_segments, compactness)
    return reference.asam_refine(
        images,
        cams,
        labels,
        class_mask,
        thresholds=THRESHOLDS,
        **{k: v for k, v in options.items() if k in REFERENCE_OPTIONS},
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..cli import build_parser

    args = build_parser().parse_args(["refine", *(sys.argv[1:] if argv is None else argv)])
    return run_refine(args, refiner=reference_asam_refine)


if __name__ == "__main__":
    sys.exit(main())
