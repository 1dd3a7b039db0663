#!/usr/bin/env bash
# The one-shot GPU check: install onnxruntime-gpu from the parts prepare.sh made, then run gpu_check.py.
#
# On the GPU machine (Python 3.12, torch for CUDA 13, onnxruntime CPU installed; no network):
#   1. joins benchmarks/gpu/wheel-parts/<wheel>.part-* and checks the result against wheel.sha256;
#   2. pip install --no-deps --target benchmarks/gpu/work/ort-gpu (once; kept between runs);
#   3. links the CUDA 13 / cuDNN 9 libraries of the installed torch wheels (site-packages/nvidia) beside
#      it, where onnxruntime.preload_dlls() looks, and adds them to LD_LIBRARY_PATH;
#   4. runs gpu_check.py with PYTHONPATH = this checkout + that target (the GPU build shadows the
#      CPU onnxruntime); it writes benchmarks/RESULTS-gpu.md.
#
# check.sh join: only steps 1 (which parts are still missing, is any damaged); exit 2 while parts are missing.
# CHECK_CPU_ONLY=1: a dry run without a GPU. Joins and checks the parts if they are here, installs
# nothing, runs every step on ONNX Runtime's CPU provider with the tiny network, and writes
# benchmarks/gpu/work/RESULTS-gpu-cpu-only.md, which says that no GPU was used.
#
# Settings (environment): PYTHON (default python3), GPU_KIT_PARTS, GPU_KIT_WORK, GPU_KIT_SHA256 (the
# expected "<sha256>  <wheel name>" line), GPU_KIT_RESULTS (the file to write).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
PARTS="${GPU_KIT_PARTS:-$HERE/wheel-parts}"
WORK="${GPU_KIT_WORK:-$HERE/work}"
EXPECTED="${GPU_KIT_SHA256:-$HERE/wheel.sha256}"
CPU_ONLY="${CHECK_CPU_ONLY:-0}"
TARGET="$WORK/ort-gpu"

say() { echo "check.sh: $*" >&2; }

read -r SUM WHEEL < "$EXPECTED"
mkdir -p "$WORK"

# Join the parts into $WORK/$WHEEL and check its SHA-256; name the parts still missing.
join_wheel() {
    local listed missing=() part
    if [ -f "$PARTS/SHA256SUMS" ]; then
        listed="$(tail -n +2 "$PARTS/SHA256SUMS" | awk '{print $2}')"  # line 1: the joined wheel
        for part in $listed; do [ -f "$PARTS/$part" ] || missing+=("$part"); done
        if [ "${#missing[@]}" -gt 0 ]; then
            say "parts still to send to $PARTS: ${missing[*]}"
            return 2
        fi
        (cd "$PARTS" && tail -n +2 SHA256SUMS | sha256sum --quiet -c -) || { say "a part is damaged"; return 1; }
    fi
    compgen -G "$PARTS/$WHEEL.part-*" > /dev/null || { say "no parts in $PARTS: run prepare.sh, send each part"; return 2; }
    cat "$PARTS/$WHEEL".part-* > "$WORK/$WHEEL.tmp"
    local got
    got="$(sha256sum "$WORK/$WHEEL.tmp" | cut -d' ' -f1)"
    if [ "$got" != "$SUM" ]; then
        say "the joined parts have SHA-256 $got, expected $SUM ($EXPECTED): a part is missing or damaged"
        rm -f "$WORK/$WHEEL.tmp"
        return 1
    fi
    mv "$WORK/$WHEEL.tmp" "$WORK/$WHEEL"
    say "joined $WHEEL, SHA-256 $SUM (matches $(basename "$EXPECTED"))"
}

install_wheel() {
    if [ -f "$TARGET/.installed-$SUM" ]; then
        say "onnxruntime-gpu already installed in $TARGET"
        return 0
    fi
    rm -rf "$TARGET"
    "$PYTHON" -m pip install --no-deps --no-index --target "$TARGET" "$WORK/$WHEEL"
    # edgeleuk bench needs psutil; install the checked wheel that came with the parts where it is missing.
    if ! "$PYTHON" -c "import psutil" 2>/dev/null && compgen -G "$PARTS/psutil-*.whl" > /dev/null; then
        "$PYTHON" -m pip install --no-deps --no-index --target "$TARGET" "$PARTS"/psutil-*.whl
    fi
    touch "$TARGET/.installed-$SUM"
}

# torch's CUDA wheels put CUDA and cuDNN under site-packages/nvidia; preload_dlls() looks for them
# beside the onnxruntime package, so link that folder there (and put its libraries on the path).
link_cuda_libraries() {
    local nvidia
    nvidia="$("$PYTHON" -c 'import importlib.util as u; s = u.find_spec("nvidia"); print(next(iter(s.submodule_search_locations)) if s else "")' 2>/dev/null || true)"
    if [ -z "$nvidia" ]; then
        say "no nvidia CUDA wheels next to this Python: CUDA and cuDNN must be on the system library path"
        return 0
    fi
    [ -e "$TARGET/nvidia" ] || ln -s "$nvidia" "$TARGET/nvidia"
    local libs
    libs="$(find "$nvidia" -mindepth 2 -maxdepth 3 -type d -name lib | sort | tr '\n' ':')"
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
    say "CUDA libraries from $nvidia"
}

if [ "${1:-}" = "join" ]; then  # only join and check the parts: which are still missing, is any damaged
    join_wheel
    exit 0
fi

if [ "$CPU_ONLY" = "1" ]; then
    if compgen -G "$PARTS/$WHEEL.part-*" > /dev/null; then join_wheel; rm -f "$WORK/$WHEEL"; fi
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    exec "$PYTHON" "$HERE/gpu_check.py" --cpu-only --work "$WORK" \
        --out "${GPU_KIT_RESULTS:-$WORK/RESULTS-gpu-cpu-only.md}"
fi

[ -f "$TARGET/.installed-$SUM" ] || join_wheel
install_wheel
link_cuda_libraries
export PYTHONPATH="$REPO:$TARGET${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import onnxruntime as o; print("check.sh: onnxruntime", o.__version__, "from", o.__file__, o.get_available_providers())' >&2
exec "$PYTHON" "$HERE/gpu_check.py" --work "$WORK" --out "${GPU_KIT_RESULTS:-$REPO/benchmarks/RESULTS-gpu.md}"
