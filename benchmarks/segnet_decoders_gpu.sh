#!/usr/bin/env bash
# The decoder study (20 runs) and the converged SegNet-Basic on one GPU machine that has JAX but no
# TensorFlow, in one call: every run is a KERAS_BACKEND=jax process sharing the GPU; a packer copies
# results to $OUT every 40 s, so a call cut at its limit still returns what finished.
#
#   DATA=path/to/camvid WHEELS=path/to/wheels OUT=out bash benchmarks/segnet_decoders_gpu.sh
#
# WHEELS: keras, namex and optree wheels for the machine's Python, installed when keras is missing.
# Env: E study epochs (30), CE converge max epochs (50), SCALE_S study scale (0.5), SCALE_C converge
# scale (1.0), DL study deadline in s (380), CMAX converge cap in s (390), JOBS (20), LIMIT (0).
# Seen on one H200 (2026-11-28): 21 processes spent ~280 s compiling together, then the study's
# epochs took 2-7 s each and all 20 runs had trained 30 epochs at t=370 s.
T0=$(date +%s)
export KERAS_BACKEND=jax
if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "${WHEELS:?keras is missing: set WHEELS}"/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 TF_CPP_MIN_LOG_LEVEL=2
: "${E:=30}" "${CE:=50}" "${LIMIT:=0}" "${SCALE_S:=0.5}" "${SCALE_C:=1.0}" "${DL:=380}" "${CMAX:=390}" "${JOBS:=20}"
: "${OUT:=runs/gpu_out}" "${DATA:?set DATA to the CamVid folder}"
S="$(dirname "$0")/segnet_decoders.py"; R=runs/gpu
mkdir -p "$R" "$OUT"
python3 -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())" 2>&1 | tail -1
pack() {
  tar czf "$OUT/r.tgz.tmp" --exclude=state.keras --exclude=pred_test.npz --exclude=best.weights.h5 "$R" 2>/dev/null \
    && mv "$OUT/r.tgz.tmp" "$OUT/r.tgz"
}
( while sleep 40; do pack; done ) & PACKER=$!
python3 "$S" converge --data "$DATA" --scale "$SCALE_C" --batch-size 12 --lr 1e-3 --max-epochs "$CE" --val-every 5 \
  --patience 4 --log-every 1 --max-seconds "$CMAX" --limit "$LIMIT" --resume --out "$R/segnet_basic_camvid" \
  > "$R/converge.log" 2>&1 &
CONV=$!
python3 "$S" study --data "$DATA" --scale "$SCALE_S" --batch-size 12 --lr 1e-3 --epochs "$E" --jobs "$JOBS" \
  --deadline-seconds "$DL" --log-every 5 --limit "$LIMIT" --out "$R/decoders" 2>&1 | grep -v "^[IWE]0000\|^WARNING: All"
wait $CONV; echo "converge exit $?"; grep "^\[" "$R/converge.log" | tail -30
python3 "$S" infer --repeats 20 --out "$R/decoders" 2>&1 | grep -v "^[IWE]0000\|^WARNING: All"
kill $PACKER 2>/dev/null
pack
python3 "$S" table "$R/decoders"
# an unfinished converge run: its state, in parts small enough to come back, for --resume elsewhere
[ -f "$R/segnet_basic_camvid/result.json" ] || [ ! -f "$R/segnet_basic_camvid/state.keras" ] \
  || split -b 12M "$R/segnet_basic_camvid/state.keras" "$OUT/state.keras.part-"
echo "--- done at t=$(( $(date +%s) - T0 )) s"
