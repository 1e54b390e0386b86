#!/usr/bin/env bash
# The decoder study on a CPU, across sittings: a chunk of epochs at a time, each chunk under
# `flock /tmp/kseg-heavy.lock` so that benchmarks (which take the same lock) get the machine between
# chunks; every run resumes where it stopped. Run it in the background; stop it at any time (a killed
# chunk loses at most its unfinished epoch):
#
#   nohup bash benchmarks/segnet_decoders_cpu.sh > runs/cpu_study.log 2>&1 &
#
# Arguments go on to `segnet_decoders.py study` (e.g. --limit 12 --variants segnet_basic).
# Env: SCALE (0.25: 90x120, the scale this 2-core CPU affords, ~75 s an epoch), E epochs per run (30),
# CHUNK epochs per chunk (3), OUT (runs/cpu/decoders), DATA (../shared/data/camvid), LOCK.
: "${SCALE:=0.25}" "${E:=30}" "${CHUNK:=3}" "${OUT:=runs/cpu/decoders}" "${LOCK:=/tmp/kseg-heavy.lock}"
: "${DATA:=$(dirname "$0")/../../shared/data/camvid}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
S="$(dirname "$0")/segnet_decoders.py"
mkdir -p "$OUT"
while true; do
  flock "$LOCK" python "$S" study --data "$DATA" --scale "$SCALE" --batch-size 12 --lr 1e-3 --epochs "$E" \
    --jobs 1 --chunk-epochs "$CHUNK" --log-every 1 --out "$OUT" "$@"
  rc=$?
  [ "$rc" -eq 3 ] || break  # 0: every run finished (the table is printed); else an error
  sleep 2  # a waiting benchmark takes the lock here
done
# Table 1's other columns (storage, inference ms at 360x480 on this CPU) for the table
[ "$rc" -eq 0 ] && flock "$LOCK" python "$S" infer --repeats 20 --out "$OUT"
echo "study exit $rc at $(date)"
[ "$rc" -eq 0 ] && python "$S" table "$OUT"
