"""The benchmarks' --json output: strict JSON written whole, and a missing folder refused
before any measurement (not a traceback after it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TINY_MODEL = ["--depths", "18", "--frames", "1", "--size", "16", "16", "--configs", "noatt",
              "--device", "cpu"]


def test_bench_model_writes_json(load_script, tmp_path):
    out = tmp_path / "rows.json"
    assert load_script("bench_model").main(TINY_MODEL + ["--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["rows_planned"] == data["rows_finished"] == 1
    assert data["rows"][0]["config"] == "noatt"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no temporary left
    # the figures say where they were measured (a GPU figure needs the GPU's name)
    meta = data["meta"]
    assert meta["device"].startswith("CPU") and meta["torch"] == torch.__version__
    assert (meta["size"], meta["repeats"], meta["threads"]) == ([16, 16], 1, 1)
    assert "utc" in meta and len(meta["load_average"]) == 3


def test_bench_model_json_keeps_the_rows_finished_before_an_error(load_script, tmp_path,
                                                                  monkeypatch):
    """The rows were written once, at the end: an error (or a time limit) in a later clip
    length lost the ones measured. The file is rewritten after each clip length, "complete":
    false until the end."""
    bench = load_script("bench_model")
    profiled = bench._forward_cpu_profiled

    def out_of_memory_at_t2(model, x):
        if x.shape[2] == 2:
            raise RuntimeError("out of memory")
        return profiled(model, x)

    monkeypatch.setattr(bench, "_forward_cpu_profiled", out_of_memory_at_t2)
    out = tmp_path / "rows.json"
    argv = ["--depths", "18", "--frames", "1", "2", "--size", "16", "16", "--configs", "noatt",
            "--device", "cpu", "--json", str(out)]
    with pytest.raises(RuntimeError, match="out of memory"):
        bench.main(argv)
    data = json.loads(out.read_text())
    assert data["complete"] is False and (data["rows_planned"], data["rows_finished"]) == (2, 1)
    assert [(r["frames"], r["config"]) for r in data["rows"]] == [(1, "noatt")]


def test_bench_model_json_into_missing_folder_is_refused_up_front(load_script, tmp_path,
                                                                  capsys):
    rc = load_script("bench_model").main(TINY_MODEL + ["--json", str(tmp_path / "no" / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "folder does not exist" in err[0], err


def test_bench_data_json_into_missing_folder_is_refused_up_front(load_script, tmp_path, capsys):
    rc = load_script("bench_data").main(["--quick", "--json", str(tmp_path / "no" / "d.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "folder does not exist" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_check_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    """scripts/gpu_check.sh (the first GPU session's one script) stops at once without a GPU."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"),
                           str(tmp_path / "gpu.json")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no CUDA GPU" in proc.stderr
    assert not (tmp_path / "gpu.json").exists()


FAKE_GPU_PYTHON = r"""#!/usr/bin/env bash
# python on a GPU machine, as gpu_check.sh runs it: the CUDA check passes, pytest fails one test
# (junit XML with its message), the benchmarks fail after one row of their --json, the JSON
# writer is the real python.
case "$1" in
    -c) exit 0 ;;
    -m) for a in "$@"; do case "$a" in --junitxml=*) xml="${a#--junitxml=}" ;; esac; done
        cat >"$xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="1" skipped="0" tests="2"><testcase classname="tests.ops.test_triton_cca"
name="test_gpu_x[dtype1]"><failure message="AssertionError: dq: |a - b| = 0.02 exceeds 0.01">
long traceback</failure></testcase><testcase classname="tests.ops.test_triton_cca"
name="test_gpu_y"/></testsuite></testsuites>
XML
        exit 1 ;;
    -) exec "$REAL_PYTHON" "$@" ;;
    *) while [[ $# -gt 0 && "$1" != --json ]]; do shift; done
       echo '{"rows": [{"n": 1}], "complete": false, "rows_planned": 2, "rows_finished": 1}' >"$2"
       exit 3 ;;
esac
"""


def test_gpu_check_records_why_each_test_failed(tmp_path):
    """The step logs are deleted at the end: the JSON keeps each failed test's message, not
    only its name; failed steps are recorded, with the rows their --json holds (marked
    "complete": false), and the script exits 1."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    fake = tmp_path / "python"
    fake.write_text(FAKE_GPU_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": str(fake), "REAL_PYTHON": sys.executable,
                               "GPU_CHECK_STEPS": "pytest bench_camvid bench_vspw bench_model"})
    assert proc.returncode == 1, proc.stderr
    steps = json.loads(out.read_text())["steps"]
    assert steps["pytest"]["tests"] == {"tests": 2, "failures": 1, "errors": 0, "skipped": 0}
    name = "tests.ops.test_triton_cca::test_gpu_x[dtype1]"
    assert steps["pytest"]["failed"] == [name]
    why = steps["pytest"]["failures"][name]
    assert why.startswith("AssertionError: dq: |a - b| = 0.02") and "long traceback" in why
    for s in ("bench_camvid", "bench_vspw", "bench_model"):
        assert steps[s]["exit_code"] == 3
        assert steps[s]["results"] == {"rows": [{"n": 1}], "complete": False,
                                       "rows_planned": 2, "rows_finished": 1}


STEP_PYTHON = r"""#!/usr/bin/env bash
# python on a GPU machine: the benchmark writes one row; the training step copies the JSON as it
# is when the step starts (written after the step before?) and writes two metrics records
case "$1" in
    -c) exit 0 ;;
    -) exec "$REAL_PYTHON" "$@" ;;
    scripts/train.py)
        cp "$GPU_OUT" "$SNAPSHOT"
        for a in "$@"; do
            case "$a" in runtime.output_dir=*) dir="${a#runtime.output_dir=}" ;; esac
        done
        mkdir -p "$dir"
        printf '%s\n' '{"type": "train", "iteration": 600}' '{"type": "val", "mIoU": 0.6}' \
            >"$dir/metrics.jsonl"
        exit 0 ;;
    *) while [[ $# -gt 0 && "$1" != --json ]]; do shift; done
       echo '{"rows": [{"n": 1}], "complete": true}' >"$2"
       exit 0 ;;
esac
"""


def test_gpu_check_steps_are_chosen_and_the_json_is_written_after_each(tmp_path):
    """GPU_CHECK_STEPS runs the steps named (a rerun after a fix); the JSON is rewritten after
    every step, so a run cut short by the device's time limit keeps the steps it finished; the
    training step's last metrics records come back in it."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    fake = tmp_path / "python"
    fake.write_text(STEP_PYTHON)
    fake.chmod(0o755)
    out, snapshot = tmp_path / "gpu.json", tmp_path / "snapshot.json"
    env = {**os.environ, "PYTHON": str(fake), "REAL_PYTHON": sys.executable,
           "GPU_OUT": str(out), "SNAPSHOT": str(snapshot),
           "GPU_CHECK_STEPS": "bench_camvid train_bf16"}
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(snapshot.read_text())["steps"]) == ["bench_camvid"]
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == ["bench_camvid", "train_bf16"]  # no pytest, vspw, model
    assert steps["bench_camvid"]["results"] == {"rows": [{"n": 1}], "complete": True}
    assert steps["train_bf16"]["exit_code"] == 0
    assert steps["train_bf16"]["metrics_tail"] == [{"type": "train", "iteration": 600},
                                                   {"type": "val", "mIoU": 0.6}]


FAKE_NCU = r"""#!/usr/bin/env bash
# ncu: writes a CSV to --log-file, checks it was given the workload, untuned, two-launch
[[ "$VIDCCNET_CCA_AUTOTUNE $VIDCCNET_CCA_FUSED_FORWARD" == "0 0" ]] || exit 8
[[ " $* " == *" --launch-skip 4 --launch-count 4 "* ]] || exit 7
while [[ $# -gt 0 && "$1" != --log-file ]]; do shift; done
log="$2"; shift 2
[[ "$2" == scripts/cca_workload.py ]] || exit 9
printf '%s\n' '"ID","Kernel Name","Metric Name","Metric Value"' \
    '"0","_fwd_kernel","Achieved Occupancy","12.5"' >"$log"
"""

FAKE_SANITIZER = r"""#!/usr/bin/env bash
# compute-sanitizer: --tool TOOL --error-exitcode N PY SCRIPT ARGS
[[ "$1 $3" == "--tool --error-exitcode" && "$5" == */python ]] || exit 9
[[ "$6 $7 $8" == "scripts/cca_workload.py --shape 1" ]] || exit 9
echo "========= $2: 0 hazards, VIDCCNET_CCA_AUTOTUNE=$VIDCCNET_CCA_AUTOTUNE"
"""


def test_gpu_check_uses_python3_where_there_is_no_python(tmp_path):
    """The H200 image has python3 and no python: without $PYTHON the script finds python3 (it
    used to stop at once, saying no CUDA GPU was visible)."""
    import os
    import subprocess
    import sys

    if any((Path(d) / "python").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("this machine has a system python")
    repo = Path(__file__).resolve().parents[2]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(STEP_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", REAL_PYTHON=sys.executable,
               GPU_CHECK_STEPS="bench_camvid")
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["steps"]["bench_camvid"]["exit_code"] == 0


def test_gpu_check_refuses_an_unknown_step_before_anything(tmp_path):
    """A mistyped GPU_CHECK_STEPS entry would run nothing and end with "the JSON was not
    written": it is one line and exit 2, before the GPU is even probed."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GPU_CHECK_STEPS": "pytest benchcamvid"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "unknown step 'benchcamvid'" in proc.stderr and not out.exists()


def test_gpu_check_profiles_and_sanitizes_the_kernels(tmp_path):
    """The steps ncu_camvid and sanitize run Nsight Compute and compute-sanitizer (racecheck,
    then memcheck) on scripts/cca_workload.py, untuned; the profiler's CSV comes back whole."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    tools = {}
    for name, text in (("python", STEP_PYTHON), ("ncu", FAKE_NCU), ("sanitizer", FAKE_SANITIZER)):
        tools[name] = tmp_path / name
        tools[name].write_text(text)
        tools[name].chmod(0o755)
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": str(tools["python"]), "REAL_PYTHON": sys.executable,
           "NCU": str(tools["ncu"]), "COMPUTE_SANITIZER": str(tools["sanitizer"]),
           "GPU_CHECK_STEPS": "ncu_camvid sanitize"}
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == ["ncu_camvid", "sanitize"]
    row = steps["ncu_camvid"]["csv"].splitlines()[1]
    assert row == '"0","_fwd_kernel","Achieved Occupancy","12.5"'
    log = steps["sanitize"]["log_tail"]
    assert log.index("racecheck: 0 hazards, VIDCCNET_CCA_AUTOTUNE=0") < log.index("memcheck: 0")


def test_cca_workload_names_a_wrong_device_in_one_line(load_script, capsys):
    rc = load_script("cca_workload").main(["--device", "gpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["cca_workload.py: error: --device gpu is not a device: use cuda "
                               "(or cpu under TRITON_INTERPRET=1)"]


def test_cca_workload_runs_the_kernels_in_the_interpreter(load_script, monkeypatch, capsys):
    """The profilers' workload: forward and backward per iteration, 4 launches (two-launch
    forward), on CPU under Triton's interpreter."""
    from vidccnet.ops import triton_cca

    ok, reason = triton_cca.triton_available("cpu")
    if not ok:
        pytest.skip(f"Triton interpreter: {reason}")
    monkeypatch.delenv(triton_cca.FUSED_FORWARD_ENV, raising=False)
    calls = []
    for name in ("cca_forward", "cca_backward"):
        real = getattr(triton_cca, name)
        monkeypatch.setattr(triton_cca, name, lambda *a, _r=real, _n=name, **k: calls.append(_n)
                            or _r(*a, **k))
    rc = load_script("cca_workload").main(["--device", "cpu", "--shape", "1", "16", "24", "2",
                                           "3", "5", "--iters", "2"])
    assert rc == 0 and calls == ["cca_forward", "cca_backward"] * 2
    assert "2 iterations of 4 launches" in capsys.readouterr().out


def test_bench_data_quick_keeps_the_options_given(load_script):
    """--quick sets smaller defaults; it used to override --videos / --frames / --clips
    silently."""
    bench = load_script("bench_data")
    args = bench.parse_args(["--quick", "--videos", "3"])
    assert (args.videos, args.frames, args.clips) == (3, 24, 16)
    args = bench.parse_args([])
    assert (args.videos, args.frames, args.clips) == (2, 60, 40)


def test_bench_segment_warms_up_on_cuda_and_reports_gpu_memory(load_script, tmp_path,
                                                               monkeypatch, capsys):
    """On CUDA the timed segmentation follows an untimed one (Triton compilation and cuDNN's
    search are not the loop's speed), and the peak GPU memory of the timed loop is reported."""
    from vidccnet.predict import VideoSegmenter

    bench = load_script("bench_segment")
    monkeypatch.syspath_prepend(str(Path(bench.__file__).parent))
    import segment_video

    # child() patches the class for its own process: restore it after this test
    monkeypatch.setattr(VideoSegmenter, "stream", VideoSegmenter.stream)

    outs = []

    def fake_main(argv):
        out = Path(argv[argv.index("--out") + 1])
        outs.append(out.name)
        out.mkdir()
        (out / "summary.json").write_text(json.dumps({"frames": 2}))
        return 0

    monkeypatch.setattr(segment_video, "main", fake_main)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**20)
    bench.child(["v.mp4", "--out", str(tmp_path / "seg"), "--device", "cuda"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outs == ["seg_warmup", "seg"]
    assert result["rc"] == 0 and result["gpu_peak_mb"] == 3.0


@pytest.mark.parametrize("option", ["--videos", "--frames", "--clip-len", "--clips", "--gop"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_bench_data_refuses_counts_below_one(load_script, capsys, option, value):
    """--clips -1 printed negative clips/s, --videos 0 failed as 'high <= 0' after the videos
    were written: a usage error naming the option (exit 2) before any work."""
    bench = load_script("bench_data")
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--quick", option, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"{option} must be >= 1" in err, err


@pytest.mark.parametrize("size, needle", [("480", "is not WxH"), ("480x", "is not WxH"),
                                          ("481x360", "must be even")])
def test_bench_segment_refuses_a_malformed_size_before_any_work(load_script, monkeypatch,
                                                                capsys, size, needle):
    """--size 480 (the H W habit of bench_model.py) ended in a ValueError traceback, an odd
    size in PyAV's 'Generic error in an external library' after the first video's encoder
    opened: a usage error (exit 2) naming the expected form."""
    bench = load_script("bench_segment")
    written = []
    monkeypatch.setattr(bench, "write_video", lambda *a, **k: written.append(a))
    monkeypatch.setattr("sys.argv", ["bench_segment.py", "--size", size])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "Traceback" not in err, err
    assert not written


def test_bench_model_refuses_a_negative_thread_count_up_front(load_script, monkeypatch,
                                                               capsys):
    """--threads -1 ended in a RuntimeError traceback from torch.set_num_threads."""
    bench = load_script("bench_model")
    monkeypatch.setattr(bench, "bench_depth", lambda *a: pytest.fail("ran before the check"))
    assert bench.main(TINY_MODEL + ["--threads", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench_model.py: error: --threads must be >= 0"), err


@pytest.mark.parametrize("argv, needle", [
    (["--configs", "nope"], "unknown config 'nope'"),
    (["--depths", "34"], "--depths must be among"),
    (["--frames", "0"], "--frames, --repeats must be >= 1"),
    (["--num-classes", "0"], "--num-classes must be >= 1"),
])
def test_bench_model_mistakes_are_one_line_and_exit_2_from_main(load_script, capsys, argv,
                                                                 needle):
    """main() raised BenchError and only the `if __name__ == "__main__"` block turned it into
    a line and exit 2, so a caller of main() got the exception; bench_data and bench_segment
    return 2 from main()."""
    rc = load_script("bench_model").main(TINY_MODEL + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("bench_model.py: error: "), err
    assert needle in err[0], err


def test_bench_data_prints_ratios_to_pyav_measured_in_the_same_run(load_script, tmp_path,
                                                                   monkeypatch, capsys):
    """The table had no ratio column: each reader's clips/s is now divided by PyAV's on the
    same configuration's mp4 (the first row of each configuration)."""
    bench = load_script("bench_data")
    speed = {("mp4", "av"): 10.0, ("mp4", "decord"): 5.0, ("png", "av"): 20.0,
             ("jpg", "av"): 40.0}
    monkeypatch.setattr(bench, "make_sources", lambda tmp, name, *a: {
        kind: [kind] for kind in ("mp4", "png", "jpg")})

    def fake_bench(paths, backend, *args):
        v = speed[(paths[0], backend)]
        return {"random_wall": v, "random_cpu": v, "seq_wall": 2 * v, "seq_cpu": 2 * v}

    monkeypatch.setattr(bench, "bench", fake_bench)
    monkeypatch.setattr(bench, "machine", lambda: "test machine")
    out = tmp_path / "d.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert "random x PyAV" in table[0] and "sequential x PyAV" in table[0]
    rows = json.loads(out.read_text())["rows"]
    got = {(r["config"], r["source"], r["reader"]): (r["random_vs_av"], r["seq_vs_av"])
           for r in rows}
    assert got[("camvid-like", "mp4", "av")] == (1.0, 1.0)
    assert got[("vspw-like", "jpg", "PIL")] == (4.0, 4.0)
    (png,) = [line for line in table if line.startswith("| camvid-like") and "| png |" in line]
    assert png.count("| 2.00x |") == 2, png


def test_bench_segment_speed_table_has_a_ratio_to_the_per_frame_model(load_script, monkeypatch,
                                                                       capsys):
    """The speed table had no ratio column: frames/s of every model over the first of
    --models, by default the per-frame model ccnet2d_resnet18, measured in the same run."""
    bench = load_script("bench_segment")
    fps = {"ccnet2d_resnet18": 0.4, "ccnet3d_resnet18": 0.1, "ccnet3d_resnet50": 0.05}
    monkeypatch.setattr(bench, "write_video", lambda *a, **k: None)
    monkeypatch.setattr(bench, "write_checkpoint", lambda *a, **k: None)

    def fake_measure(argv):
        name = Path(argv[argv.index("--checkpoint") + 1]).stem
        return {"frames_per_second": fps[name], "max_rss_mb": 100.0, "loop_peak_rss_mb": 90.0,
                "frames": 8, "clip_len": 4, "stride": 2, "inference_size": [360, 480]}

    monkeypatch.setattr(bench, "measure", fake_measure)
    assert bench.main(["--only", "speed"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert "frames/s vs ccnet2d_resnet18" in table[0]
    assert [line.split("|")[6].strip() for line in table[2:]] == ["1.00x", "0.25x", "0.12x"]


def test_bench_segment_writes_its_measurements_as_json(load_script, monkeypatch, tmp_path,
                                                       capsys):
    """bench_segment had no --json (the other benchmarks have one): its rows, the ratio to the
    first model and the machine go into the file; a missing folder is refused before work."""
    bench = load_script("bench_segment")
    monkeypatch.setattr(bench, "write_video", lambda *a, **k: None)
    monkeypatch.setattr(bench, "write_checkpoint", lambda *a, **k: None)
    fps = {"ccnet2d_resnet18": 0.4, "ccnet3d_resnet18": 0.1}
    monkeypatch.setattr(bench, "measure", lambda argv: {
        "frames_per_second": fps[Path(argv[argv.index("--checkpoint") + 1]).stem],
        "max_rss_mb": 100.0, "loop_peak_rss_mb": 90.0, "frames": 8, "clip_len": 4,
        "stride": 2, "inference_size": [360, 480]})
    out = tmp_path / "seg.json"
    models = ["--models", "ccnet2d_resnet18", "ccnet3d_resnet18", "--only", "speed"]
    assert bench.main([*models, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["model"] for r in data["speed"]] == ["ccnet2d_resnet18", "ccnet3d_resnet18"]
    assert [r["vs_first"] for r in data["speed"]] == [1.0, 0.25]
    assert data["memory"] == [] and "CPUs" in data["machine"]
    assert bench.main([*models, "--json", str(tmp_path / "no" / "seg.json")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err


SHARD_PYTHON = r"""#!/usr/bin/env bash
# the CUDA check passes, the machine is a fake GPU; pytest and the JSON writer are the real
# python; the benchmarks fail
case "$1" in
    -c) case "$2" in *get_device_name*) echo '{"gpu": "Fake GPU", "triton": "3"}' ;; esac
        exit 0 ;;
    -m|-) exec "$REAL_PYTHON" "$@" ;;
    *) exit 3 ;;
esac
"""


def test_gpu_check_runs_the_tests_in_parallel_shards(tmp_path):
    """Compiling the GPU tests' kernels took ~1000 s in a row (one core per ptxas), five times
    the step's limit: the tests now run in GPU_CHECK_SHARDS processes, and the JSON sums their
    XML reports. Run here for real on a CPU selection (tests/test_cli.py)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    fake = tmp_path / "python"
    fake.write_text(SHARD_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": str(fake), "REAL_PYTHON": sys.executable,
           "GPU_CHECK_MARKS": "not gpu", "GPU_CHECK_TESTS": "tests/test_cli.py",
           "GPU_CHECK_SHARDS": "3"}
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stderr  # the benchmarks' fake failures
    collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only",
                                "-p", "no:cacheprovider", "tests/test_cli.py"], cwd=repo,
                               capture_output=True, text=True).stdout.count("::")
    data = json.loads(out.read_text())
    assert data["gpu"] == "Fake GPU"  # read before the steps, not by the JSON writer
    step = data["steps"]["pytest"]
    assert step["exit_code"] == 0 and step["shards"] == 3, step
    assert step["tests"] == {"tests": collected, "failures": 0, "errors": 0, "skipped": 0}


@pytest.mark.parametrize("argv, needle", [
    (["--models", "ccnet2d_resnet18", "nope"], "unknown model 'nope'"),
    (["--memory-model", "nope"], "unknown model 'nope'"),
    (["--speed-frames", "0"], "--speed-frames must be >= 1"),
    (["--clip-len", "0"], "--clip-len must be >= 1"),
    (["--stride", "-2"], "--stride must be >= 1"),
    (["--memory-frames", "25", "0"], "--memory-frames must be >= 1"),
    (["--memory-stride", "0"], "--memory-stride must be >= 1"),
    (["--memory-max-size", "0"], "--memory-max-size must be >= 1"),
])
def test_bench_segment_refuses_bad_models_and_counts_before_any_work(load_script, monkeypatch,
                                                                     capsys, argv, needle):
    """An unknown model name ended in create_model's ValueError traceback after the first video
    was written; --speed-frames 0 in 'segment_video.py exited 2: input ... not found', exit 1,
    from the benchmark's own temporary folder: a usage error (exit 2) before any work."""
    bench = load_script("bench_segment")
    written = []
    monkeypatch.setattr(bench, "write_video", lambda *a, **k: written.append(a))
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "Traceback" not in err, err
    assert not written


def test_bench_model_json_names_the_threads_torch_runs_with(load_script, tmp_path,
                                                           monkeypatch):
    """--threads is set on CPU only; on CUDA the JSON still said --threads (1 by default) while
    torch ran with its own number of threads."""
    bench = load_script("bench_model")
    monkeypatch.setattr(bench, "checked_device", lambda args: "cuda")
    monkeypatch.setattr(bench, "bench_depth", lambda *args: [])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "a GPU")
    out = tmp_path / "rows.json"
    assert bench.main(["--depths", "18", "--threads", "3", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["meta"]["threads"] == torch.get_num_threads() != 3
