#!/usr/bin/env bash
# The GPU checks, as one prepared call on one GPU (sized for an H200: about 7 minutes):
#   bash scripts/gpu_check.sh        # writes $OUT/summary.md and $OUT/steps.log (every step's log)
# Without a GPU (nvidia-smi missing or listing none) it refuses in one line, changing nothing; with
# one, the previous summary.md and steps.log become *.prev.
# Steps: install; torch sees the GPU; nvidia-smi; GPT-2 124M (50,304-token embedding) for 300
# steps at block 1024 in bf16-mixed, compiled, with tokens/s and MFU; trainer=fsdp on one GPU with
# a DCP save, a kill -9 and a resume that must end where an uninterrupted run ends; lmtrain.generate
# on the GPU; the tests that skip without a GPU (a skip fails there). Two files only (and their
# *.prev): a lent machine returns at most 8.
#
# Install: `make install` where PyPI is reachable. A machine that reaches no package index (a
# lent accelerator) gets the wheels this project needs beside the GPU's own torch: fetch them
# here first with `bash scripts/gpu_wheels.sh` (into .whl/, which git ignores) and carry .whl.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/gpu_check}

# No GPU, nothing to check: refuse before anything is installed or written, so that a run started
# by mistake (on a laptop, in CI) leaves the previous GPU's results as they were.
no_gpu() {
  echo "error: no GPU found ($1): run scripts/gpu_check.sh on a machine with an NVIDIA GPU;" \
    "nothing was changed" >&2
  exit 1
}
command -v nvidia-smi >/dev/null || no_gpu "nvidia-smi is not installed"
GPUS=$(nvidia-smi -L 2>&1) || no_gpu "\`nvidia-smi -L\` exited $?: ${GPUS%%$'\n'*}"
[[ $'\n'$GPUS == *$'\n'"GPU "[0-9]* ]] || no_gpu "\`nvidia-smi -L\` lists none: ${GPUS%%$'\n'*}"

mkdir -p "$OUT"
SUMMARY=$OUT/summary.md
LOG=$OUT/steps.log
# The previous run's results stay beside this one's as *.prev (the ones before them go).
for previous in "$SUMMARY" "$LOG"; do
  [ -f "$previous" ] && mv -f "$previous" "$previous.prev"
done
: >"$LOG"
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
RUNS=${GPU_CHECK_RUNS:-$(mktemp -d)}
mkdir -p "$RUNS"
export GPU_CHECK_RUNS=$RUNS
printf '# GPU check (%s)\n\n| step | result | seconds |\n|---|---|---|\n' "$(date -u +%FT%TZ)" >"$SUMMARY"
NOTES=$RUNS/notes.md # lines for under the summary's table, written by the steps that measure
: >"$NOTES"            # (a GPU_CHECK_RUNS reused: not an earlier run's lines)

FAILED=0 # steps that failed: the script's exit status is 1 unless none did
# step NAME SECONDS COMMAND...: run it (a program or a function of this script: `timeout` runs
# programs only) with a time limit, log it, add a row to the summary.
step() {
  local name=$1 limit=$2 start rc pid watchdog
  shift 2
  start=$(date +%s)
  echo "===== $name =====" >>"$LOG"
  "$@" <&0 >>"$LOG" 2>&1 & # <&0: a background command would read /dev/null, not a heredoc
  pid=$!
  (sleep "$limit" && { pkill -KILL -P "$pid"; kill -KILL "$pid"; }) >/dev/null 2>&1 &
  watchdog=$!
  wait "$pid"
  rc=$?
  pkill -P "$watchdog" sleep >/dev/null 2>&1
  local result=ok
  [ "$rc" -ne 0 ] && result="FAILED (exit $rc, see steps.log)" && FAILED=$((FAILED + 1))
  echo "| $name | $result | $(($(date +%s) - start)) |" >>"$SUMMARY"
  echo "$name: $result"
  return "$rc"
}
# stop MESSAGE...: the summary so far, one error line, exit 1 (a step the rest needs failed).
stop() {
  cat "$SUMMARY"
  echo "error: $*" >&2
  exit 1
}

