#!/usr/bin/env bash
# Formats the tree: Python with ruff (`ruff check --fix`, then `ruff format`; settings in
# pyproject.toml, [tool.ruff]) and C++/CUDA with clang-format (.clang-format at the root; the
# .cpp/.cc/.h/.hpp/.cu/.cuh files under csrc/, tests/cpp/ and tests/cuda_emu/).
#
#   tools/format.sh            format in place
#   tools/format.sh --check    change nothing; list what would change and exit 1 if anything would (CI)
#   tools/format.sh --install  pip-install the pinned ruff and clang-format into the current Python
#
# Both tools are pinned (below): another version formats differently. ruff's lint rules (pyflakes,
# import order) are part of the check; --fix applies the safe fixes (unused imports, import order).
# RUFF=... / CLANG_FORMAT=... pick other executables (still of the pinned versions).
set -euo pipefail

RUFF_VERSION=0.17.6
CLANG_FORMAT_VERSION=23.1.5

cd "$(dirname "$0")/.."
mode=${1:-format}
case $mode in
  format | --check) ;;
  --install) exec python -m pip install -q "ruff==$RUFF_VERSION" "clang-format==$CLANG_FORMAT_VERSION" ;;
  *) echo "usage: tools/format.sh [--check | --install]" >&2; exit 2 ;;
esac

ruff=${RUFF:-ruff}
clang_format=${CLANG_FORMAT:-clang-format}
need() {  # need TOOL VERSION VERSION_OUTPUT
  if [[ $3 != *" $2"* ]]; then
    echo "tools/format.sh: needs $1 $2, found: ${3:-none}. Install with: tools/format.sh --install" >&2
    exit 2
  fi
}
need ruff "$RUFF_VERSION" "$("$ruff" --version 2>/dev/null || true)"
need clang-format "$CLANG_FORMAT_VERSION" "$("$clang_format" --version 2>/dev/null || true)"

# The C++/CUDA sources (build outputs live outside these folders).
mapfile -d '' cxx < <(find csrc tests/cpp tests/cuda_emu -type f \
  \( -name '*.cpp' -o -name '*.cc' -o -name '*.h' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh' \) \
  -print0 | sort -z)

if [[ $mode == format ]]; then
  "$ruff" check --fix --quiet . || true   # what --fix cannot fix is reported again at the end
  "$ruff" format --quiet .
  "$clang_format" -i "${cxx[@]}"
  "$ruff" check --quiet .                # exits 1 if a lint finding is left to fix by hand
  exit 0
fi

status=0
"$ruff" format --check --output-format concise . || status=1   # one line per file
"$ruff" check --output-format concise . || status=1            # one line per finding
for f in "${cxx[@]}"; do
  if ! "$clang_format" "$f" | cmp -s - "$f"; then
    echo "Would reformat: $f"
    status=1
  fi
done
if [[ $status -ne 0 ]]; then
  echo "tools/format.sh --check: the files above are not formatted; run tools/format.sh" >&2
else
  echo "tools/format.sh --check: all ${#cxx[@]} C++/CUDA files and the Python files are formatted"
fi
exit $status
