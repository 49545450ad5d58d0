#!/usr/bin/env bash
# The prepared GPU run of issue 8. `cargo xtask cuda-build --device-dir .device` writes it as
# .device/run.sh beside film-train.gz, cuda_check.gz and step_check.gz (the stripped CUDA
# binaries, gzipped to keep the payload small) and torch_film.py (given with --torch-script). On an H100/H200
# machine, from the repository root with .device carried:   bash .device/run.sh
# `python3` there must have PyTorch with CUDA; its pip wheels provide the CUDA libraries.
#
# In order, each step under its own `timeout` and all of them under one overall budget
# (BUDGET seconds, default 520; parts 1 and 2 leave at least 150 s of it to part 3):
#   1. cuda_check: parity of the fused FiLM kernels against the CPU reference, then copy /
#      fused forward / forward+backward timings against candle's broadcast composition;
#      then PyTorch's FiLM micro-benchmark on the same card; then step_check: parity of
#      the fused GRU, of Adam's in-place kernels and of the cuDNN convolutions, and their
#      timings against candle's composition; then PyTorch's GRU forward and 3x3
#      convolution on the same card;
#   2. `film-train profile --device cuda` at batch 64 for mini, paper-features, paper-raw,
#      each followed by the PyTorch reference's training step on the same configuration
#      (small, paper, raw); then paper-features and paper-raw again with --tf32 (TF32
#      products, as PyTorch's cuDNN convolutions and GRU use by default);
#   3. a small embedded dataset generated on this machine's cores, then a training run of
#      TRAIN_PRESET (default paper-raw) on the GPU for up to TRAIN_MINUTES (default 3, less if
#      the budget is short), whose metrics.jsonl shows the loss per epoch.
# Every step's output goes to stdout and to $OUT/<step>.log; run.log has the step times.
# PARTS (default check,profile,train) picks the parts to run. For a dry run of the script
# without GPU: DEVICE=cpu PY=/path/to/python-with-torch, with a libcuda.so.1 (the build's
# link stub will do) on LD_LIBRARY_PATH.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
budget=${BUDGET:-520}
train_minutes=${TRAIN_MINUTES:-3}
device=${DEVICE:-cuda}
py=${PY:-python3}
parts=",${PARTS:-check,profile,train},"
train_preset=${TRAIN_PRESET:-paper-raw}
deadline=$((SECONDS + budget))
work=$(mktemp -d /tmp/film-gpu.XXXXXX)

log() { echo "[run.sh $(date -u +%H:%M:%S) t=${SECONDS}s] $*" | tee -a "$out/run.log"; }

# Seconds of the budget that the steps before the training run must leave to it.
reserve=0

# step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout` (LIMIT_S, cut to what is left of
# the budget less the reserve), output to stdout and $out/NAME.log; a step that cannot get
# 10 s is skipped.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS - reserve))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    log "SKIP $name: budget spent"
    return 124
  fi
  log "START $name (limit ${limit}s): $*"
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  log "END $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (TIMED OUT)')"
  return "$rc"
}

# ---- the binaries and the CUDA libraries -------------------------------------------------
for bin in film-train cuda_check step_check; do
  gzip -dc "$here/$bin.gz" > "$work/$bin" || { log "cannot unpack $here/$bin.gz"; exit 127; }
  chmod +x "$work/$bin"
done
# PyTorch's CUDA pip wheels: nvidia/cu13/lib (CUDA 13) or nvidia/<package>/lib (older layout).
nv=$("$py" -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
libs=$(ls -d "$nv"/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:-}
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH%:}:/usr/local/cuda/lib64
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm --format=csv 2>&1
  nproc
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1
  ldd "$work/film-train" | grep -E 'libcu|libnvrtc|not found'
} 2>&1 | tee "$out/machine.log"
# (grep -q would end the pipe early, and pipefail would then turn a match into a failure.)
missing=$(ldd "$work/film-train" "$work/cuda_check" "$work/step_check" | grep 'not found')
if [ -n "$missing" ]; then
  log "missing libraries (see machine.log); candidates:"
  find / -xdev \( -name 'libcuda.so.1' -o -name 'libcublas.so.13' -o -name 'libcurand.so.10' \
    -o -name 'libcudart.so.13' -o -name 'libnvrtc.so.13' \) 2>/dev/null | head -20 | tee -a "$out/run.log"
  exit 127
fi
ft=$work/film-train
torch_ref=$here/torch_film.py

# ---- 1. the FiLM kernels -----------------------------------------------------------------
[[ $parts == *,train,* ]] && reserve=150
check_status=0
if [[ $parts == *,check,* ]]; then
  step cuda_check 150 "$work/cuda_check"
  check_status=$?
  step torch_film_micro 60 "$py" "$torch_ref" --device "$device" --micro-only --micro-ops film \
    --micro-iters 20
  step step_check 120 "$work/step_check"
  gru_status=$?
  ((check_status == 0 && gru_status != 0)) && check_status=$gru_status
  step torch_gru_conv_micro 60 "$py" "$torch_ref" --device "$device" --micro-only \
    --micro-ops gru,conv
fi

# ---- 2. training-step profiles, ours then PyTorch's, configuration by configuration --------
if [[ $parts == *,profile,* ]]; then
  for pair in mini:small paper-features:paper paper-raw:raw; do
    preset=${pair%%:*} config=${pair##*:}
    step "profile_$preset" 75 "$ft" profile --device "$device" --preset "$preset" --batch 64 \
      --steps 20 --warmup 3
    step "torch_$config" 75 "$py" "$torch_ref" --config "$config" --device "$device" --batch 64 \
      --steps 20 --modes train
  done
  if [[ $device == cuda ]]; then
    for preset in paper-features paper-raw; do
      step "profile_${preset}_tf32" 75 "$ft" profile --device cuda --tf32 --preset "$preset" \
        --batch 64 --steps 20 --warmup 3
    done
  fi
fi

# ---- 3. a training run on the GPU ------------------------------------------------------------
if [[ $parts == *,train,* ]]; then
  reserve=0
  step generate 60 "$ft" generate --out "$work/data" --train-images 600 --val-images 100
  # Leave 75 s after the training time for loading the data, the final evaluation and the
  # checkpoint; shorten the run if the budget is tighter than planned.
  left=$((deadline - SECONDS - 75))
  minutes=$(python3 -c "print(round(max(0.5, min($train_minutes, $left / 60)), 2))")
  step "train_$train_preset" $((deadline - SECONDS)) "$ft" train --data "$work/data" \
    --preset "$train_preset" --device "$device" --minutes "$minutes" --val-limit 500 \
    --out "$work/run" --quiet
  if [ -f "$work/run/metrics.jsonl" ]; then
    cp "$work/run/metrics.jsonl" "$out/train_metrics.jsonl"
    log "$train_preset metrics (one line per evaluation; train loss: mean since the previous one):"
    python3 - "$work/run/metrics.jsonl" <<'EOF' 2>&1 | tee -a "$out/run.log"
import json, sys
print(f"{'step':>6} {'epoch':>5} {'seconds':>8} {'train loss':>10} {'train acc':>9} {'val acc':>7} {'val n':>5}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    get = lambda k: r.get(k) if r.get(k) is not None else float("nan")
    print(f"{r['step']:>6} {r['epoch']:>5} {get('train_seconds'):>8.1f} {get('train_loss'):>10.4f} "
          f"{100 * get('train_accuracy'):>8.1f}% {100 * get('overall'):>6.1f}% {r.get('n', 0):>5}")
EOF
  fi
fi

log "done; exit status $check_status (cuda_check's, else step_check's)"
rm -rf "$work"
exit "$check_status"
