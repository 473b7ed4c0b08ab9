"""``spl bench``: every spl workload against its plain-PyTorch reference and the peers, in one command.

    spl bench [--device cpu|cuda] [--workload W1,W2,W3,refine] [--quick] [--peers] [--out DIR]
              [--no-scaling] [--voc DIR] [--synth FILE]

Workloads (the benchmarks of the issues that built each part):

- W1, SLIC: 32 RGB 512x512 uint8 images, n_segments 1000, compactness 10, 10 iterations,
  connectivity on. spl and ``spl.reference.slic`` on the device; with ``--peers`` scikit-image,
  fast-slic, OpenCV ximgproc (CPU) and cuda-slic (GPU). Quality beside speed: boundary recall,
  undersegmentation error, achievable segmentation accuracy, on images with ground truth; then the
  same against compactness for every method (each scales it its own way), with spl's UE and ASA
  at each peer point's boundary recall: the comparison at equal BR (table and ``quality_slic.png``).
- W2, the loss: B=16, C=21, 512x512, K=1000: ``consistency_weights``, and ``superpixel_pool`` (mean)
  + ``superpixel_unpool`` forward and backward, against the reference ops.
- W3, ASAM: 32 VOC-size images (375x500), 20 classes (3 present) + background, ASAM's defaults
  (K=500, a mean field at 21 thresholds), SLIC included; the refinement alone for spl and for
  ``spl.reference.asam_refine`` (torch.sparse); with ``--peers`` DenseCRF (pydensecrf2, CPU).
  Quality, with the WSSS protocol (``spl.apps.cam_eval``): raw CAM, ASAM and, with ``--peers``, PAR and
  DenseCRF, each refined once, then the background threshold swept over its output; on the report
  half of voc-val-dev (``--w3-cams``: real CAMs; default simulated), else the VOC sample or scenes.
- refine: ``spl refine`` end to end as a user runs it (decode, refine, write), images per second,
  against the same driver with the reference ops swapped in.
- Scaling (unless ``--no-scaling``): time against batch size (1..64), image size (256..2048 square)
  and K (100..5000) for SLIC and ASAM, spl vs reference vs peers, as plots.

Timing: a warm-up call first; then the median of several calls (min-max and count shown), the
device synchronised around each; three input batches in rotation so that caches do not flatter.
Slow methods get fewer calls (at least one after the warm-up) within a time budget, and sweeps stop
a method once a point takes too long. Beside every figure: the physical floor, the bytes the
workload must move divided by the measured copy bandwidth of the device, and the fraction of it
achieved. ``--quick`` shrinks everything to run in well under a minute on a 2-core CPU.

Output: tables on the terminal, ``bench.json`` (device, versions, date, every figure) and PNG plots
(matplotlib) in ``--out``. A missing peer is reported as skipped, never an error.
"""

# The package's modules: timing (medians within a budget, the copy-bandwidth floor), data (inputs),
# peer_methods (the peers as the bench runs them), workloads (Bench: W1, W2, W3, refine), sweeps
# (scaling), report (tables, plots, files), cli (arguments, the run), contention (--contention).
from ..peers import has_densecrf  # noqa: F401
from .cli import add_arguments, merge_reports, parse_workloads, run_bench  # noqa: F401
from .data import asam_inputs, cam_set, photo_pool, write_refine_dataset  # noqa: F401
from .peer_methods import compare_at_equal_recall, slic_peers  # noqa: F401
from .report import slic_quality_table, tables  # noqa: F401
from .timing import Timing, measure  # noqa: F401
from .workloads import WORKLOADS, Bench, BenchError, run_refine_job  # noqa: F401
