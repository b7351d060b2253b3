"""scripts/study_temporal.py end to end on a tiny budget: a run trains through the real trainer
in a subprocess, is evaluated with and without its attention, and the report is written."""

from __future__ import annotations

import json

import pytest

TINY = [
    "data.kwargs={num_videos: 2, num_frames: 12, height: 32, width: 48, seed: 0, "
    "blink_period: 12}",
    "data.crop_size=[32, 48]",
    "eval.kwargs={num_videos: 1}",
    "eval.interval=1",
]


def test_one_run_and_the_report(load_script, tmp_path, capsys):
    study = load_script("study_temporal")
    rc = study.main(["--variants", "cca3d", "--seeds", "0", "--iterations", "2", "--no-cost",
                     "--threads", "1", "--eval-videos", "1", "--runs-dir", str(tmp_path / "runs"),
                     "--results", str(tmp_path / "res"), "--override", *TINY])
    assert rc == 0
    run = json.loads((tmp_path / "runs" / "small" / "cca3d_s0" / "study_result.json").read_text())
    assert run["variant"] == "cca3d" and run["iterations"] == 2 and run["val_videos"] == 1
    assert [c["iteration"] for c in run["curve"]] == [1, 2]  # the learning curve
    assert abs(run["gamma"] - 1.0) < 0.1  # identity init, after 2 steps
    for m in study.METRICS:
        assert m in run and m in run["ablated"]
    doc = json.loads((tmp_path / "res" / "synthetic_study.json").read_text())
    assert doc["summary"]["cca3d"]["mIoU"]["min"] == run["mIoU"]
    assert doc["comparisons"] == []  # one run: nothing to compare
    for name in ("synthetic_study.png", "synthetic_study_curves.png", "synthetic_study.md"):
        assert (tmp_path / "res" / name).is_file()
    assert "3D CCA (no shift)" in capsys.readouterr().out


