#!/bin/bash
# Issue 27 on the device: the gpu-marked tests named in "$@" (if any), then bench/checklist.py on config:llama3-8b
# (the check with every check, COMPILE001 included, against the floor: load, LOSS001's forwards, one training
# step), then (WHOLE=1) the same check with --slice off and no compile for comparison. Logs under $OUT.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SITE=/tmp/onboard-site; mkdir -p $SITE/bin $OUT
exec > >(tee -a $OUT/slice_gpu.log) 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -d $SITE/transformers ] || tar xJf .big3/transformers.tar.xz -C $SITE
python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE .gpuwhl/*.whl 2>&1 | grep -v "already exists" | tail -2
printf '#!/usr/bin/env python3\nfrom onboard.cli import main\nmain()\n' > $SITE/bin/onboard; chmod +x $SITE/bin/onboard
export PYTHONPATH=$SITE:$PWD PATH=$SITE/bin:$PATH
python3 -c "import sys, torch, transformers, peft; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
if [ $# -gt 0 ]; then
  echo "== gpu tests $*"
  timeout ${LIMIT:-300} python3 -m pytest -q -p no:cacheprovider -rs -s tests/test_gpu.py "$@" 2>&1 | grep -v "convert_frame\|^W1" | tail -40
fi
echo "== checklist config:llama3-8b (slice auto, every check)"
timeout 300 python3 bench/checklist.py config:llama3-8b
if [ -n "$WHOLE" ]; then
  echo "== onboard check config:llama3-8b --slice off --no-torch-compile"
  /usr/bin/time -f "wall %e s" timeout 200 onboard check config:llama3-8b -q --slice off --no-torch-compile --json $OUT/whole.json
fi
