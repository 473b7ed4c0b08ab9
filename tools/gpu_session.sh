#!/usr/bin/env bash
# One device-machine call: build spl with CUDA, run the whole test suite (each file in its own process,
# so a CUDA fault in one cannot poison the others) and the full `spl bench` on the GPU; logs under $OUT.
# Usage (from the repository root, on the GPU machine): tools/gpu_session.sh [tests|profile|bench|all] [pytest -k expr]
#   tests: the test files; profile: per-kernel GPU times of W1-W3 (tools/profile_kernels.py);
#   bench: spl bench; all: the three, in that order.
# Expects the VOC sample copied to .gpu/voc-dev and synth_cams.py to .gpu/ (carried with the call).
set -uo pipefail
what=${1:-all}
kexpr=${2:-}
OUT=${OUT:-/tmp/spl-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
t0=$(date +%s)
if ! python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
echo "LDFLAGS=${LDFLAGS:-} LDSHARED=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('LDSHARED'))")"
repo=$(pwd)
cd /tmp  # import the installed package, not the source tree
ldd "$(python3 -c "import importlib.util as u; print(u.find_spec('spl._C').origin)" 2>/dev/null)" | grep -E "stdc|gomp|cudart"
python3 -c "import spl; print('cuda kernels:', spl.has_cuda_kernels(), 'cuda version', spl.cuda_version())"
if [ "$what" = all ] || [ "$what" = tests ]; then
  for f in "$repo"/tests/test_*.py; do
    n=$(basename "$f" .py)
    args=(-v -rs -p no:cacheprovider --timeout 600 "$f")
    [ -n "$kexpr" ] && args+=(-k "$kexpr")
    CUDA_LAUNCH_BLOCKING=1 timeout 900 python3 -m pytest "${args[@]}" > "$OUT/$n.log" 2>&1
    rc=$?
    echo "$n: rc=$rc $(tail -1 "$OUT/$n.log")"
    if [ $rc -ne 0 ]; then  # the last test started and the crash's traceback
      grep -E "(PASSED|FAILED|ERROR|SKIPPED)" "$OUT/$n.log" | tail -2
      grep -E "^(FAILED|ERROR) |Fatal Python|  File |Error:|error:" "$OUT/$n.log" | head -40
    fi
  done
fi
tar -C "$OUT" -czf "$OUT/tests.tgz" $(cd "$OUT" && ls test_*.log) 2>/dev/null && rm -f "$OUT"/test_*.log
if [ "$what" = all ] || [ "$what" = profile ]; then
  timeout 300 python3 "$repo/tools/profile_kernels.py" > "$OUT/profile.log" 2>&1
  echo "profile: rc=$?"; cat "$OUT/profile.log"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then  # the full benchmark, peers included where installed (PYTHONPATH)
  SPL_VOC="$repo/.gpu/voc-dev" SPL_SYNTH_CAMS="$repo/.gpu/synth_cams.py" timeout "${BENCH_TIMEOUT:-560}" \
    python3 -m spl bench --device cuda --peers --out "$OUT/bench" > "$OUT/bench.log" 2>&1
  echo "spl bench: rc=$?"; tail -80 "$OUT/bench.log"
fi
