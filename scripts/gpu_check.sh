#!/usr/bin/env bash
# All GPU checks of the criss-cross attention kernels in one run, results in ONE JSON file.
#
#   bash scripts/gpu_check.sh [OUT.json]     # default: $OUT/gpu_check.json if $OUT is set,
#                                            # else ./gpu_check.json
#
# Steps (each under its own time limit; the default steps' limits add up to 510 s, at most ~10 min
# with the 10 s kill grace of each and the 60 s environment probe; an H200 started in ~30 s):
#   1. pytest -m gpu over tests/, in $GPU_CHECK_SHARDS (8) processes at once (kernels vs a
#      float64 dense reference, fp32 / fp16 / bf16; no
#      autotuning, but each autotune config alone at 256-wide lines; the two-launch forward
#      and the one-launch one; repeated runs bitwise equal; the metrics' no-host-sync check)
#   2. scripts/bench_attention.py at the CamVid (fp16) and VSPW (bf16) shapes: the operator's
#      backends vs dense SDPA and FlexAttention, forward and forward+backward, % of the
#      bandwidth floor, peak memory; `triton` (two-launch forward, the default) against
#      `triton-fused` (VIDCCNET_CCA_FUSED_FORWARD=1) in the same interleaved run (on an H200
#      with Triton 3.6 the two launches were faster: docs/benchmarks.md)
#   3. scripts/train.py on configs/synthetic_tiny.yaml (the demo's recipe) on cuda with
#      runtime.amp=bf16: the Triton forward and backward inside autocast training, end to end;
#      the run's last metrics.jsonl records (val mIoU, gamma) go into the JSON
#   4. scripts/bench_model.py --device cuda (3D vs per-frame CCNet, one clip)
#   5. ncu_camvid: Nsight Compute ($NCU, default ncu) on the CamVid-shaped forward and backward
#      (scripts/cca_workload.py, untuned config): speed of light, occupancy, launch statistics
#      and memory workload of each of the 4 kernels of one iteration, as CSV in the JSON
#   6. sanitize: compute-sanitizer ($COMPUTE_SANITIZER) racecheck, then memcheck (PyTorch's
#      caching allocator off), on a small shape whose column lines are 128 long (the launch
#      that raced on 2026-12-04 computes Delta on the column lines)
# GPU_CHECK_STEPS picks steps (default "pytest bench_camvid bench_vspw ncu_camvid sanitize",
# train_bf16 and bench_model ran on 2026-12-04 and are for a later check). The
# JSON is rewritten after every step: a run cut short keeps what it finished.
# A step that fails or times out is recorded as such; the script exits non-zero if any did, or
# if the JSON could not be written (the step logs are then kept and their folder named). The
# benchmarks rewrite their JSON as they go: a step cut by its limit or an error keeps the rows
# it finished, in its "results" marked "complete": false.
# Without a CUDA GPU it stops at once with one line on stderr (exit 2).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
default_out="gpu_check.json"
if [[ -n "${OUT:-}" ]]; then default_out="$OUT/gpu_check.json"; fi
out="${1:-$default_out}"
unset TRITON_INTERPRET  # compiled kernels, not the CPU interpreter
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# images with python3 only (the H200's) have no python
PY="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
ALL_STEPS="pytest bench_camvid bench_vspw train_bf16 bench_model ncu_camvid sanitize"  # JSON order
steps=" ${GPU_CHECK_STEPS:-pytest bench_camvid bench_vspw ncu_camvid sanitize} "
for s in $steps; do
    if [[ " $ALL_STEPS " != *" $s "* ]]; then
        echo "gpu_check.sh: error: unknown step '$s' in GPU_CHECK_STEPS;" \
            "the steps are $ALL_STEPS" >&2
        exit 2
    fi
done

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check.sh: error: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
fi
if ! mkdir -p "$(dirname "$out")"; then
    echo "gpu_check.sh: error: cannot create the folder of $out" >&2
    exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
# the machine, first and under a limit: after a step that wedged the GPU it could hang
timeout --kill-after=5 60 "$PY" -c "import json, torch, triton
print(json.dumps(dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
                      cuda=torch.version.cuda, triton=triton.__version__)))" \
    >"$work/environment.json" 2>"$work/environment.log"

