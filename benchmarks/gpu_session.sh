#!/usr/bin/env bash
# The GPU checks of issues 19 and 20, for one lent GPU (15 minutes of device time a session, all runs
# together): two device runs, each one command. From the project root on the GPU machine, after the
# install line of docs/gpu.md; logs go under $OUT (default ./gpu-logs), at most 8 files.
#
#   bash benchmarks/gpu_session.sh smoke   # ~4 min: device facts, the fused runner's GPU tests,
#                                          #   mnist and tiny speed, the first fit cold and warm
#   bash benchmarks/gpu_session.sh full    # ~9 min: the whole suite on cupy, every speed config
#                                          #   beside torch (eager, CUDA graph) and jax-scan, and the
#                                          #   dtype policies and TF32 beside torch autocast (issue 20)
#
# Each phase keeps going past failures so one run brings back everything it can.
set -u
phase=${1:?"which phase: smoke or full"}
out=${OUT:-gpu-logs}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

device_facts() {
  nvidia-smi -L
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import cupy, torch, jax, numpy, array_api_compat as c; print('cupy', cupy.__version__, \
'cuda', cupy.cuda.runtime.runtimeGetVersion(), 'torch', torch.__version__, 'jax', jax.__version__, \
jax.devices(), 'numpy', numpy.__version__, 'array-api-compat', c.__version__)"
  python3 -c "from xpnet.engine import cublas; print('cublas', cublas.library())"
}

first_use() {
  # xpnet train digits on cupy with CuPy's kernel cache empty, then warm (issue 19's "first use")
  cold=$(mktemp -d)
  for label in cold warm; do
    start=$(date +%s%N)
    CUPY_CACHE_DIR=$cold timeout 60 python3 -m xpnet train digits --backend cupy --quiet \
      --out "$(mktemp -d)/m.safetensors" >/dev/null 2>&1
    status=$?
    echo "xpnet train digits --backend cupy, $label kernel cache: exit $status in" \
      "$(( ($(date +%s%N) - start) / 1000000 )) ms"
  done
  timeout 60 python3 benchmarks/first_fit.py --backend cupy --repeats 2
}

case "$phase" in
  smoke)
    device_facts >"$out/device.txt" 2>&1
    timeout 150 python3 -m pytest -q -p no:cacheprovider -rfE -x tests/test_gpu_fused.py \
      tests/test_fused.py --backend cupy >"$out/smoke.log" 2>&1
    echo "fused tests exit $?" >>"$out/smoke.log"
    timeout 120 python3 benchmarks/speed.py --backend cupy jax --configs mnist tiny --repeats 3 \
      >>"$out/smoke.log" 2>&1
    echo "speed exit $?" >>"$out/smoke.log"
    first_use >"$out/first-use.log" 2>&1
    tail -n 40 "$out/smoke.log"
    cat "$out/first-use.log"
    ;;
  full)
    device_facts >"$out/device.txt" 2>&1
    timeout 280 python3 -m pytest -q -p no:cacheprovider -rfE -n 8 tests --backend cupy \
      --junitxml "$out/cupy-tests.xml" >"$out/cupy-tests.log" 2>&1
    echo "pytest exit $?" >>"$out/cupy-tests.log"
    timeout 150 python3 benchmarks/speed.py --backend cupy jax --configs mnist adam tiny wide gpu \
      --repeats 3 >"$out/speed.log" 2>&1
    echo "speed exit $?" >>"$out/speed.log"
    timeout 100 python3 benchmarks/precision.py speed --backend cupy --configs gpu wide --repeats 3 \
      --peers cuda --memory >"$out/precision.log" 2>&1
    echo "precision exit $?" >>"$out/precision.log"
    tail -n 25 "$out/cupy-tests.log"
    grep -v '^{' "$out/speed.log" | tail -n 45
    grep -v '^{' "$out/precision.log" | tail -n 25
    ;;
  *)
    echo "unknown phase '$phase': expected smoke or full" >&2
    exit 2
    ;;
esac
