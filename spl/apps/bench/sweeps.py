"""Scaling: time against batch size, image size and K for SLIC and ASAM, spl vs reference vs peers."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ..peers import has_densecrf
from .data import asam_inputs, photo_batches, photo_pool
from .peer_methods import densecrf, slic_peers
from .timing import measure


class ScalingSweeps:
    """The scaling sweeps of Bench (a mixin: uses its device, budget, scaling, skip, progress)."""

    def sweep(self, op: str) -> None:
        self._sweeps(op, self._slic_methods() if op == "SLIC" else self._asam_methods())

    def _slic_methods(self):
        from ... import ops, reference

        def spl_fn(batch, K):
            return lambda r: ops.slic(batch, K)

        def ref_fn(batch, K):
            return lambda r: reference.slic(batch, K)

        methods = [("spl", self.device, spl_fn), ("spl.reference", self.device, ref_fn)]
        if self.peers:
            for name, segment in slic_peers(self.device, 1000, 10.0, 10).items():
                # A GPU run sweeps the GPU peer only: the CPU peers' curves belong to a CPU run.
                if segment is None or (self.device.startswith("cuda") and name != "cuda-slic"):
                    continue

                def peer(batch, K, name=name):
                    seg = slic_peers(self.device, K, 10.0, 10)[name]
                    host = batch.permute(0, 2, 3, 1).cpu().numpy()
                    return lambda r: [seg(np.ascontiguousarray(im)) for im in host]

                methods.append((name, "cuda" if name == "cuda-slic" else "cpu", peer))
        return methods

    def _asam_methods(self):
        from ... import asam, ops, reference

        def spl_fn(batch, K):
            images, cams, mask = batch
            return lambda r: asam.asam_refine(images, cams, class_mask=mask, n_segments=K)

        def spl_given(batch, K):
            images, cams, mask = batch
            labels = ops.slic(images, K)
            return lambda r: asam.asam_refine(images, cams, labels, class_mask=mask)

        def ref_given(batch, K):
            images, cams, mask = batch
            labels = ops.slic(images, K)
            return lambda r: reference.asam_refine(images, cams, labels, mask)

        methods = [
            ("spl (SLIC included)", self.device, spl_fn),
            ("spl (superpixels given)", self.device, spl_given),
            ("spl.reference (superpixels given)", self.device, ref_given),
        ]
        if self.peers and has_densecrf():

            def crf(batch, K):
                images, cams, mask = (t.cpu().numpy() for t in batch)
                images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
                return lambda r: [densecrf(images[i], cams[i], mask[i], 0.15) for i in range(len(images))]

            methods.append(("DenseCRF", "cpu", crf))
        return methods

    def _sweeps(self, op: str, methods) -> None:
        """Time against batch size, image size and K; a method leaves a sweep once a point is slower
        than the limit (costs grow along every sweep)."""
        pool = photo_pool(self.voc)
        if self.quick:
            sweeps = {"batch": [1, 2, 4], "size": [128, 192, 256], "K": [50, 100, 200]}
            fixed = {"batch": 2, "size": 128, "K": 100}
        else:
            sweeps = {
                "batch": [1, 2, 4, 8, 16, 32, 64],
                "size": [256, 512, 1024, 2048],
                "K": [100, 300, 1000, 3000, 5000],
            }
            fixed = {"batch": 8 if self.device.startswith("cuda") else 1, "size": 512, "K": 1000}
        limit = 0.5 if self.quick else 4.0  # seconds per call: a method whose next point would take
        # longer (its last time scaled by the growth in pixels or images) leaves the sweep.
        print(f"scaling, {op}: " + ", ".join(f"{k} {v[0]}..{v[-1]}" for k, v in sweeps.items()), flush=True)
        for axis, values in sweeps.items():
            active = {name for name, *_ in methods}
            last: Dict[str, float] = {}
            for v_prev, v in zip([None] + values[:-1], values):
                p = dict(fixed, **{axis: v})
                size = (p["size"], p["size"])
                if op == "SLIC":
                    batch = photo_batches(pool, p["batch"], size, 1)[0].to(self.device)
                else:
                    batch = tuple(t.to(self.device) for t in asam_inputs(pool, p["batch"], size))
                for name, device, make in methods:
                    if name in last and v_prev is not None:
                        scale = {"batch": v / v_prev, "size": (v / v_prev) ** 2, "K": 1.0}[axis]
                        if last[name] * scale > limit:
                            active.discard(name)
                    if name not in active:
                        continue
                    try:
                        t = measure(make(batch, p["K"]), device, self.repeats, self.budget / 2)
                    except torch.cuda.OutOfMemoryError:
                        active.discard(name)
                        self.skip(f"scaling {op} {name}: out of memory at {axis} {v}")
                        continue
                    except Exception as e:  # a peer failing here is reported, not fatal
                        if name.startswith("spl"):
                            raise
                        active.discard(name)
                        self.skip(f"scaling {op} {name}: failed at {axis} {v} ({type(e).__name__}: {e})")
                        continue
                    self.scaling.append(
                        {
                            "op": op,
                            "axis": axis,
                            "value": v,
                            "method": name,
                            "device": device,
                            "batch": p["batch"],
                            "size": p["size"],
                            "K": p["K"],
                            "ms": 1e3 * t.median,
                            "ms_min": 1e3 * t.low,
                            "ms_max": 1e3 * t.high,
                            "runs": t.runs,
                        }
                    )
                    last[name] = t.median
                del batch
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            self.progress()