step() {  # step NAME SECONDS CMD...: run with a time limit, keep its log and exit code, and
    # rewrite the JSON (collect), so that a run cut short keeps the steps it finished
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1
    local rc=$?
    echo "$rc $((SECONDS - t0))" >"$work/$name.rc"
    echo "gpu_check.sh: $name: exit $rc in $((SECONDS - t0)) s" >&2
    if [[ $rc -ne 0 ]]; then status=1; fi
    collect
}

# pytest_shards: the selected tests in $GPU_CHECK_SHARDS processes at once (round-robin in file
# order, so each starts with the most needed ones): compiling the kernels (ptxas, one core per
# kernel) is most of this step. One JUnit XML per shard.
pytest_shards() {
    local ids=() pids=() rc=0 i j
    # job control: background shards keep SIGINT (else they ignore it and write no XML); the
    # step's INT (timeout) is passed on to them, and they stop the way Ctrl-C stops pytest
    set -m  # each shard is then its own process group (pgid = pid), ptxas children included
    trap 'kill -INT -- "${pids[@]/#/-}" 2>/dev/null' INT
    mapfile -t ids < <("$PY" -m pytest -q --collect-only -p no:cacheprovider -m "$GPU_CHECK_MARKS" \
        $GPU_CHECK_TESTS 2>/dev/null | grep '::')
    if (( ${#ids[@]} == 0 )); then  # nothing collected, or collection failed: say why in one run
        "$PY" -m pytest -q -p no:cacheprovider -m "$GPU_CHECK_MARKS" $GPU_CHECK_TESTS \
            --junitxml="$work/pytest_0.xml"
        return
    fi
    for ((i = 0; i < GPU_CHECK_SHARDS && i < ${#ids[@]}; i++)); do
        local mine=()
        for ((j = i; j < ${#ids[@]}; j += GPU_CHECK_SHARDS)); do mine+=("${ids[j]}"); done
        "$PY" -m pytest -q -p no:cacheprovider "${mine[@]}" --junitxml="$work/pytest_$i.xml" \
            >"$work/pytest_$i.log" 2>&1 &
        pids+=($!)
        echo "$!" >>"$work/shards.pid"
    done
    for pid in "${pids[@]}"; do
        # the INT ends a wait early: wait again until the shard has written its XML and exited
        while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
        wait "$pid"
        j=$?
        if (( j > rc )); then rc=$j; fi
    done
    tail -n 3 "$work"/pytest_*.log
    return "$rc"
}
export PY work GPU_CHECK_MARKS="${GPU_CHECK_MARKS:-gpu}" GPU_CHECK_TESTS="${GPU_CHECK_TESTS:-tests}"
export GPU_CHECK_SHARDS="${GPU_CHECK_SHARDS:-8}"
export -f pytest_shards
collect() {  # rewrite $out from what the steps left in $work (no torch import: a stuck GPU
    # must not lose the results)
    "$PY" - "$work" "$out" $ALL_STEPS <<'PYEOF'
import json, os, socket, sys, xml.etree.ElementTree as ET
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {"host": socket.gethostname(), "steps": {}}
try:  # written before the steps (no torch import here: a stuck GPU must not lose the results)
    result.update(json.loads((work / "environment.json").read_text()))
except Exception as exc:  # noqa: BLE001
    result["environment_error"] = (repr(exc) + " "
                                   + (work / "environment.log").read_text(errors="replace")[-2000:])
for name in sys.argv[3:]:
    rc_file = work / f"{name}.rc"
    if not rc_file.exists() and not (work / f"{name}.log").exists():
        continue  # not run (yet)
    rc, seconds = (int(x) for x in rc_file.read_text().split()) if rc_file.exists() else (-1, 0)
    step = {"exit_code": rc, "timed_out": rc in (124, 130, 137), "seconds": seconds}
    log = work / f"{name}.log"
    if log.exists():
        step["log_tail"] = log.read_text(errors="replace")[-4000:]
    try:
        data = work / f"{name}.json"
        if data.exists():
            step["results"] = json.loads(data.read_text())
        xmls = sorted(work.glob("pytest_*.xml")) if name == "pytest" else []
        if xmls:  # one per shard
            suites = []
            for xml in xmls:
                root = ET.parse(xml).getroot()
                suites.append(root if root.tag == "testsuite" else root.find("testsuite"))
            step["shards"] = len(suites)
            step["tests"] = {k: sum(int(s.get(k, 0)) for s in suites)
                             for k in ("tests", "failures", "errors", "skipped")}
            cases = [c for s in suites for c in s.iter("testcase")]
            step["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in cases
                              if c.find("failure") is not None or c.find("error") is not None]
            # the why of each failure (the logs are not kept, and log_tail holds ~15 of them)
            step["failures"] = {
                f"{c.get('classname')}::{c.get('name')}": (
                    f"{bad.get('message') or ''}\n{(bad.text or '')[-1500:]}".strip())
                for c in cases
                for bad in (c.find("failure"), c.find("error")) if bad is not None}
        csv = work / f"{name}.csv"
        if csv.exists():  # a profiler's report, whole
            step["csv"] = csv.read_text(errors="replace")
        metrics = work / name / "metrics.jsonl"
        if metrics.exists():  # a training run: its last records (val mIoU, gamma, loss)
            step["metrics_tail"] = [json.loads(x) for x in metrics.read_text().splitlines()[-6:]]
    except Exception as exc:  # noqa: BLE001 - a truncated file after a kill
        step["read_error"] = repr(exc)
    result["steps"][name] = step
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps(result, indent=1))
os.replace(tmp, out)
PYEOF
}

wants() { [[ "$steps" == *" $1 "* ]]; }
if wants pytest; then
    step pytest "${GPU_CHECK_PYTEST_SECONDS:-180}" env VIDCCNET_CCA_AUTOTUNE=0 bash -c pytest_shards
    # a shard that outlived the step's kill (its own process group) must not share the GPU with
    # the benchmarks
    if [[ -f "$work/shards.pid" ]]; then
        while read -r pid; do kill -KILL -- "-$pid" 2>/dev/null; done <"$work/shards.pid"
    fi
fi
# TORCHINDUCTOR_COMPILE_THREADS=1: FlexAttention's compile in-process; on an H200 the benchmark
# finished its table, then waited at exit for Inductor's compile workers until the step's limit
if wants bench_camvid; then
    step bench_camvid 80 env TORCHINDUCTOR_COMPILE_THREADS=1 "$PY" scripts/bench_attention.py \
        --case camvid --device cuda --dtype float16 --repeats 10 --json "$work/bench_camvid.json"
fi
if wants bench_vspw; then
    step bench_vspw 80 env TORCHINDUCTOR_COMPILE_THREADS=1 "$PY" scripts/bench_attention.py \
        --case vspw --device cuda --dtype bfloat16 --repeats 10 --json "$work/bench_vspw.json"
fi
if wants train_bf16; then
    step train_bf16 75 "$PY" scripts/train.py --config configs/synthetic_tiny.yaml \
        runtime.device=cuda runtime.amp=bf16 data.num_workers=6 \
        runtime.output_dir="$work/train_bf16"
fi
if wants bench_model; then
    step bench_model 80 "$PY" scripts/bench_model.py --device cuda --depths 50 --frames 5 \
        --repeats 3 --json "$work/bench_model.json"
fi
if wants ncu_camvid; then
    # iteration 1 compiles; the 4 launches of iteration 2 are profiled
    step ncu_camvid 80 env VIDCCNET_CCA_AUTOTUNE=0 VIDCCNET_CCA_FUSED_FORWARD=0 \
        "${NCU:-ncu}" --clock-control none \
        --target-processes all -k 'regex:_(fwd|bwd)' --launch-skip 4 --launch-count 4 \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section MemoryWorkloadAnalysis --csv --log-file "$work/ncu_camvid.csv" \
        "$PY" scripts/cca_workload.py --iters 2
fi
if wants sanitize; then
    sanitize() {
        local tool
        for tool in racecheck memcheck; do
            echo "== $tool"
            "${COMPUTE_SANITIZER:-compute-sanitizer}" --tool "$tool" --error-exitcode 3 \
                "$PY" scripts/cca_workload.py --shape 1 64 128 2 128 16 --iters 1 || return
        done
    }
    export -f sanitize
    step sanitize 90 env VIDCCNET_CCA_AUTOTUNE=0 PYTORCH_NO_CUDA_MEMORY_CACHING=1 bash -c sanitize
fi
if [[ -f "$out" ]]; then
    echo "gpu_check.sh: wrote $out" >&2
else
    status=1
    trap - EXIT
    echo "gpu_check.sh: error: the JSON was not written; the step logs are in $work" >&2
fi
exit $status
