#!/bin/bash
# Issue 28 on the device, one stage per call (STAGE=both: a short split and the 8B bench in one call; STAGE=split: bench/grad_split.py at 8 layers, fp32 and bf16;
# STAGE=deep: its bf16 settings at 32 layers; STAGE=llama / STAGE=moe: bench/train_vs_trl.py on config:llama3-8b /
# config:qwen3-30b-a3b-12l, onboard's checked plan against TRL's padding-free runs). Carried: .big3/transformers.tar.xz,
# .gpuwhl (cut-cross-entropy, pytest), .big4/trl_site.tar.xz (trl, datasets, liger-kernel and their dependencies,
# unpacked wheels for Python 3.12). Logs under $OUT.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SITE=/tmp/onboard-site; mkdir -p $SITE $OUT
exec > >(tee -a $OUT/train_bench_${STAGE}.log) 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -d $SITE/transformers ] || tar xJf .big3/transformers.tar.xz -C $SITE
[ -d $SITE/cut_cross_entropy ] || python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE .gpuwhl/*.whl 2>&1 | tail -2
# trl's site travels in three pieces over consecutive calls (.big5-7/trlpart.0N: the tree and 64 MiB)
[ -d $SITE/trl ] || { ls .big5/trlpart.00 .big6/trlpart.01 .big7/trlpart.02 >/dev/null 2>&1 && \
  cat .big5/trlpart.00 .big6/trlpart.01 .big7/trlpart.02 | tar xJ -C $SITE; }
export PYTHONPATH=$SITE:$PWD
python3 -c "import sys, torch, transformers, peft; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
F="grep -v ^W1\|warnings.warn\|UserWarning"
case "$STAGE" in
  moecheck) printf '#!/usr/bin/env python3\nfrom onboard.cli import main\nmain()\n' > $SITE/onboard; \
    timeout 230 python3 -m onboard.cli check config:qwen3-30b-a3b-12l --no-torch-compile --json $OUT/moe_check.json 2>&1 | \
    grep -E "^ *[0-9]+/[0-9]+ |KERN001|MOE001|verdict|FM-|Error" | head -40
    python3 -c "import json; r=json.load(open('$OUT/moe_check.json')); k=[c for c in r['checks'] if c['code']=='KERN001'][0]; print(k['status'], k['diagnosis'], k['message']); print(json.dumps(k['evidence'])[:1500])" ;;
  carry) ls -la .big5 .big6 .big7 2>/dev/null; ls $SITE | head -3 ;;
  split) timeout 570 python3 bench/grad_split.py --out $OUT/split8 --layers 8 --groups fp32,bf16 2>&1 | $F ;;
  both) timeout 250 python3 bench/grad_split.py --out $OUT/split8 --layers 8 --groups fp32,bf16 \
          --settings ref,ckpt,pa_cl,pa_cl_ckpt,plain,plain_b,ckpt_b,pa_cl_b,pa_cl_ckpt_b,pa_cl_cce,pa_cl_ckpt_cce 2>&1 | $F
        timeout 320 python3 bench/train_vs_trl.py --model config:llama3-8b --steps 10 \
          --modes ${MODES:-onboard_checked,trl_pf_liger,trl_pf_liger_nogc} 2>&1 | $F ;;
  deep) timeout 570 python3 bench/grad_split.py --out $OUT/split32 --groups none --deep 32 2>&1 | $F ;;
  llama) timeout 580 python3 bench/train_vs_trl.py --model config:llama3-8b --steps 12 \
           --modes ${MODES:-onboard_checked,onboard_fast,trl_pf_liger,trl_pf_liger_nogc,onboard_fast_nogc} 2>&1 | $F ;;
  moe) timeout 580 python3 bench/train_vs_trl.py --model config:qwen3-30b-a3b-12l --steps 12 \
           --modes ${MODES:-onboard_checked,trl_pf_liger,trl_pf_liger_nogc,onboard_fast} 2>&1 | $F ;;
esac
rm -rf $OUT/*/grads
