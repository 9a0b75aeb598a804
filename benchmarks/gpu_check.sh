#!/usr/bin/env bash
# The prepared GPU check of the stage-1 step and the CamVid study: one script for a lent H200 (device tool).
#   bash benchmarks/prepare_gpu_check.sh           # once, on the development machine: fills .gpu_check/ (carried)
#   bash benchmarks/gpu_check.sh                   # on the GPU machine, from the repository root
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh  # the same logic on a CPU at tiny sizes: a dry run
# Parts, in order, each under `timeout` and never past the whole budget (GPU_CHECK_BUDGET_S, default 560 s):
#   profile      profile_train_step.py of fp32 eager and of bf16 + channels_last (paper sizes)
#   candidates   bench_fast_paths.py: every eager candidate, fp32 then bf16, with the authors' step in each run
#   cuda_graphs  bench_fast_paths.py: bf16 + channels_last under torch.compile mode reduce-overhead
#   compiled     (not by default) the same under torch.compile's default mode
#   camvid       the CamVid study (3 seeds side by side, no ablations), its iterations per stage sized from a
#                measured step to fit the time left
# GPU_CHECK_PARTS chooses parts ("camvid" alone gives the study the whole budget).
# Writes to ${OUT:-benchmarks/gpu_results}: results.jsonl (every JSON line), tables.md (environment, every
# table, the summary of the candidates), log.txt (all output), camvid_table.md and camvid_study.json.
# Needs torch, transformers, accelerate, timm (the machine's image) and, for the study, datasets (its wheels are
# in .gpu_check/wheels), the EfficientNet-Lite0 weights (.gpu_check/site) and the raw CamVid (.gpu_check/camvid).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/gpu_results}"
mkdir -p "$out"
tiny="${GPU_CHECK_TINY:-0}"
parts="${GPU_CHECK_PARTS:-profile candidates cuda_graphs camvid}"
carry=.gpu_check
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
[ -d "$carry/site" ] && export PYTHONPATH="$PWD/$carry/site:$PYTHONPATH"
if ! "$python" -c "import datasets" 2>/dev/null && ls "$carry"/wheels/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site \
        "$carry"/wheels/*.whl && export PYTHONPATH="/tmp/gpu_check_site:$PYTHONPATH"
fi
raw="${GPU_CHECK_CAMVID_RAW:-$carry/camvid}"
[ -d "$raw" ] || raw=../shared/data/camvid
work="${GPU_CHECK_WORK:-/tmp/gpu_check}"
rm -rf "$work/camvid_study"
mkdir -p "$work"

if [ "$tiny" = 1 ]; then  # a CPU dry run: small ResNet-50, tiny inputs, 1 thread, 2 study iterations
    budget="${GPU_CHECK_BUDGET_S:-1500}"
    device=cpu
    net=(--device cpu --threads 1 --backbone resnet50 --num_labels 5 --source_size 65 81 --target_size 49 65)
    timing=(--warmup 1 --iterations 2)
    profiling=(--warmup 1 --steps 1)
    limits=(240 240 300 300 200 200)  # profile x2, candidates x2, cuda_graphs, compiled
    camvid_iterations="${GPU_CHECK_CAMVID_ITERATIONS:-2}"
    seeds=2
    study_threads=1
else
    budget="${GPU_CHECK_BUDGET_S:-560}"
    device=cuda
    net=(--device cuda --source_size 720 1280 --target_size 512 1024)
    timing=(--warmup 3 --iterations 10)
    profiling=(--warmup 3 --steps 3)
    limits=(60 60 80 70 140 120)
    camvid_iterations="${GPU_CHECK_CAMVID_ITERATIONS:-}"
    seeds=3
    study_threads=4
fi
deadline=$((SECONDS + budget))

{
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ) (tiny=$tiny, budget ${budget} s, parts: $parts)"
    echo
    "$python" -c "import torch, transformers, accelerate; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| accelerate', accelerate.__version__, '|', torch.cuda.get_device_name(0) if
torch.cuda.is_available() else 'no GPU')" 2>&1
    "$python" -c "import datasets; print('datasets', datasets.__version__)" 2>&1 | tail -1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tail -n +2
} | tee "$out/tables.md"

# part NAME LIMIT SCRIPT ARGS...: at most LIMIT seconds and never past the deadline; JSON lines to results.jsonl,
# tables to tables.md, everything to log.txt.
part() {
    local name="$1" limit="$2"
    shift 2
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped, ${left} s left of the budget" | tee -a "$out/log.txt" "$out/tables.md"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    local started=$SECONDS log="$work/part.log"
    echo "== $name (limit ${limit} s): $*" | tee -a "$out/log.txt"
    timeout "$limit" "$python" "$@" >"$log" 2>&1
    local rc=$?
    cat "$log" >>"$out/log.txt"
    grep -E '^\{' "$log" >>"$out/results.jsonl"
    {
        echo
        echo "## $name: exit $rc in $((SECONDS - started)) s"
        echo
        echo "\`python $*\`"
        echo
        grep -E '^\||^[a-z_0-9]+: [0-9.]+ ms per step' "$log"
    } | tee -a "$out/tables.md"
    [ "$rc" = 124 ] && echo "(stopped at its limit)" | tee -a "$out/tables.md"
    return "$rc"
}
wants() { [[ " $parts " == *" $1 "* ]]; }

if wants camvid; then  # the dataset is built on the CPU while the GPU parts run
    (timeout 400 "$python" dataset_scripts/camvid.py --data_dir "$raw" --output_dir "$work/camvid" --num_proc 4 \
        --overwrite >"$work/build.log" 2>&1; echo "camvid build exit $?" >>"$work/build.log") &
    build=$!
fi

if wants profile; then
    part profile_fp32_eager "${limits[0]}" benchmarks/profile_train_step.py "${net[@]}" "${profiling[@]}" \
        --top 25 --label fp32_eager
    part profile_bf16_channels_last "${limits[1]}" benchmarks/profile_train_step.py "${net[@]}" "${profiling[@]}" \
        --top 25 --precision bf16 --channels_last --label bf16_channels_last
fi
if wants candidates; then
    part candidates_fp32 "${limits[2]}" benchmarks/bench_fast_paths.py "${net[@]}" "${timing[@]}" --run fp32 \
        --candidates fp32_eager space_to_batch space_to_batch_backbone foreach_optimizers fused_optimizers \
        compiled_discriminator_input
    part candidates_bf16 "${limits[3]}" benchmarks/bench_fast_paths.py "${net[@]}" "${timing[@]}" --run bf16 \
        --candidates bf16_channels_last bf16_channels_last_fp32_batchnorm bf16_channels_last_space_to_batch \
        bf16_eager_all
fi
# One compiled candidate per process: its own caches and its own time limit (compiling comes first).
if wants cuda_graphs; then
    part cuda_graphs_bf16 "${limits[4]}" benchmarks/bench_fast_paths.py "${net[@]}" "${timing[@]}" \
        --run bf16_cuda_graphs --candidates bf16_cuda_graphs
fi
if wants compiled; then
    part compiled_bf16 "${limits[5]}" benchmarks/bench_fast_paths.py "${net[@]}" "${timing[@]}" \
        --run bf16_compiled --candidates bf16_compiled
fi
if [ -s "$out/results.jsonl" ] && grep -q '"fast_paths"' "$out/results.jsonl"; then
    {
        echo
        echo "## Summary: every candidate against fp32 eager (same run, or chained through the authors' step)"
        echo
        "$python" benchmarks/bench_fast_paths.py --summarize "$out/results.jsonl"
    } | tee -a "$out/tables.md"
fi

if wants camvid; then
    wait "$build"
    cat "$work/build.log" >>"$out/log.txt"
    tail -1 "$work/build.log" | tee -a "$out/tables.md"
    if [ -z "$camvid_iterations" ]; then  # measure a CamVid step, then size the study to the time left
        part camvid_step 60 benchmarks/bench_train_step.py --device "$device" --backbone timm:tf_efficientnet_lite0 \
            --num_labels 11 --source_size 180 240 --target_size 180 240 --batch_size 2 --warmup 3 --iterations 10
        step=$(grep '"train_step"' "$work/part.log" | tail -1 | "$python" -c \
            "import json, sys; print(json.loads(sys.stdin.read())['s_per_iter_median'])" 2>/dev/null || echo 0.1)
        # Per seed: three trained stages (source only, AdvEnt, IntraDA) plus about 60 s of ranking, evaluation and
        # pictures; the seeds run side by side, each step taken as twice the lone step plus 20 ms of data loading.
        camvid_iterations=$("$python" -c "left = $deadline - $SECONDS - 90; per = 3 * (2 * $step + 0.02)
print(max(100, min(3000, int(left / per) // 100 * 100)))")
    fi
    left=$((deadline - SECONDS))
    if [ "$left" -lt 150 ]; then  # ranking, evaluations and pictures alone take about a minute per seed
        echo "== camvid study: skipped, ${left} s left (run GPU_CHECK_PARTS=camvid alone)" | tee -a "$out/tables.md"
        seeds=0
    fi
    echo "== camvid study: $seeds seeds side by side, $camvid_iterations iterations per stage, ${left} s left" \
        | tee -a "$out/log.txt" "$out/tables.md"
    pids=()
    for seed in $(seq 0 $((seeds - 1))); do
        OMP_NUM_THREADS=$study_threads timeout "$left" "$python" benchmarks/camvid_study.py --seeds 1 --first_seed "$seed" \
            --iterations "$camvid_iterations" --no_ablations --no_docs --raw "$raw" --built "$work/camvid" \
            --output_dir "$work/camvid_study" --threads "$study_threads" --num_workers 2 >"$work/camvid_seed$seed.log" 2>&1 &
        pids+=($!)
    done
    for seed in "${!pids[@]}"; do
        wait "${pids[$seed]}"
        echo "camvid seed $seed: exit $?" | tee -a "$out/tables.md"
        cat "$work/camvid_seed$seed.log" >>"$out/log.txt"
    done
    "$python" benchmarks/camvid_study.py --summarize_only --seeds "$seeds" --iterations "$camvid_iterations" \
        --no_docs --output_dir "$work/camvid_study" >>"$out/log.txt" 2>&1
    if [ -f "$work/camvid_study/table.md" ]; then
        cp "$work/camvid_study/table.md" "$out/camvid_table.md"
        cp "$work/camvid_study/study.json" "$out/camvid_study.json"
        { echo; echo "## CamVid study"; echo; cat "$out/camvid_table.md"; } | tee -a "$out/tables.md"
    fi
fi
echo "GPU check done in ${SECONDS} s (budget ${budget} s)" | tee -a "$out/tables.md"
