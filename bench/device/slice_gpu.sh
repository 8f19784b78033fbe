#!/bin/bash
# Issue 27 on the device: bench/checklist.py on config:llama3-8b (the check with every check, COMPILE001 included,
# against the floor: load, LOSS001's forwards, one training step), the same check with --slice off and no compile
# for comparison, then the gpu-marked tests named in "$@". Logs under $OUT.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SITE=/tmp/onboard-site; mkdir -p $SITE/bin $OUT
exec > >(tee -a $OUT/slice_gpu.log) 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -d $SITE/transformers ] || tar xJf .big3/transformers.tar.xz -C $SITE
python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE .gpuwhl/*.whl 2>&1 | tail -2
printf '#!/usr/bin/env python3\nfrom onboard.cli import main\nmain()\n' > $SITE/bin/onboard; chmod +x $SITE/bin/onboard
export PYTHONPATH=$SITE:$PWD PATH=$SITE/bin:$PATH
python3 -c "import sys, torch, transformers, peft; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
echo "== checklist config:llama3-8b (slice auto, every check)"
timeout 300 python3 bench/checklist.py config:llama3-8b
echo "== onboard check config:llama3-8b --slice off --no-torch-compile"
/usr/bin/time -f "wall %e s" timeout 200 onboard check config:llama3-8b -q --slice off --no-torch-compile --json $OUT/whole.json
if [ $# -gt 0 ]; then
  echo "== gpu tests $*"
  timeout ${LIMIT:-200} python3 -m pytest -q -p no:cacheprovider -rs -s tests/test_gpu.py "$@" 2>&1 | tail -30
fi
