#!/usr/bin/env bash
# The prepared GPU check of issue 7: one short script for a lent machine (device tool), about 6 minutes on an H200.
#   bash benchmarks/gpu_check.sh            # writes figures to ${OUT:-benchmarks/gpu_results}
# Paper sizes: ResNet-101 multi-level, GTA5 source 720x1280, Cityscapes target 512x1024, 19 classes, batch 1.
# Needs torch, transformers, accelerate, timm, huggingface_hub (not datasets or evaluate): the project runs from
# the checkout through PYTHONPATH, so a machine's own PyTorch image serves.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/gpu_results}"
mkdir -p "$out"
python="$(command -v python3 || command -v python)"
export PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$python" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__,
'accelerate', accelerate.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$out/env.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >> "$out/env.txt" 2>&1
run() {  # run SECONDS SCRIPT ARGS...: the whole output to log.txt, the JSON lines and tables to the screen
    local limit="$1"; shift
    echo "== $*" | tee -a "$out/log.txt"
    timeout "$limit" "$python" "$@" 2>&1 | tee -a "$out/log.txt" | grep -E '^\{|^\||Error|error:'
}
common=(--device cuda --source_size 720 1280 --target_size 512 1024 --warmup 3 --iterations 10)
run 150 benchmarks/bench_train_step.py --implementation both "${common[@]}"                      # fp32 eager, ours vs reference
run 80 benchmarks/bench_train_step.py "${common[@]}" --precision bf16 --channels_last             # fast, eager
run 80 benchmarks/bench_ranking.py --device cuda --size 512 1024 --images 64 --batch_size 1 8 --precision fp32 bf16 --channels_last
run 170 benchmarks/bench_train_step.py "${common[@]}" --precision bf16 --channels_last --compile  # fastest, compiles first
grep -E '^\{' "$out/log.txt" > "$out/results.jsonl"
