#!/bin/bash
# Issue 29, ready for a multi-GPU device: onboard train on config:llama3-8b (or $MODEL) over 1, 2 and 4 GPUs
# (FSDP2 through accelerate, one process per GPU), 10 steps each, 8 samples per process per step; then FSDP001
# (onboard check --nproc N, every check before it). Prints each run's tokens/s (all processes), first losses and
# peak memory from its train_report.json. Targets: 2 GPUs >= 1.8x one GPU's tokens/s, first losses equal within
# bf16 tolerance; config:llama3-70b trains 10 steps on 2 H200s with the loss falling (MODEL=config:llama3-70b
# COUNTS="2"). Logs under $OUT (default ./multi_gpu_out).
set -u
OUT=${OUT:-./multi_gpu_out}; MODEL=${MODEL:-config:llama3-8b}; COUNTS=${COUNTS:-"1 2 4"}
mkdir -p "$OUT"
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
echo "$GPUS GPU(s): $(python3 -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')")"
for N in $COUNTS; do
  if [ "$N" -gt "$GPUS" ]; then echo "skip $N processes: $GPUS GPU(s)"; continue; fi
  RUN="$OUT/train_$N"; rm -rf "$RUN"
  python3 -m onboard.cli train "$MODEL" --nproc "$N" --max-steps 10 --batch-size 8 --save-steps 1000 --out "$RUN" \
    > "$OUT/train_$N.log" 2>&1; echo "train on $N: exit $?"
  python3 - "$RUN" "$N" <<'PY'
import json, sys
from pathlib import Path
run, n = Path(sys.argv[1]), sys.argv[2]
report = json.loads((run / "train_report.json").read_text()) if (run / "train_report.json").exists() else {}
log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()] if (run / "train_log.jsonl").exists() else []
print(json.dumps({"processes": n, "tokens_per_s": report.get("tokens_per_s"), "peak_memory_gib": report.get("peak_memory_gib"),
                  "engine": report.get("processes", {}).get("engine"), "losses": [round(r["loss"], 4) for r in log[:5]]}))
PY
done
for N in $COUNTS; do
  [ "$N" -lt 2 ] || [ "$N" -gt "$GPUS" ] && continue
  python3 -m onboard.cli check "$MODEL" --nproc "$N" --json "$OUT/check_$N.json" > "$OUT/check_$N.log" 2>&1
  echo "check --nproc $N: exit $?"; grep -E "^FSDP001" "$OUT/check_$N.log"
done
