#!/usr/bin/env bash
# second GPU run: the backward's diagnosis (parallel variants), then bench_model
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
go() {  # NAME CFG [EDIT] [ENV=...]
    local n=$1; mkdir -p /tmp/tc_$n
    ( export TRITON_CACHE_DIR=/tmp/tc_$n; [[ -n "${4:-}" ]] && export "$4"
      timeout -s INT -k 5 "${DIAG_SECONDS:-150}" python3 results/gpu_h200/diag_backward.py "$n" "$2" $3 >/tmp/diag_$n.jsonl 2>/tmp/diag_$n.err ) &
}
t0=$SECONDS
go base 64,8,3
go st1 64,8,1
go st2 64,8,2
go w4s3 64,4,3
go w4s1 64,4,1
go bv128 128,8,3
go nommav3 64,8,3 "" DISABLE_MMA_V3=1
go delta_loop 64,8,3 delta_loop
go vt_load 64,8,3 vt_load
wait
echo "diag: $((SECONDS - t0)) s"
cat /tmp/diag_*.jsonl > "$OUT/diag.jsonl"
for f in /tmp/diag_*.err; do echo "== $f"; tail -c 1500 "$f"; done > "$OUT/diag_err.log"
t0=$SECONDS
timeout -s INT -k 10 "${MODEL_SECONDS:-90}" python3 scripts/bench_model.py --device cuda --depths 50 \
    --frames 5 --repeats 3 --json "$OUT/bench_model.json" > "$OUT/bench_model.log" 2>&1
echo "bench_model: exit $? in $((SECONDS - t0)) s"
