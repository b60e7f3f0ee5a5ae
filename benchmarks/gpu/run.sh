#!/usr/bin/env bash
# The GPU checks of issues #13 on a lent device machine: the `gpu` tests, the 100,000 x 80,000 slide
# end to end (target < 30 s, GPU busy >= 80 % of the infer stage; nvidia-smi samples utilisation every
# 0.5 s into gpu_util.csv), and bench_inference's GPU section (busy share; zstd against source stores,
# i.e. JPEG tiles decoded on the host against the GPU). Logs go to $OUT. Budget: under 9.5 minutes.
# Here first: bash benchmarks/gpu/fetch_wheels.sh; then the device tool:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
OUT=${OUT:-/tmp/wsipipe-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WSIPIPE_PROGRESS=0
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, torchvision, wsipipe.inference, wsipipe.tiling, tiffslide, distributed; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))" \
    2>&1 | tee "$OUT/env.txt" || exit 1
timeout 150 python3 -m pytest -m gpu tests/inference -q -p no:cacheprovider -o addopts="" --timeout=140 -ra \
    2>&1 | tee "$OUT/pytest_gpu.log"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 > "$OUT/gpu_util.csv" &
smi=$!
timeout 290 python3 benchmarks/bench_end_to_end.py --size 100000x80000 2>&1 | tee "$OUT/bench_e2e.log"
kill "$smi" 2>/dev/null
timeout 110 python3 benchmarks/bench_inference.py --repeat 1 --tiles 4096 --source-size 40000 30000 \
    2>&1 | tee "$OUT/bench_inference.log"
echo "done; logs in $OUT"
