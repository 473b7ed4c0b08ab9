"""The ``spl`` command line: ``spl <subcommand> ...`` (also ``python -m spl``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    import spl

    print(f"spl {spl.__version__}")
    print(f"torch {torch.__version__}")
    cuda = spl.cuda_version()
    print(
        f"CUDA kernels: {'built with CUDA ' + str(cuda // 1000) + '.' + str(cuda % 1000 // 10) if cuda else 'not built'}"
    )
    print(
        f"GPU available: {torch.cuda.is_available()}"
        + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "")
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .apps.demo import run_demo

    return run_demo(out_dir=args.out, device=args.device)


def _keeping_threads(run, args) -> int:
    """The drivers set the process's intra-op threads (--threads); a caller in the same process (a
    test, a notebook) gets its own setting back."""
    import torch

    threads = torch.get_num_threads()
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def _cmd_refine(args: argparse.Namespace) -> int:
    from .apps.refine import run_refine

    return _keeping_threads(run_refine, args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .apps.evaluate import run_eval

    return run_eval(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from .apps.train import run_train

    return _keeping_threads(run_train, args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .apps.bench import run_bench

    return run_bench(args)


# The applications' subcommands: name, module in spl.apps (which has add_arguments(parser)), help and
# description (None: the first paragraph of the module's docstring), the function that runs it.
_APPLICATIONS = (
    (
        "refine",
        "refine",
        "refine a data set's CAMs with ASAM; writes VOC-palette masks",
        "Refines CAMs with ASAM (spl.asam_refine) in batches, one GPU or many (torchrun); resumable, never "
        "loses work. See spl/apps/refine.py.",
        _cmd_refine,
    ),
    (
        "eval",
        "evaluate",
        "score CAMs (any format) or label PNGs against ground truth; --curve sweeps t",
        None,
        _cmd_eval,
    ),
    ("train", "train", "train DeepLab-v2 on pseudo-labels with the superpixel-consistency loss", None, _cmd_train),
    ("bench", "bench", "time every workload against the reference and the peers; JSON and plots", None, _cmd_bench),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spl", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True

    p = sub.add_parser("info", help="print versions and which kernels this build has")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="SLIC on scikit-image's sample images; writes overlay PNGs")
    p.add_argument("--out", default="spl-out/demo", help="output folder (default: spl-out/demo)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=_cmd_demo)

    for name, module, help_text, description, handler in _APPLICATIONS:
        app = importlib.import_module(f".apps.{module}", __package__)
        p = sub.add_parser(name, help=help_text, description=description or app.__doc__.split("\n\n")[0])
        app.add_arguments(p)
        p.set_defaults(func=handler)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
