#!/usr/bin/env bash
# The device call of 2026-12-04 (third session): compile the three versions (row_pass_bench.py
# --warm, one process per version and case) while the GPU tests of the new default kernel run
# (6 shards, untuned), then time them with the GPU otherwise idle, then Nsight Compute on the
# new default kernel (as scripts/gpu_check.sh's ncu_camvid step), then bench_attention.py's
# CamVid and VSPW cases for the two-launch and one-launch forwards. About 7 minutes; the limits
# add up to 555 s.
#   bash results/gpu_h200/row_pass/run.sh      # writes $OUT/row_pass.json, $OUT/logs/
cd "$(dirname "$0")/../../.." || exit 2
PY="$(command -v python || command -v python3)"
export PYTHONPATH="$PWD"
unset TRITON_INTERPRET
out="${OUT:-.}"
log="$out/logs"
mkdir -p "$log"
start=$SECONDS
for v in head order new; do
    for c in camvid vspw; do
        timeout 180 "$PY" results/gpu_h200/row_pass/row_pass_bench.py --warm "$v" "$c" \
            >"$log/warm_${v}_$c.log" 2>&1 &
    done
done
mapfile -t ids < <("$PY" -m pytest -q --collect-only -p no:cacheprovider -m gpu \
    tests/ops/test_triton_cca.py 2>/dev/null | grep '::' |
    grep -E "test_gpu_matches_dense_reference|large_vs|fused_forward_sync")
for ((i = 0; i < 6; i++)); do
    mine=()
    for ((j = i; j < ${#ids[@]}; j += 6)); do mine+=("${ids[j]}"); done
    VIDCCNET_CCA_AUTOTUNE=0 timeout -s INT -k 10 180 "$PY" -m pytest -q -p no:cacheprovider "${mine[@]}" \
        --junitxml="$log/pytest_$i.xml" >"$log/pytest_$i.log" 2>&1 &
done
wait
echo "compile and tests: $((SECONDS - start)) s (${#ids[@]} tests)"
timeout 150 "$PY" results/gpu_h200/row_pass/row_pass_bench.py --json "$out/row_pass.json" \
    >"$log/bench.log" 2>&1
echo "bench: exit $? at $((SECONDS - start)) s"
VIDCCNET_CCA_AUTOTUNE=0 VIDCCNET_CCA_FUSED_FORWARD=0 timeout 60 "${NCU:-ncu}" --clock-control none \
    --target-processes all -k 'regex:_(fwd|bwd)' --launch-skip 4 --launch-count 4 \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section MemoryWorkloadAnalysis --csv --log-file "$out/ncu_new.csv" \
    "$PY" scripts/cca_workload.py --iters 2 >"$log/ncu.log" 2>&1
echo "ncu: exit $? at $((SECONDS - start)) s"
# the operator as users get it (autotuned), with the new order: two-launch vs one-launch forward
for c in "camvid float16" "vspw bfloat16"; do
    set -- $c
    TORCHINDUCTOR_COMPILE_THREADS=1 timeout 75 "$PY" scripts/bench_attention.py --case "$1" \
        --device cuda --dtype "$2" --repeats 10 --methods reference triton triton-fused \
        --json "$out/bench_$1.json" >"$log/bench_$1.log" 2>&1
    echo "bench_attention $1: exit $? at $((SECONDS - start)) s"
done
tail -n 2 "$log"/pytest_*.log "$log"/warm_*.log
tail -c 3000 "$log/bench.log"
tail -n 12 "$log"/bench_camvid.log "$log"/bench_vspw.log
