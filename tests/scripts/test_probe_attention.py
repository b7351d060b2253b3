"""scripts/probe_attention.py: the cue-retrieval tasks, and that only an attention that can reach
the cue learns it."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("probe_attention")


@pytest.mark.parametrize("task", ["time", "volume"])
def test_batches_hold_one_cue_per_line_with_the_label_sign(probe, task: str) -> None:
    B, C, T, H, W = 3, 4, 5, 4, 6
    x, y, cue = probe.make_batch(task, B, C, T, H, W, torch.Generator().manual_seed(0))
    assert x.shape == (B, C, T, H, W) and y.shape == cue.shape == (B, T, H, W)
    if task == "time":  # one cue on each pixel's time line; a label constant along it
        assert (cue.sum(1) == 1).all()
        assert (y == y[:, :1]).all()
    else:  # one cue in each row slab (all frames, all columns); a label constant over it
        assert (cue.sum((1, 3)) == 1).all()
        assert (y == y[:, :1, :, :1]).all()
    assert (x[:, 0][cue] == 3.0).all()
    assert torch.equal(x[:, 1][cue], 3.0 * (2.0 * y[cue].float() - 1.0))


def test_3d_attention_fetches_the_time_cue_and_2d_cannot(probe) -> None:
    size = (4, 8, 4, 4, 4)
    r3 = probe.run("time", "3d_R1_identity", 0, 120, size, 0.1)
    r2 = probe.run("time", "2d_R2_identity", 0, 120, size, 0.1)
    # measured 0.79-0.80 (3D) and 0.48-0.51 (2D) over seeds 0-2
    assert r3["accuracy"] > 0.7, r3
    assert 0.4 < r2["accuracy"] < 0.6, r2
    # uniform weights would put 1 / (T + H + W - 2) = 0.1 on the cue; measured 0.47-0.48
    assert r3["cue_weight"] > 0.3, r3


def test_bad_arguments_exit_2_with_one_line(probe, capsys: pytest.CaptureFixture) -> None:
    assert probe.main(["--steps", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--steps" in err
    assert probe.main(["--size", "2", "3", "2", "2", "2"]) == 2
    assert "even C" in capsys.readouterr().err
    assert probe.main(["--threads", "0"]) == 2  # was a RuntimeError traceback after parsing
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--threads must be >= 1" in err, err


def test_json_into_a_missing_folder_is_refused_before_training(
    probe, tmp_path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "run", lambda *a, **k: pytest.fail("trained before the check"))
    assert probe.main(["--json", str(tmp_path / "missing" / "probe.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--json" in err and "missing" in err


def test_json_written_whole(probe, tmp_path) -> None:
    out = tmp_path / "probe.json"
    argv = ["--task", "time", "--variants", "2d_R2_identity", "--seeds", "0", "--steps", "1",
            "--size", "2", "4", "2", "2", "2", "--json", str(out)]
    assert probe.main(argv) == 0
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 1 and "time/2d_R2_identity" in data["summary"]
    assert [p.name for p in tmp_path.iterdir()] == ["probe.json"]  # no temporary file left


def test_cue_weight_averages_over_every_position_without_the_cue(probe) -> None:
    """cue_weight averaged over the first 64 positions without the cue only (all in the first
    clip's first frames), not over the test batch: the whole batch's mean must be the mean of
    its clips' (each clip has as many positions without the cue)."""
    B, C, T, H, W = 3, 4, 4, 5, 5
    torch.manual_seed(0)
    model = probe.Probe(C, temporal=True, recurrence=1, init="identity")
    x, _, cue = probe.make_batch("time", B, C, T, H, W, torch.Generator().manual_seed(0))
    whole = probe.cue_weight(model, x, cue)
    per_clip = [probe.cue_weight(model, x[b:b + 1], cue[b:b + 1]) for b in range(B)]
    assert whole == pytest.approx(sum(per_clip) / B, rel=1e-9)
