#!/bin/bash
# onboard issue 23 item 6, second session: one script for every call; stages done on this machine are skipped.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s); LIMIT=${LIMIT:-585}
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
REPO=$PWD; SITE=$REPO/build/site; export ST=$REPO/build/state; B=/tmp/kb; K=$REPO/.big3
mkdir -p $OUT $ST
exec > >(tee -a $OUT/main.log) 2>&1
el "start; done stages: $(ls $ST | tr '\n' ' ')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -f $ST/setup ]; then
  python3 -c "import sys,torch,triton;print(sys.version.split()[0], torch.__version__, torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
  nvcc --version | tail -1; nproc
  rm -rf $SITE $B; mkdir -p $SITE $B/wheels
  tar xzf $K/causal_conv1d-1.7.0.tar.gz -C $B && python3 $K/split_cc.py $B/causal_conv1d-1.7.0 || exit 1
  el "build causal-conv1d (sm_90, split TUs, MAX_JOBS=16) in the background"
  (cd $B/causal_conv1d-1.7.0 && MAX_JOBS=16 CAUSAL_CONV1D_FORCE_BUILD=TRUE timeout 450 python3 -m pip wheel -v --no-build-isolation --no-deps --no-index -w $B/wheels . > $OUT/build_cc.log 2>&1; echo "build rc=$? at $(( $(date +%s) - T0 ))s" >> $OUT/build_cc.log) &
  BUILD=$!
  tar xJf $K/transformers.tar.xz -C $SITE && tar xJf $K/kdeps.tar.xz -C $SITE || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE $K/fla_core-0.6.0-py3-none-any.whl || exit 1
  tar xzf $K/mamba_ssm-2.3.2.post1.tar.gz -C $B
  (cd $B/mamba_ssm-2.3.2.post1 && MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip install -q --no-build-isolation --no-deps --no-index --no-compile --target $SITE . > $B/mamba_py.log 2>&1) || tail -5 $B/mamba_py.log
  echo '"""Empty stand-in: mamba-ssm installed without its Mamba-1 CUDA extension (Mamba-2 ops are Triton)."""' > $SITE/selective_scan_cuda.py
  el "site ready except causal-conv1d; tilelang check (GPU) while the build runs"
  PYTHONPATH=$SITE:$REPO timeout 240 python3 $K/tlcheck.py 2>&1 | grep -v "^\s*warnings.warn"
  el "waiting for the build"; wait $BUILD; tail -3 $OUT/build_cc.log
  ls -la $B/wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE $B/wheels/causal_conv1d-*.whl || { el "NO causal-conv1d"; exit 1; }
  PYTHONPATH=$SITE:$REPO python3 - <<'PY'
import importlib
for m in ("transformers", "peft", "fla", "fla.ops.gated_delta_rule", "tilelang", "causal_conv1d", "causal_conv1d_cuda", "mamba_ssm", "mamba_ssm.ops.triton.ssd_combined"):
    try:
        mod = importlib.import_module(m); print("import", m, "ok", getattr(mod, "__version__", ""), getattr(mod, "__file__", ""))
    except Exception as e:
        print("import", m, "FAILED", type(e).__name__, str(e)[:200])
PY
  touch $ST/setup; el "setup done"
fi
export PYTHONPATH=$SITE:$REPO
CU=""; [ -f $ST/cu_long ] && CU="--cu-long"
stage() {  # name, seconds it needs at least, command...
  local n=$1 need=$2; shift 2
  [ -f $ST/$n ] && return 0
  if [ $(left) -lt $need ]; then el "skip $n: $(left)s left < $need"; return 1; fi
  el "stage $n (timeout $(( $(left) - 5 ))s)"
  timeout $(( $(left) - 5 )) "$@"; local rc=$?
  el "stage $n rc=$rc"; [ $rc -ne 124 ] && [ $rc -ne 137 ] && touch $ST/$n
}
stage bench_nemotron 150 bash -c "python3 bench/hybrid_packing.py --models nemotron-h-8b-8l --warmup 3 --steps 8 2>&1 | grep -v '^\s*warnings.warn' > $OUT/bench_nemotron.log; grep '\"kind\": \"\(train\|isolation\|error\)\"' $OUT/bench_nemotron.log | cut -c1-900"
stage bench_qwen 200 bash -c "python3 bench/hybrid_packing.py --models qwen3.5-9b-8l --warmup 3 --steps 8 $CU 2>&1 | grep -v '^\s*warnings.warn' > $OUT/bench_qwen.log; grep '\"kind\": \"\(train\|isolation\|error\)\"' $OUT/bench_qwen.log | cut -c1-900"
stage check_nemotron 120 bash -c "python3 -m onboard.cli check config:nemotron-h-8b-8l --no-torch-compile --json $OUT/nemotron.json > $OUT/nemotron.log 2>&1; echo rc=\$?; grep -E '^[A-Z]+[0-9]{3} ' $OUT/nemotron.log; grep -iE 'verdict|Traceback' $OUT/nemotron.log | head -5"
stage check_qwen 150 bash -c "python3 -m onboard.cli check config:qwen3.5-9b-8l --no-torch-compile --json $OUT/qwen35.json > $OUT/qwen35.log 2>&1; echo rc=\$?; grep -E '^[A-Z]+[0-9]{3} ' $OUT/qwen35.log; grep -iE 'verdict|Traceback' $OUT/qwen35.log | head -5"
el "end; done stages: $(ls $ST | tr '\n' ' ')"
