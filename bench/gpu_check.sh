#!/usr/bin/env bash
# One short GPU run: single-sentence calls at concurrency 256 on a BERT-base-shaped model, one
# process, four whole servers, and four front ends of one engine. Each line of the summary is
# against in-process transformers on the same GPU, measured in the same run.
#     bash bench/gpu_check.sh [SECONDS]   # about 3 minutes with the default of 6
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-6}"
python=".venv/bin/python"
tokenizer="$(cd bench && "../$python" -c 'from throughput import minilm_dir; print(minilm_dir())')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for run in "--processes 1" "--processes 4 --no-engine" "--processes 4 --engine"; do
    echo "=== bench/gpu.py $run"
    # shellcheck disable=SC2086 # the run's flags are meant to split
    "$python" bench/gpu.py --random-base "$tokenizer" --seconds "$seconds" --sentences 4000 $run 2>&1 \
        | grep -Ev "Loading weights|Writing model shards"
done
