#!/usr/bin/env bash
# The prepared GPU check of issue 7: one short script for a lent machine (device tool), a few minutes.
#   bash benchmarks/gpu_check.sh            # writes figures to ${OUT:-benchmarks/gpu_results}
# Paper sizes: ResNet-101 multi-level, GTA5 source 720x1280, Cityscapes target 512x1024, 19 classes, batch 1.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/gpu_results}"
mkdir -p "$out"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/env.txt"
run() { echo "== $*" | tee -a "$out/log.txt"; timeout 240 python "$@" 2>&1 | tee -a "$out/log.txt" | grep -E '^\{|^\|' ; }
common=(--device cuda --source_size 720 1280 --target_size 512 1024 --warmup 3 --iterations 10)
run benchmarks/bench_train_step.py --implementation both "${common[@]}"                          # fp32 eager, ours vs reference
run benchmarks/bench_train_step.py "${common[@]}" --precision bf16 --channels_last                 # fast, eager
run benchmarks/bench_train_step.py "${common[@]}" --precision bf16 --channels_last --compile       # fastest
run benchmarks/bench_ranking.py --device cuda --size 512 1024 --images 64 --batch_size 1 8 --precision fp32 bf16 --channels_last
grep -E '^\{' "$out/log.txt" > "$out/results.jsonl"
