#!/usr/bin/env bash
# The GPU tests and benchmarks in one go, for a CUDA machine (through the device tool or your own).
#   bench/gpu_all.sh [PART ...]   PART: env tests checklist cce packing trl kern profile compile_moe (default: all)
#   TRL_ARGS passes options to bench/train_vs_trl.py (e.g. --modes onboard,onboard_fast --steps 12)
# Logs go under $OUT (the device tool's output folder; ./gpu-logs elsewhere), one file per part.
# Packages the machine lacks travel as wheels in .whl/ (cut-cross-entropy, gguf, trl, datasets, ...):
# they are installed into /tmp/site first, and the checkout is put on PYTHONPATH.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && [ ! -f /tmp/site/.onboard-installed ]; then
  # datasets 5.x wants pyarrow >= 24; an older pyarrow gets the 4.8 wheel if one was carried
  skip=$(python3 -c "import pyarrow; print('datasets-5' if int(pyarrow.__version__.split('.')[0]) < 24 else 'datasets-4')" 2>/dev/null || echo none)
  wheels=$(ls .whl/*.whl | grep -v "$skip")
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels \
    && touch /tmp/site/.onboard-installed
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
parts=${*:-env tests checklist cce packing trl kern profile compile_moe}
for part in $parts; do
  start=$(date +%s)
  case $part in
    env) { nvidia-smi; python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name(0))"; python3 -m pip list 2>/dev/null | grep -i -E "^(trl|datasets|pyarrow|cut|flash|nvidia-cutlass|quack)"; } > "$OUT/env.txt" 2>&1 ;;
    tests) python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > "$OUT/tests.log" 2>&1 ;;
    checklist) python3 bench/checklist.py config:llama3-8b > "$OUT/checklist.log" 2>&1 ;;
    cce) python3 bench/cce_memory.py > "$OUT/cce_memory.jsonl" 2> "$OUT/cce_memory.err" ;;
    packing) python3 bench/packing_backends.py > "$OUT/packing_backends.jsonl" 2> "$OUT/packing_backends.err" ;;
    trl) python3 bench/train_vs_trl.py ${TRL_ARGS:-} > "$OUT/train_vs_trl.log" 2>&1 ;;
    kern) python3 -m pytest -q -m gpu tests/test_gpu.py -k speed_levers -p no:cacheprovider > "$OUT/kern.log" 2>&1 ;;
    profile) python3 bench/step_profile.py > "$OUT/step_profile.log" 2>&1 ;;
    compile_moe) python3 bench/compile_moe.py ${COMPILE_MOE_ARGS:-} > "$OUT/compile_moe.jsonl" 2> "$OUT/compile_moe.err" ;;
    newtests) python3 -m pytest -q -m gpu tests/test_gpu.py -k "experts or compile" -p no:cacheprovider > "$OUT/newtests.log" 2>&1 ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
  echo "$part: exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/parts.txt"
done