if [ -d .whl ]; then
  PY=python3
  install_offline() {
    $PY -m pip install --quiet --no-index --no-deps --no-build-isolation .whl/* &&
      $PY -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
  }
  step install 180 install_offline || stop "the install failed: see $LOG"
else
  PY=.venv/bin/python
  step install 600 make install || stop "\`make install\` failed: see $LOG"
fi
# nvidia-smi sees a GPU, but the torch just installed may not (a CPU build, a driver too old for
# its CUDA): every later step would fail on it.
step torch_cuda 60 $PY -c 'import sys, torch
sys.exit(f"torch {torch.__version__} sees no GPU" if not torch.cuda.is_available() else 0)' ||
  stop "torch sees no GPU (torch.cuda.is_available() is False): install the torch built for" \
    "this machine's CUDA; see $LOG"
step nvidia-smi 30 nvidia-smi

# GPT-2 124M on the standard library's code (no download), BPE of 8,192 tokens in a 50,304-row
# embedding (nanoGPT's padded GPT-2 vocabulary).
GPT2=(model=gpt2_124m trainer=gpu logger=csv data.block_size=1024 data.batch_size=16
  data.tokenizer.vocab_size=8192 +model.config.vocab_size=50304 model.compile=true
  trainer.max_steps=300 trainer.val_check_interval=300 trainer.limit_val_batches=10
  trainer.log_every_n_steps=25 callbacks.text_samples=null callbacks.rich_progress_bar=null
  trainer.enable_progress_bar=false "paths.log_dir=$RUNS")
# Its speed is read from the run's metrics only where the run succeeded: a failed run is one row.
step gpt2_124m 240 $PY -m lmtrain.train "${GPT2[@]}" "hydra.run.dir=$RUNS/gpt2" &&
  step gpt2_124m_speed 30 $PY - "$RUNS/gpt2" "$NOTES" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
last = {k: v for row in rows for k, v in row.items() if v}
metrics = json.loads((run / "metrics.json").read_text())
line = (f"\nGPT-2 124M, block 1024, batch 16, bf16-mixed, compiled: "
        f"{float(last['train/device/items_per_sec']):,.0f} tok/s, "
        f"MFU {float(last.get('train/device/mfu', 'nan')):.3f}, "
        f"val/loss {metrics['val/loss']:.3f} after {metrics['trainer/global_step']:.0f} steps\n")
print(line)
with open(sys.argv[2], "a") as notes:
    notes.write(line)
PY

# FSDP2 on one GPU: an uninterrupted run, and one killed after its first DCP save, resumed.
FSDP=(trainer=fsdp trainer.devices=1 logger=csv data=text_files "data.source.path=$PWD/src"
  data.tokenizer.kind=char data.block_size=128 data.batch_size=8 trainer.max_steps=40
  trainer.val_check_interval=40 trainer.limit_val_batches=4 trainer.log_every_n_steps=10
  callbacks.model_checkpoint.every_n_train_steps=10 callbacks.rich_progress_bar=null
  trainer.enable_progress_bar=false "paths.log_dir=$RUNS")
step fsdp_reference 120 $PY -m lmtrain.train "${FSDP[@]}" "hydra.run.dir=$RUNS/fsdp_ref"
fsdp_killed() {
  $PY -m lmtrain.train "${FSDP[@]}" "hydra.run.dir=$RUNS/fsdp" &
  local pid=$!
  until [ -f "$RUNS/fsdp/checkpoints/last.ckpt/.metadata" ] || ! kill -0 $pid 2>/dev/null; do
    sleep 0.2
  done
  kill -9 $pid 2>/dev/null
  wait $pid
  $PY -m lmtrain.train "${FSDP[@]}" "hydra.run.dir=$RUNS/fsdp" ckpt_path=last
}
step fsdp_kill_resume 150 fsdp_killed
step fsdp_same_result 60 $PY - "$RUNS/fsdp_ref" "$RUNS/fsdp" <<'PY'
import json, sys
a, b = (json.load(open(f"{run}/metrics.json")) for run in sys.argv[1:])
print(a, b, sep="\n")
assert a["trainer/global_step"] == b["trainer/global_step"]
assert abs(a["val/loss"] - b["val/loss"]) <= 1e-5 * abs(a["val/loss"]), (a["val/loss"], b["val/loss"])
PY
step fsdp_consolidate 60 $PY -m lmtrain.strategies consolidate "$RUNS/fsdp/checkpoints/last.ckpt"
step generate 60 $PY -m lmtrain.generate "ckpt_path=$RUNS/fsdp/checkpoints/last.consolidated.ckpt" \
  device=cuda prompt="def " max_new_tokens=64 "paths.log_dir=$RUNS"

# The tests CI skips for want of a GPU (pytest ships with the GPU image; make install's dev extra).
# test_every_config's trainer=gpu run needs W&B, which a machine without a package index lacks;
# the GPT-2 step above trains with trainer=gpu.
# pytest exits 0 when every test skips: a skip here is a test this GPU did not run, so it fails,
# but for the 2-GPU tests (ddp, fsdp) on a machine of one GPU ("needs 2 GPUs").
FSDP_GPU_TEST=test_fsdp_trains_on_gpus_in_bf16_with_compiled_blocks_and_its_checkpoint_evaluates
gpu_tests() {
  $PY -m pytest -q -p no:cacheprovider -rs "tests/test_fsdp2.py::$FSDP_GPU_TEST" \
    "tests/test_configs.py::test_trainer_instantiates["{gpu,ddp,fsdp}"]" 2>&1 |
    tee "$RUNS/gpu_tests.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || return "$rc"
  if ! grep -Eq '(^|[ ,=])[0-9]+ passed' "$RUNS/gpu_tests.log" ||
    grep -E '^SKIPPED' "$RUNS/gpu_tests.log" | grep -Evq 'needs [0-9]+ GPUs'; then
    echo "gpu_check: a GPU test skipped (above), or none passed: it did not run on this GPU"
    return 1
  fi
}
step gpu_tests 180 gpu_tests

step nvidia-smi-after 30 nvidia-smi
[ -f "$NOTES" ] && cat "$NOTES" >>"$SUMMARY"
cat "$SUMMARY"
[ "$FAILED" -eq 0 ] || { echo "error: $FAILED step(s) failed: see $LOG" >&2; exit 1; }