def test_bad_variant_is_one_line_and_exit_2(load_script, capsys):
    assert load_script("study_temporal").main(["--variants", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown variant" in err[0]


@pytest.mark.parametrize("argv", [["--variants", "cca2d", "cca3d", "cca3d"],
                                  ["--seeds", "0", "0", "1"]])
def test_a_variant_or_seed_given_twice_is_refused(load_script, capsys, argv):
    """A repeated seed or variant was counted twice: 'seeds 8' from 4 runs, a Welch interval
    a quarter as wide, and the same run trained twice (with --jobs 2, at once in one folder)."""
    assert load_script("study_temporal").main(argv + ["--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "twice" in err[0], err


def test_every_variant_builds_with_the_same_parameters(load_script):
    from vidccnet.engine.config import load_config
    from vidccnet.engine.train import build_model

    study = load_script("study_temporal")
    args = study.parse_args([])
    counts = {}
    for variant in study.VARIANTS:
        cfg = load_config(args.config, study.BUDGETS["small"][0] + study.VARIANTS[variant][1])
        model = build_model(cfg, 7, pretrained=False)
        counts[variant] = sum(p.numel() for p in model.parameters())
        stages = model.backbone.shift_stages if cfg.model.temporal_shift is not False else ()
        if variant.startswith("shift34"):
            assert tuple(stages) == (3, 4)
    assert len(set(counts.values())) == 1, counts


def test_a_damaged_run_result_is_named_in_one_line(load_script, tmp_path, capsys):
    bad = tmp_path / "small" / "cca3d_s0" / "study_result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("")
    rc = load_script("study_temporal").main(
        ["--report-only", "--no-cost", "--variants", "cca3d", "--seeds", "0",
         "--runs-dir", str(tmp_path), "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(bad) in err[0] and "--force" in err[0]


def test_a_finished_run_of_other_settings_is_not_reused(load_script, tmp_path, capsys):
    """A run finished with other settings (another --iterations, --override or --eval-videos)
    is refused in one line, before anything trains, instead of being counted as this study's
    (a 2-step smoke run was reported as a 1600-step result)."""
    study = load_script("study_temporal")
    base = ["--variants", "cca3d", "--seeds", "0", "--no-cost", "--runs-dir", str(tmp_path),
            "--results", str(tmp_path / "res")]
    args = study.parse_args(base + ["--iterations", "2"])
    done = tmp_path / "small" / "cca3d_s0" / "study_result.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"variant": "cca3d", "seed": 0, "val_videos": 16,
                                "overrides": study.run_overrides(args, "cca3d", 0)}))
    for extra in ([], ["--report-only"], ["--iterations", "2", "--eval-videos", "4"]):
        assert study.main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(done.parent) in err[0] and "--force" in err[0], err
    assert not (tmp_path / "res").exists()


def test_a_partial_study_needs_its_own_results_folder(load_script, capsys):
    """A smoke run (2 iterations) without --results would have replaced the repository's
    results/synthetic_study.* with its figures: refused in one line, before any training.
    (Subsets of variants and seeds are how the study is built up, and stay allowed.)"""
    rc = load_script("study_temporal").main(["--variants", "cca3d", "--iterations", "2",
                                             "--no-cost"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--results DIR" in err[0], err


def test_sigterm_stops_the_training_runs_it_started(load_script, tmp_path, monkeypatch, capsys,
                                                    main_under_sigterm):
    """SIGTERM (`timeout`, `docker stop`) killed the study and left its training subprocesses
    running on their own; now they are stopped too, and the study says so in one line (143)."""
    import os
    import signal
    import subprocess
    import sys

    study = load_script("study_temporal")
    started = []

    def launch(args, variant, seed, threads):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        started.append(proc)
        return proc

    monkeypatch.setattr(study, "_launch", launch)
    monkeypatch.setattr(study.time, "sleep", lambda s: os.kill(os.getpid(), signal.SIGTERM))
    try:
        rc = main_under_sigterm(study.main, [
            "--variants", "cca3d", "cca2d", "--seeds", "0", "--jobs", "2", "--no-cost",
            "--runs-dir", str(tmp_path / "runs"), "--results", str(tmp_path / "res")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 143 and len(started) == 2
        assert err[-1].startswith("study_temporal.py: terminated (SIGTERM)"), err
        assert all(p.poll() is not None for p in started)  # stopped, not orphaned
    finally:
        for p in started:
            p.kill()
            p.wait()


def test_an_interrupted_report_leaves_no_truncated_plot(load_script, tmp_path, monkeypatch,
                                                        capsys):
    """The plots were saved straight to their names: Ctrl-C in savefig left a truncated PNG in
    place of the earlier one. Now they are written to a temporary file and renamed."""
    from matplotlib.figure import Figure

    study = load_script("study_temporal")
    argv = ["--variants", "cca3d", "--seeds", "0", "--report-only", "--no-cost",
            "--runs-dir", str(tmp_path / "runs"), "--results", str(tmp_path / "res")]
    args = study.parse_args(argv)
    run = {"variant": "cca3d", "label": study.VARIANTS["cca3d"][0], "seed": 0,
           "overrides": study.run_overrides(args, "cca3d", 0), "val_videos": 16,
           "gamma": 0.5, "train_seconds": 1.0, "ablated": None,
           "curve": [{"iteration": 1, "mIoU": 0.5, "mVC_8": 0.9}],
           **{m: 0.5 for m in study.METRICS}}
    folder = study.run_dir(args, "cca3d", 0)
    folder.mkdir(parents=True)
    (folder / "study_result.json").write_text(json.dumps(run))
    res = tmp_path / "res"
    res.mkdir()
    for name in ("synthetic_study.png", "synthetic_study_curves.png", "synthetic_study.md"):
        (res / name).write_bytes(b"earlier")

    def interrupted_savefig(self, target, *args, **kwargs):
        if hasattr(target, "write"):
            target.write(b"\x89PNG partial")
        else:
            with open(target, "wb") as f:
                f.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted_savefig)
    assert study.main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "study_temporal.py: interrupted;")
    assert sorted(p.name for p in res.iterdir()) == [
        "synthetic_study.json", "synthetic_study.md", "synthetic_study.png",
        "synthetic_study_curves.png"]
    for name in ("synthetic_study.png", "synthetic_study_curves.png"):
        assert (res / name).read_bytes() == b"earlier", name


@pytest.mark.parametrize("extra, needle", [
    (["--threads", "-1"], "--threads must be >= 1"),
    (["--iterations", "0"], "--iterations must be >= 1"),
    (["--results", "{tmp}/file/res"], "is a file, not a folder"),
    (["--results", "{tmp}/file"], "is a file, not a folder"),
])
def test_a_study_that_cannot_finish_is_refused_before_it_trains(load_script, tmp_path,
                                                                monkeypatch, capsys, extra,
                                                                needle):
    """--threads -1 or --iterations 0 started every run, each failing in its subprocess;
    a --results below a file failed after the last run, in a NotADirectoryError traceback."""
    (tmp_path / "file").write_text("")
    study = load_script("study_temporal")
    monkeypatch.setattr(study, "_launch", lambda *a: pytest.fail("a run was started"))
    argv = ["--variants", "cca3d", "--seeds", "0", "--no-cost", "--runs-dir",
            str(tmp_path / "runs"), "--results", str(tmp_path / "res")]
    rc = study.main(argv + [a.format(tmp=tmp_path) for a in extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err


def _run(variant: str, seed: int, amb: float, miou: float) -> dict:
    return {"variant": variant, "seed": seed, "mIoU": miou, "mIoU_ambiguous": amb,
            "mIoU_corrupted": miou - 0.05, "mVC_8": 0.8 + amb / 10, "flicker": 0.07 - amb / 100}


def test_the_3d_minus_2d_comparison_has_welch_intervals_and_the_learners(load_script):
    from scipy import stats

    study = load_script("study_temporal")
    a = [0.72, 0.30, 0.70, 0.64]  # 3D: three runs learned the cue (> 0.5), one did not
    b = [0.25, 0.28, 0.20]
    runs = [_run("cca3d", s, v, 0.6 + v / 10) for s, v in enumerate(a)]
    runs += [_run("cca2d", s, v, 0.55 + s / 100) for s, v in enumerate(b)]
    runs += [_run("ccnet3d", 0, 0.7, 0.6)]  # one run only: no comparison for its pair
    rows = study.compare(runs)
    assert [(r["variant"], r["baseline"]) for r in rows] == [("cca3d", "cca2d")]
    row = rows[0]
    assert row["learned"] == [3, 4] and row["baseline_learned"] == [0, 3]
    assert row["ranges_overlap"] is False  # 0.30 > 0.28
    amb = row["mIoU_ambiguous"]
    t = stats.ttest_ind(a, b, equal_var=False)
    ci = t.confidence_interval(0.95)
    assert amb["diff"] == pytest.approx(sum(a) / 4 - sum(b) / 3)
    assert (amb["low"], amb["high"]) == pytest.approx((ci.low, ci.high))
    assert row["mannwhitney_p"] == pytest.approx(
        stats.mannwhitneyu(a, b, alternative="greater").pvalue)
    table = study.markdown_comparison(rows)
    assert "3D CCA (no shift) minus 2D CCA (no shift)" in table and "3 of 4" in table


def test_seed_ranges_apart_do_not_overlap_whichever_side_is_higher(load_script):
    """The overlap was min(3D) <= max(2D): a 3D variant entirely below its 2D twin was said to
    overlap it."""
    study = load_script("study_temporal")
    runs = [_run("cca3d", s, v, 0.6 + s / 100) for s, v in enumerate([0.20, 0.22])]
    runs += [_run("cca2d", s, v, 0.5 + s / 100) for s, v in enumerate([0.30, 0.33])]
    assert study.compare(runs)[0]["ranges_overlap"] is False
    runs += [_run("cca2d", 2, 0.21, 0.53)]
    assert study.compare(runs)[0]["ranges_overlap"] is True
