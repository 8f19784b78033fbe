#!/bin/bash
# The gpu-marked tests on the device machine: transformers 5.24 (carried, .big3/transformers.tar.xz) and the small
# pure-Python wheels the device lacks (.gpuwhl/: gguf, cut-cross-entropy, pytest) into a site folder, then
# tests/test_gpu.py with the checkout on PYTHONPATH. Logs under $OUT.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SITE=/tmp/onboard-site; mkdir -p $SITE $OUT
exec > >(tee -a $OUT/gpu_tests.log) 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -d $SITE/transformers ] || tar xJf .big3/transformers.tar.xz -C $SITE
python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE .gpuwhl/*.whl 2>&1 | tail -2
export PYTHONPATH=$SITE:$PWD
python3 -c "import sys, torch, transformers, peft, pytest; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'pytest', pytest.__version__)"
timeout ${LIMIT:-540} python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py "$@"
echo "pytest rc=$?"
