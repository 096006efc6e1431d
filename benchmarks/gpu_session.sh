#!/usr/bin/env bash
# Issue 10's plan for one lent GPU, in as few device runs as the 10-minute limit allows.
# From the project root on the GPU machine, with the pure-Python wheels installed
# (see docs/gpu.md), logs written under $OUT (default ./gpu-logs):
#
#   bash benchmarks/gpu_session.sh tests    # device facts + the whole suite on cupy (~8 min cap)
#   bash benchmarks/gpu_session.sh bench    # speed beside torch CUDA + a profile of one epoch
#
# Each phase keeps going past failures so one run brings back everything it can.
set -u
phase=${1:?"which phase: tests or bench"}
out=${OUT:-gpu-logs}
mkdir -p "$out"

device_facts() {
  nvidia-smi -L
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import cupy, torch, numpy, array_api_compat as c; print('cupy', cupy.__version__, \
'cuda', cupy.cuda.runtime.runtimeGetVersion(), 'torch', torch.__version__, 'numpy', numpy.__version__, \
'array-api-compat', c.__version__)"
}

case "$phase" in
  tests)
    device_facts 2>&1 | tee "$out/device.txt"
    timeout 480 python3 -m pytest -q -p no:cacheprovider -rfE tests --backend cupy \
      --junitxml "$out/cupy-tests.xml" >"$out/cupy-tests.log" 2>&1
    echo "pytest exit $?" >>"$out/cupy-tests.log"
    tail -n 60 "$out/cupy-tests.log"
    ;;
  bench)
    timeout 360 python3 benchmarks/speed.py --backend cupy --configs mnist adam tiny wide gpu \
      --repeats 5 >"$out/speed.log" 2>&1
    echo "speed exit $?" >>"$out/speed.log"
    tail -n 30 "$out/speed.log"
    timeout 120 python3 -m cProfile -s tottime examples/gpu.py --backend cupy --epochs 2 \
      >"$out/profile.txt" 2>&1
    head -n 45 "$out/profile.txt"
    ;;
  *)
    echo "unknown phase '$phase': expected tests or bench" >&2
    exit 2
    ;;
esac
