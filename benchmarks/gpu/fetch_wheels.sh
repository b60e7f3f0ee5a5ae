#!/usr/bin/env bash
# Fetch, here, the wheels that wsipipe's GPU checks need on a lent device machine (H100/H200) and that
# its image lacks (it has python3.12 with CUDA torch, torchvision, numpy, scipy, scikit-image, pillow,
# fsspec, h5py, matplotlib, safetensors, pytest and pytest-timeout; nothing can be fetched there).
# They go to .whl/ in the repository root (ignored by git), about 40 MB; run.sh installs them there.
# Usage, from the repository root: bash benchmarks/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
done
# wsipipe's versions here, where it pins them (pip freeze of the dev environment, 2026-12-05)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl \
    openslide-python openslide-bin tiffslide==3.0.1 imagecodecs==2026.3.6 simplejpeg==1.9.0 \
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 crc32c \
    dask==2026.8.0 distributed==2026.8.0 partd locket zict tblib tornado shapely==2.2.0 captum==0.9.0
du -sh .whl
