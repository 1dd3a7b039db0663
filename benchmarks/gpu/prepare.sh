#!/usr/bin/env bash
# Download the onnxruntime-gpu wheel the GPU check installs, and split it into parts of at most 50 MiB.
#
# The GPU machine has no network and takes at most 64 MiB of files per run, so the wheel (about
# 256 MB) travels one part per run into benchmarks/gpu/wheel-parts/ (git-ignored, kept there between
# runs); check.sh joins the parts and checks them against wheel.sha256 (committed) before installing.
#
# The wheel: onnxruntime-gpu 1.31.1 for CPython 3.12, manylinux_2_28 x86_64, built for CUDA 13.0 and
# cuDNN 9 (its build info says cuda_version = '13.0'; its [cuda] extra needs nvidia-cuda-runtime~=13.0).
# On PyPI that is the plain onnxruntime-gpu distribution: there is no separate cu13 name.
#
# Beside it: psutil's wheel (cp36-abi3, 160 KB; `edgeleuk bench` needs it and the GPU machine may lack
# it), which travels with the first part; check.sh installs it only where `import psutil` fails.
#
# Usage: benchmarks/gpu/prepare.sh            (PYTHON=... picks the interpreter whose pip downloads)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PARTS="${GPU_KIT_PARTS:-$HERE/wheel-parts}"
PYTHON="${PYTHON:-python3}"
VERSION=1.31.1
WHEEL="onnxruntime_gpu-$VERSION-cp312-cp312-manylinux_2_28_x86_64.whl"
PART_SIZE=50M  # split's M is MiB
PSUTIL=7.2.2

download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$download" "onnxruntime-gpu==$VERSION"
[ -f "$download/$WHEEL" ] || { echo "prepare.sh: pip did not fetch $WHEEL (got: $(ls "$download"))" >&2; exit 1; }
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$download/psutil" "psutil==$PSUTIL"

# The CUDA build the check needs, read from the wheel itself (not from its name).
cuda="$("$PYTHON" - "$download/$WHEEL" <<'PY'
import re, sys, zipfile
text = zipfile.ZipFile(sys.argv[1]).read("onnxruntime/capi/build_and_package_info.py").decode()
found = re.search(r"cuda_version\s*=\s*'([^']*)'", text)
print(found.group(1) if found else "")
PY
)"
case "$cuda" in
    13.*) ;;
    *) echo "prepare.sh: $WHEEL is built for CUDA '${cuda:-none}', not 13.x; the GPU machine carries CUDA 13" >&2
       exit 1 ;;
esac

rm -rf "$PARTS"
mkdir -p "$PARTS"
split -b "$PART_SIZE" -d -a 2 "$download/$WHEEL" "$PARTS/$WHEEL.part-"
(cd "$download" && sha256sum "$WHEEL") > "$PARTS/SHA256SUMS"
cp "$download"/psutil/psutil-*.whl "$PARTS/"
(cd "$PARTS" && sha256sum "$WHEEL".part-* psutil-*.whl) >> "$PARTS/SHA256SUMS"

# The parts must join into exactly the downloaded wheel.
joined="$(cat "$PARTS/$WHEEL".part-* | sha256sum | cut -d' ' -f1)"
expected="$(head -n1 "$PARTS/SHA256SUMS" | cut -d' ' -f1)"
[ "$joined" = "$expected" ] || { echo "prepare.sh: the parts do not join into the wheel" >&2; exit 1; }
if ! grep -q "^$expected  $WHEEL\$" "$HERE/wheel.sha256"; then
    echo "prepare.sh: $WHEEL has SHA-256 $expected, but wheel.sha256 says $(cat "$HERE/wheel.sha256")" >&2
    echo "  (a different upload? check it, then update wheel.sha256)" >&2
    exit 1
fi
echo "$WHEEL (CUDA $cuda), SHA-256 $expected, in $(ls "$PARTS/$WHEEL".part-* | wc -l) parts:"
ls -l "$PARTS"
