export PYTHONUNBUFFERED=1
SITE=/tmp/onboard-site
export PYTHONPATH=$SITE:$PWD
echo "=== new (HEAD)"; timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=line tests/test_gpu.py -k "test_checklist_on_cuda_bf16 and llama and not gemma or (packing_fix and eager)" 2>&1 | grep -v "^DEBUG\|warn" | tail -6
cd .oldtree; export PYTHONPATH=$SITE:$PWD
echo "=== old (97c4567, start of this session)"; timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=line tests/test_gpu.py -k "test_checklist_on_cuda_bf16 and llama and not gemma or (packing_fix and eager)" 2>&1 | grep -v "^DEBUG\|warn" | tail -6
