"""Trainer end to end on the tiny synthetic world: outputs, exact resume, non-finite loss, DDP,
and the scripts' one-line errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vidccnet.data as vdata
from vidccnet.engine.checkpoint import CheckpointError, load_checkpoint, remove_killed_saves
from vidccnet.engine.config import ConfigError, apply_overrides, load_config
from vidccnet.engine.train import (
    EARLIER_LOGS,
    PolyWarmup,
    TrainingError,
    _attention_gammas,
    train,
)

REPO = Path(__file__).resolve().parents[2]


def _install_data_standins() -> None:
    """Smallest stand-ins for the data factory functions if vidccnet.data lacks them."""
    if hasattr(vdata, "build_dataset") and hasattr(vdata, "dataset_info"):
        return
    from vidccnet.data import synthetic as syn

    def dataset_info(name: str) -> dict:
        assert name == "synthetic"
        return {"class_names": list(syn.CLASS_NAMES), "palette": list(syn.PALETTE),
                "num_classes": syn.NUM_CLASSES}

    def build_dataset(name: str, split: str, root=None, **kw):
        assert name == "synthetic"
        return syn.SyntheticVideoDataset(split=split, **kw)

    def build_eval_videos(name: str, split: str, root=None, **kw):
        keep = {"num_videos", "num_frames", "height", "width", "seed"}
        return syn.SyntheticVideoDataset(split=split, **{k: v for k, v in kw.items()
                                                         if k in keep}).eval_videos()

    vdata.dataset_info = dataset_info
    vdata.build_dataset = build_dataset
    vdata.build_eval_videos = build_eval_videos


_install_data_standins()

# A deliberately tiny run: ResNet-18 CCNet with 16 head channels on 32x32 clips of 2 frames.
TINY = [
    "model.name=ccnet3d_resnet18",
    "model.kwargs.head_channels=16",
    "model.attention_backend=reference",
    "data.name=synthetic",
    "data.clip_len=2",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.crop_size=[32, 32]",
    "data.scale_range=[0.8, 1.2]",
    "data.kwargs={num_videos: 2, num_frames: 3, height: 32, width: 32, seed: 0}",
    "eval.kwargs={num_videos: 1}",
    "eval.vc_windows=[2]",
    "loss.ohem=true",
    "loss.ohem_min_kept=100",
    "optim.lr=0.01",
    "schedule.warmup_iters=2",
    "runtime.seed=3",
    "runtime.device=cpu",
    "runtime.tensorboard=false",
    "runtime.progress=false",
]


def tiny_cfg(out: Path, *extra: str):
    return load_config(None, TINY + [f"runtime.output_dir={out}", *extra])


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gamma_lr_mult_gives_the_attention_gamma_its_own_group() -> None:

    from vidccnet.engine.train import build_optimizer
    from vidccnet.models import create_model

    model = create_model("ccnet3d_resnet18", 3, head_channels=16)
    gamma = model.head.cca.cca.gamma
    cfg = load_config(REPO / "configs/synthetic_tiny.yaml", ["optim.attention_lr_mult=1"])
    opt = build_optimizer(cfg, model)  # CCNet: one group, one learning rate
    assert len(opt.param_groups) == 1 and any(p is gamma for p in opt.param_groups[0]["params"])
    cfg = apply_overrides(cfg, ["optim.gamma_lr_mult=50"])
    opt = build_optimizer(cfg, model)
    rest, gam = opt.param_groups
    assert [p for p in gam["params"]] == [gamma] and all(p is not gamma for p in rest["params"])
    assert gam["lr"] == pytest.approx(50 * rest["lr"]) and rest["lr"] == cfg.optim.lr
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == n


def test_attention_lr_mult_gives_query_key_value_their_own_group() -> None:

    from vidccnet.engine.train import build_optimizer
    from vidccnet.models import create_model

    model = create_model("ccnet3d_resnet18", 3, head_channels=16)
    cca = model.head.cca.cca
    qkv = [cca.query.weight, cca.query.bias, cca.key.weight, cca.key.bias, cca.value.weight,
           cca.value.bias]
    cfg = load_config(REPO / "configs/synthetic_tiny.yaml", [])
    cfg = apply_overrides(cfg, ["optim.attention_lr_mult=5", "optim.gamma_lr_mult=2"])
    groups = build_optimizer(cfg, model).param_groups
    rest, gam, att = sorted(groups, key=lambda g: g["lr"])
    assert [id(p) for p in att["params"]] == [id(p) for p in qkv]
    assert len(gam["params"]) == 1 and gam["params"][0] is cca.gamma
    assert att["lr"] == pytest.approx(5 * cfg.optim.lr) and gam["lr"] == pytest.approx(
        2 * cfg.optim.lr) and rest["lr"] == cfg.optim.lr
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (rest, att, gam) for p in g["params"]) == n
    with pytest.raises(ValueError, match="attention_lr_mult"):
        apply_overrides(cfg, ["optim.attention_lr_mult=0"])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_norm_bias_decay_false_exempts_norms_biases_and_gamma(name: str) -> None:
    """The default decays every parameter (the official CCNet's SGD); optim.norm_bias_decay
    false leaves the parameters of fewer than 2 dimensions (norm weights and biases, conv
    biases, the attention's gamma) undecayed, as timm and mmseg's norm_decay_mult=0 do."""
    from vidccnet.engine.train import build_optimizer
    from vidccnet.models import create_model

    model = create_model("ccnet3d_resnet18", 3, head_channels=16)
    cfg = load_config(REPO / "configs/synthetic_tiny.yaml", [f"optim.name={name}"])
    decay = {id(p): g["weight_decay"] for g in build_optimizer(cfg, model).param_groups
             for p in g["params"]}
    assert set(decay.values()) == {cfg.optim.weight_decay}
    cfg = apply_overrides(cfg, ["optim.norm_bias_decay=false", "optim.gamma_lr_mult=3"])
    groups = build_optimizer(cfg, model).param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    for n, p in model.named_parameters():
        assert decay[id(p)] == (cfg.optim.weight_decay if p.ndim > 1 else 0.0), n
    gamma = model.head.cca.cca.gamma
    assert decay[id(gamma)] == 0.0 and lr[id(gamma)] == pytest.approx(3 * cfg.optim.lr)
    assert len(decay) == len(list(model.parameters()))


@pytest.mark.parametrize("before, after", [(1e-4, 0.0), (0.0, 1e-4)])
def test_resume_with_weight_decay_to_or_from_zero(before: float, after: float) -> None:
    """Weight decay follows the resumed-with config (docs/training.md); with
    optim.norm_bias_decay false a decay of 0 merged the decayed and undecayed groups, and the
    optimizer state no longer fit ('a different number of parameter groups')."""
    from vidccnet.engine.train import build_optimizer, configure_resumed_optimizer
    from vidccnet.models import create_model

    model = create_model("ccnet3d_resnet18", 3, head_channels=16)
    cfg = load_config(REPO / "configs/synthetic_tiny.yaml", ["optim.norm_bias_decay=false"])
    old = build_optimizer(apply_overrides(cfg, [f"optim.weight_decay={before}"]), model)
    new = build_optimizer(apply_overrides(cfg, [f"optim.weight_decay={after}"]), model)
    configure_resumed_optimizer(new, old.state_dict())
    decay = {id(p): g["weight_decay"] for g in new.param_groups for p in g["params"]}
    for n, p in model.named_parameters():
        assert decay[id(p)] == (after if p.ndim > 1 else 0.0), n


def test_resume_of_a_run_saved_with_merged_groups_at_weight_decay_zero() -> None:
    """Before the groups were keyed on decayed-or-not, a run with optim.norm_bias_decay false
    and weight_decay 0 saved one group per learning-rate multiplier; its resume failed ('a
    different number of parameter groups'). Each parameter gets its own momentum back."""
    from vidccnet.engine.train import build_optimizer, configure_resumed_optimizer
    from vidccnet.models import create_model

    torch.manual_seed(0)
    model = create_model("ccnet3d_resnet18", 3, head_channels=16)
    cfg = load_config(REPO / "configs/synthetic_tiny.yaml", [
        "optim.norm_bias_decay=false", "optim.weight_decay=0", "optim.gamma_lr_mult=10"])
    from vidccnet.engine.optim import _lr_mult

    named = list(model.named_parameters())
    merged: dict[float, list] = {}  # the groups saved then: (lr mult, decay 0.0) -> parameters
    for n, p in named:
        merged.setdefault(_lr_mult(n, cfg.optim), []).append(p)
    old = torch.optim.SGD([{"params": ps, "lr": cfg.optim.lr * m} for m, ps in merged.items()],
                          lr=cfg.optim.lr, momentum=0.9, weight_decay=0.0)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    old.step()
    saved = {id(p): old.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    new = build_optimizer(cfg, model)
    assert len(new.param_groups) > len(old.param_groups) == 3  # q/k/v and gamma have a mult
    lrs = [g["lr"] for g in new.param_groups]
    configure_resumed_optimizer(new, old.state_dict(), list(model.parameters()))
    for n, p in named:
        assert torch.equal(new.state[p]["momentum_buffer"], saved[id(p)]), n
    assert [g["lr"] for g in new.param_groups] == lrs


def test_poly_warmup_schedule() -> None:
    f = PolyWarmup(total=100, power=0.9, warmup_iters=10, warmup_ratio=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx((1 - 0.05) ** 0.9 * (0.1 + 0.9 * 0.5))
    assert f(50) == pytest.approx(0.5**0.9)
    assert f(100) == 0.0


def test_min_lr_ratio_floors_the_poly_decay() -> None:
    """schedule.min_lr_ratio: the decay stops at that share of the learning rate (it decayed
    to 0 regardless, unnoticed: only the setting's range was tested)."""
    from vidccnet.engine.train import build_scheduler

    f = PolyWarmup(total=100, power=0.9, min_ratio=0.2)
    assert f(50) == pytest.approx(0.5**0.9)  # above the floor: the poly factor
    assert f(90) == f(100) == f(150) == pytest.approx(0.2)
    w = PolyWarmup(total=100, power=0.9, warmup_iters=10, warmup_ratio=0.1, min_ratio=0.2)
    assert w(0) == pytest.approx(0.1)  # warm-up still scales the floored factor
    cfg = load_config(REPO / "configs/synthetic_tiny.yaml",
                      ["schedule.iterations=10", "schedule.warmup_iters=0",
                       "schedule.poly_power=0.9", "schedule.min_lr_ratio=0.3"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    opt.param_groups[0]["initial_lr"] = 0.5  # as configure_resumed_optimizer sets it
    build_scheduler(cfg, opt, start=9)  # (1 - 9/10) ** 0.9 = 0.126 < 0.3
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.3)


def test_gamma_is_logged_only_for_an_attention_that_runs() -> None:
    """A model built with recurrence 0 still holds the attention's parameters (checkpoints
    stay interchangeable), but its gamma means nothing: it is not logged (it read 1.0, as if
    the attention were in use)."""
    from vidccnet.models import create_model

    on = create_model("ccnet3d_resnet18", num_classes=3, head_channels=16, recurrence=2)
    off = create_model("ccnet3d_resnet18", num_classes=3, head_channels=16, recurrence=0)
    assert list(_attention_gammas(on)) == ["head.cca.cca.gamma"]
    assert _attention_gammas(off) == {}


def test_train_writes_outputs_and_refuses_to_clobber(load_script, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_cfg(out, "schedule.iterations=2", "runtime.log_interval=1",
                   "runtime.ckpt_interval=1", "eval.interval=1", "runtime.tensorboard=true")
    result = train(cfg)
    assert result["iteration"] == 2
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    assert (out / "tb").is_dir()
    lines = _read_jsonl(out / "metrics.jsonl")
    train_lines = [r for r in lines if r["type"] == "train"]
    val_lines = [r for r in lines if r["type"] == "val"]
    assert [r["iteration"] for r in train_lines] == [1, 2]
    assert [r["iteration"] for r in val_lines] == [1, 2]
    for r in train_lines:
        assert r["loss"] > 0 and r["lr"] > 0 and r["clips_per_s"] > 0
    assert 0.0 <= val_lines[-1]["mIoU"] <= 1.0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["iteration"] == 2
    # the attention's residual weight is logged: whether the attention is used shows in the log
    gammas = {k: float(v) for k, v in ckpt["model"].items() if k.endswith("cca.gamma")}
    assert gammas and train_lines[-1]["gamma"] == pytest.approx(gammas)
    assert ckpt["config"]["data"]["class_names"] == list(vdata.dataset_info("synthetic")[
        "class_names"])
    best = load_checkpoint(out / "best.pt")
    assert best["metrics"]["mIoU"] == pytest.approx(result["best_mIoU"])
    # the saved config.yaml reproduces the run's config
    again = load_config(out / "config.yaml")
    assert again.model == cfg.model and again.optim == cfg.optim
    # a fresh run into the same folder is refused; nothing is touched
    before = (out / "last.pt").read_bytes()
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg)
    assert (out / "last.pt").read_bytes() == before

    # scripts/evaluate.py on the best checkpoint (in-process): eval.json next to it
    script = load_script("evaluate.py")
    assert script.main(["--checkpoint", str(out / "best.pt"), "--no-plots"]) == 0
    report = json.loads((out / "eval_val" / "eval.json").read_text())
    assert report["metrics"]["mIoU"] == pytest.approx(best["metrics"]["mIoU"], abs=1e-6)


def test_a_resume_runs_the_validation_its_checkpoint_was_saved_before(tmp_path: Path) -> None:
    """last.pt is saved just before a validation on the same step; a run stopped during that
    validation resumes with it (its val line and best.pt were missing), and the run ends as
    an uninterrupted one does."""
    common = ("schedule.iterations=4", "eval.interval=2", "runtime.log_interval=1",
              "data.kwargs.num_frames=2")
    train(tiny_cfg(tmp_path / "a", *common, "runtime.ckpt_interval=2"))
    part = tiny_cfg(tmp_path / "b", *common)
    _train_until(part, 2)  # stops at the first last.pt of step 2: before its validation
    assert not (tmp_path / "b" / "best.pt").exists()
    train(part, resume=True)
    vals = {k: [(r["iteration"], r["mIoU"]) for r in _read_jsonl(tmp_path / k / "metrics.jsonl")
                if r["type"] == "val"] for k in "ab"}
    assert vals["a"] == vals["b"] and [i for i, _ in vals["a"]] == [2, 4], vals
    a, b = (load_checkpoint(tmp_path / k / "last.pt") for k in "ab")
    assert all(torch.equal(a["model"][n], b["model"][n]) for n in a["model"])
    assert load_checkpoint(tmp_path / "b" / "best.pt")["iteration"] in (2, 4)


def test_an_unlabelled_split_names_the_likely_cause() -> None:
    """VSPW's test masks are withheld by design: no 'check its label files' there."""
    from types import SimpleNamespace

    from vidccnet.engine.train import check_labelled

    videos = [SimpleNamespace(labelled=[])]
    with pytest.raises(TrainingError, match="withholds") as err:
        check_labelled(videos, "test", "vspw")
    assert "label files" not in str(err.value)
    for split, dataset in (("val", "vspw"), ("test", "folders")):
        with pytest.raises(TrainingError, match="check its label files"):
            check_labelled(videos, split, dataset)


def test_a_run_that_never_trained_a_step_does_not_block_its_rerun(tmp_path: Path) -> None:
    """A run that fails at its first step (a label outside the classes, out of memory) or is
    stopped before it has left config.yaml and an empty metrics.jsonl: the same command, fixed,
    was refused ('already holds config.yaml'), as train.py's Ctrl-C line says it is not.
    Logs of trained steps still block it."""
    from vidccnet.engine.config import config_to_yaml

    out = tmp_path / "run"
    out.mkdir()
    cfg = tiny_cfg(out, "schedule.iterations=1", "eval.interval=0", "eval.at_end=false")
    (out / "config.yaml").write_text(config_to_yaml(cfg))  # what the failed run wrote
    (out / "metrics.jsonl").write_text("")
    assert train(cfg)["iteration"] == 1
    (out / "last.pt").unlink()  # the logs of a trained step, no checkpoint
    with pytest.raises(TrainingError, match="already holds"):
        train(cfg)


def test_a_resume_removes_the_temporary_file_of_a_killed_save(tmp_path: Path) -> None:
    """A save killed by SIGKILL or a power cut leaves its hidden temporary file (a whole
    checkpoint's size) beside last.pt, where nothing removed it."""
    out = tmp_path / "run"
    cfg = tiny_cfg(out, "schedule.iterations=1", "eval.interval=0", "eval.at_end=false")
    train(cfg)
    stale = [out / ".last.pt.k1ll3d.tmp", out / ".best.pt.x.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = out / ".notes.tmp"
    keep.write_text("not ours")
    train(apply_overrides(cfg, ["schedule.iterations=2"]), resume=True)
    assert not any(p.exists() for p in stale)
    assert keep.exists()


def test_a_failing_validation_loses_no_training(tmp_path: Path, monkeypatch) -> None:
    """Validation reads files training never touched (a bad val mask): when it fails at a
    checkpoint step, last.pt of that step is already written (the run lost it before, and
    again on every resume), and a resume has nothing left to train."""
    import vidccnet.engine.evaluate as ev

    def broken(self, model, videos):
        raise ValueError("video 'v': a bad mask")

    cfg = tiny_cfg(tmp_path / "run", "schedule.iterations=2", "runtime.ckpt_interval=100",
                   "eval.interval=0")
    monkeypatch.setattr(ev.Evaluator, "run", broken)
    with pytest.raises(ValueError, match="bad mask"):
        train(cfg)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["iteration"] == 2 and not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("log_interval", [1, 2])
def test_exact_resume_is_bit_identical(tmp_path: Path, log_interval: int) -> None:
    """Weights, optimizer state and the logged losses; with a log interval the checkpoint
    does not fall on, the resumed run's first line still averages every step since the last
    line (it averaged only the steps after the resume)."""
    common = (f"runtime.log_interval={log_interval}", "eval.interval=0", "eval.at_end=false",
              "runtime.ckpt_interval=100")
    # 4 clips, batch 2: 2 batches an epoch, so the 3 iterations cross an epoch boundary and the
    # interruption after iteration 1 falls mid-epoch (with augmentation, dropout and OHEM on)
    common += ("data.kwargs.num_frames=2", "schedule.iterations=3")
    train(tiny_cfg(tmp_path / "a", *common))
    part = tiny_cfg(tmp_path / "b", *common)
    _train_until(part, 1)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == 1
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:  # logged after the checkpoint
        f.write(json.dumps({"type": "train", "iteration": 2, "loss": -1.0}) + "\n")
    train(part, resume=True)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["iteration"] == b["iteration"] == 3
    assert a["train_state"]["epoch"] == 1
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    la = [r["loss"] for r in _read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    lb = [r["loss"] for r in _read_jsonl(tmp_path / "b" / "metrics.jsonl")]
    assert la == lb


def test_resume_with_a_longer_schedule_follows_the_new_config(tmp_path: Path,
                                                               monkeypatch) -> None:
    """20 iterations, then --resume with schedule.iterations=24 and another optim.lr: steps
    21-24 run at the learning rate a fresh 24-iteration schedule at the new lr gives there
    (the restored scheduler used to keep its 20-step horizon: lr 0)."""
    common = ("runtime.log_interval=1", "eval.interval=0", "eval.at_end=false",
              "runtime.ckpt_interval=100", "data.kwargs.num_frames=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=20"))
    train(tiny_cfg(out, *common, "schedule.iterations=24", "optim.lr=0.02"), resume=True)
    lrs = {r["iteration"]: r["lr"] for r in _read_jsonl(out / "metrics.jsonl")}
    assert sorted(lrs) == list(range(1, 25))
    fresh = PolyWarmup(total=24, power=0.9, warmup_iters=2, warmup_ratio=0.1)
    for step in range(21, 25):  # step k uses factor(k - 1)
        assert lrs[step] > 0
        assert lrs[step] == pytest.approx(0.02 * fresh(step - 1), rel=1e-12, abs=0), step
    assert load_checkpoint(out / "last.pt")["iteration"] == 24
    # a schedule shorter than the checkpoint, or another optimizer, is refused in one line
    with pytest.raises(TrainingError, match="schedule.iterations=10.*iteration 24"):
        train(tiny_cfg(out, *common, "schedule.iterations=10"), resume=True)
    with pytest.raises(CheckpointError, match="optim.name"):
        train(tiny_cfg(out, *common, "schedule.iterations=30", "optim.name=adamw"), resume=True)
    # so is another learning-rate multiplier: the optimizer state is per parameter group,
    # and the groups are the multipliers (it failed later, in PyTorch's words)
    for change in ("optim.gamma_lr_mult=10", "optim.attention_lr_mult=5",
                   "optim.norm_bias_decay=false"):
        with pytest.raises(CheckpointError, match=change.split("=")[0]):
            train(tiny_cfg(out, *common, "schedule.iterations=30", change), resume=True)
    assert load_checkpoint(out / "last.pt")["iteration"] == 24
    # ... before the dataset is read again (a full scan on VSPW)
    import vidccnet.engine.train as train_mod

    def unread(cfg):
        raise AssertionError("the dataset was built before the resume was checked")

    monkeypatch.setattr(train_mod, "build_train_dataset", unread)
    with pytest.raises(TrainingError, match="schedule.iterations=10"):
        train(tiny_cfg(out, *common, "schedule.iterations=10"), resume=True)
    with pytest.raises(CheckpointError, match="optim.gamma_lr_mult"):
        train(tiny_cfg(out, *common, "schedule.iterations=30", "optim.gamma_lr_mult=10"),
              resume=True)


def test_resume_with_nothing_to_train_keeps_the_runs_config(tmp_path: Path, caplog) -> None:
    """config.yaml says what trained the weights: a resume that trains nothing (already at
    schedule.iterations) does not replace it with its own overrides. It says so in one line
    (it logged 'resumed', 'nothing to train', then the 'start:' line of a run, and that the
    changed settings "apply")."""
    common = ("eval.interval=0", "eval.at_end=false", "data.kwargs.num_frames=2",
              "schedule.iterations=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common))
    before = (out / "config.yaml").read_text()
    with caplog.at_level("INFO", logger="vidccnet.engine.train"):
        train(tiny_cfg(out, *common, "optim.lr=0.5"), resume=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "vidccnet.engine.train"]
    assert lines == [f"nothing to train: {out / 'last.pt'} is already at iteration 2, "
                     "schedule.iterations=2; raise schedule.iterations to train longer"], lines
    assert (out / "config.yaml").read_text() == before
    assert load_checkpoint(out / "last.pt")["iteration"] == 2


def test_a_resume_that_fails_before_its_first_checkpoint_keeps_the_runs_config(
        tmp_path: Path) -> None:
    """config.yaml was rewritten as soon as a resume started: a resume that then failed (a
    non-finite loss at lr 1e30) left a config.yaml of the failed settings next to the kept
    last.pt, and the documented recovery, --config RUN/config.yaml --resume, failed again.
    The resume writes it with its first checkpoint, as an overwrite run does."""
    common = ("eval.interval=0", "eval.at_end=false", "data.kwargs.num_frames=2",
              "runtime.ckpt_interval=100")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=2"))
    before = (out / "config.yaml").read_text()
    with pytest.raises(TrainingError, match="non-finite"):
        train(tiny_cfg(out, *common, "schedule.iterations=4", "optim.lr=1e30"), resume=True)
    assert (out / "config.yaml").read_text() == before
    assert load_checkpoint(out / "last.pt")["iteration"] == 2
    train(tiny_cfg(out, *common, "schedule.iterations=3"), resume=True)
    assert "iterations: 3" in (out / "config.yaml").read_text()
    assert load_checkpoint(out / "last.pt")["iteration"] == 3


def test_a_failed_start_leaves_the_earlier_run_as_it_was(tmp_path: Path) -> None:
    """A resume or an overwrite with a config that cannot train (class weights for another
    class count) fails before it writes: the earlier run's config.yaml, metrics and
    checkpoints are as they were."""
    from vidccnet.engine.config import ConfigError

    common = ("runtime.log_interval=1", "eval.interval=0", "runtime.ckpt_interval=100",
              "data.kwargs.num_frames=2", "schedule.iterations=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common))
    before = {n: (out / n).read_bytes()
              for n in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt")}
    bad = ("schedule.iterations=4", "loss.class_weights=[1, 2]")
    with pytest.raises(ConfigError, match="class_weights has 2 entries.* 7 classes"):
        train(tiny_cfg(out, *common, *bad), resume=True)
    with pytest.raises(ConfigError, match="class_weights has 2 entries"):
        train(tiny_cfg(out, *common, *bad, "runtime.overwrite=true"))
    after = {n: (out / n).read_bytes() for n in before}
    assert after == before


def test_overwrite_starts_afresh_without_the_earlier_runs_checkpoints(tmp_path: Path) -> None:
    """runtime.overwrite=true replaces the earlier run: its best.pt does not survive next to the
    new run's last.pt (evaluate.py and segment_video.py would use the old model)."""
    common = ("runtime.log_interval=1", "eval.interval=0", "runtime.ckpt_interval=100",
              "data.kwargs.num_frames=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=3"))
    assert (out / "best.pt").is_file()
    train(tiny_cfg(out, *common, "schedule.iterations=2", "eval.at_end=false",
                   "runtime.overwrite=true"))
    assert load_checkpoint(out / "last.pt")["iteration"] == 2
    assert not (out / "best.pt").exists()
    assert [r["iteration"] for r in _read_jsonl(out / "metrics.jsonl")] == [1, 2]


def test_a_fresh_start_keeps_an_earlier_best_checkpoint(tmp_path: Path) -> None:
    """A run that stopped after a validation but before its first last.pt cannot be resumed;
    starting again in its folder without runtime.overwrite is refused, and its best.pt and
    metrics.jsonl stay as they were (they used to be deleted)."""
    out = tmp_path / "run"
    common = ("runtime.log_interval=1", "eval.interval=1", "runtime.ckpt_interval=100",
              "data.kwargs.num_frames=2", "schedule.iterations=1")
    train(tiny_cfg(out, *common))
    (out / "last.pt").unlink()
    before = {n: (out / n).read_bytes() for n in ("best.pt", "metrics.jsonl")}
    with pytest.raises(TrainingError, match="best.pt.*runtime.overwrite=true"):
        train(tiny_cfg(out, *common))
    assert {n: (out / n).read_bytes() for n in before} == before
    train(tiny_cfg(out, *common, "runtime.overwrite=true"))  # the way out the message names


@pytest.mark.parametrize("legacy", [False, True])
def test_resume_keeps_a_best_checkpoint_newer_than_last(tmp_path: Path, legacy: bool) -> None:
    """best.pt can be newer than last.pt (a crash between a validation and the next
    checkpoint): a resume compares later validations with best.pt's mIoU too, and does not
    replace a better best.pt (also one in torch's legacy format, which cannot be mapped)."""
    from vidccnet.engine.checkpoint import save_checkpoint

    if legacy:
        def save_checkpoint(path, state):  # noqa: F811 - torch.save's pre-1.6 format
            torch.save(state, path, _use_new_zipfile_serialization=False)

    out = tmp_path / "run"
    common = ("runtime.log_interval=1", "eval.interval=1", "runtime.ckpt_interval=1",
              "data.kwargs.num_frames=2")
    train(tiny_cfg(out, *common, "schedule.iterations=2"))
    best = load_checkpoint(out / "best.pt")
    best["metrics"]["mIoU"], best["iteration"] = 0.99, 3  # as if validated at 3, then lost
    save_checkpoint(out / "best.pt", best)
    before = (out / "best.pt").read_bytes()
    result = train(tiny_cfg(out, *common, "schedule.iterations=3"), resume=True)
    assert (out / "best.pt").read_bytes() == before
    assert result["best_mIoU"] == pytest.approx(0.99)


def test_resume_with_another_batch_size_continues_the_epoch(tmp_path: Path,
                                                            monkeypatch) -> None:
    """The resumed run continues the epoch at the clip where the checkpoint left it, even
    with another data.batch_size (the position used to be counted in batches of the new
    size: clips were drawn twice)."""
    import vidccnet.engine.train as train_mod

    drawn: list[int] = []
    real_build = train_mod.build_train_dataset

    class Recording(torch.utils.data.Dataset):
        def __init__(self, inner) -> None:
            self.inner = inner

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, item):
            drawn.append(int(item[0]))
            return self.inner[item]

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(train_mod, "build_train_dataset", lambda cfg: Recording(real_build(cfg)))
    common = ("runtime.log_interval=1", "eval.interval=0", "eval.at_end=false",
              "runtime.ckpt_interval=100", "data.kwargs.num_frames=4")  # 8 clips
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=1"))  # clips 0-1 of epoch 0
    train(tiny_cfg(out, *common, "schedule.iterations=3", "data.batch_size=1"), resume=True)
    from vidccnet.data.loader import EpochSampler

    order = EpochSampler(8, shuffle=True, seed=3, num_replicas=1, rank=0).indices()
    assert drawn == order[:4]


def test_overwrite_keeps_the_earlier_checkpoints_until_the_new_run_saves_one(
        tmp_path: Path, monkeypatch) -> None:
    """runtime.overwrite=true replaces the earlier run's checkpoints and evaluations when the new
    run writes its first checkpoint: a run that fails before that leaves them, with the
    config.yaml that goes with them (they used to be deleted at the start); a model.init_from
    inside the folder being replaced is refused."""
    common = ("runtime.log_interval=1", "eval.interval=0", "runtime.ckpt_interval=100",
              "data.kwargs.num_frames=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=2"))
    (out / "eval_val").mkdir()
    (out / "eval_val" / "eval.json").write_text("{}")
    (out / "tb").mkdir(exist_ok=True)
    (out / "tb" / "events.old").write_text("old")
    tb_before = sorted(p.name for p in (out / "tb").iterdir())
    before = {n: (out / n).read_bytes()
              for n in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl")}
    _nan_after(monkeypatch, 1)
    with pytest.raises(TrainingError, match="non-finite"):
        train(tiny_cfg(out, *common, "schedule.iterations=3", "runtime.overwrite=true"))
    assert {n: (out / n).read_bytes() for n in before} == before  # its log too
    assert sorted(p.name for p in (out / "tb").iterdir()) == tb_before
    assert (out / "eval_val" / "eval.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "config.yaml", "eval_val", "last.pt", "metrics.jsonl", "tb"]
    monkeypatch.undo()
    with pytest.raises(TrainingError, match="init_from.*copy it"):
        train(tiny_cfg(out, *common, "schedule.iterations=3", "runtime.overwrite=true",
                       f"model.init_from={out / 'best.pt'}"))
    train(tiny_cfg(out, *common, "schedule.iterations=1", "eval.at_end=false",
                   "runtime.overwrite=true"))
    assert load_checkpoint(out / "last.pt")["iteration"] == 1
    assert not (out / "best.pt").exists() and not (out / "eval_val").exists()
    assert not (out / "tb" / "events.old").exists()
    assert [json.loads(line)["iteration"]
            for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert sorted(p.name for p in out.iterdir() if p.name != "tb") == [
        "config.yaml", "last.pt", "metrics.jsonl"]


def test_a_killed_overwrite_run_gets_its_earlier_logs_back(tmp_path: Path) -> None:
    """The earlier run's logs that an overwrite run set aside (it was killed before its first
    checkpoint) are put back by the next start in that folder."""
    common = ("runtime.log_interval=1", "eval.interval=0", "data.kwargs.num_frames=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=2"))
    old_log = (out / "metrics.jsonl").read_text()
    aside = out / EARLIER_LOGS
    aside.mkdir()
    (out / "metrics.jsonl").rename(aside / "metrics.jsonl")
    (out / "metrics.jsonl").write_text('{"type": "train", "iteration": 1}\n')  # the killed run's
    with pytest.raises(TrainingError, match="already holds last.pt"):
        train(tiny_cfg(out, *common, "schedule.iterations=3"))
    assert (out / "metrics.jsonl").read_text() == old_log and not aside.exists()


def test_a_validation_split_that_cannot_be_read_stops_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing validation split, or one without a labelled frame, is found before the first
    step (it used to surface at the first validation, after the training it ends), and
    evaluate.py refuses a split without labelled frames."""
    import vidccnet.engine.train as engine

    def no_split(cfg, split=None):
        raise FileNotFoundError("split list 'val.txt' not found")

    def unlabelled(cfg, split=None):
        videos = real(cfg, split)
        for v in videos:
            v.labelled = []
        return videos

    real = engine.build_val_videos
    out = tmp_path / "run"
    for fake, error in ((no_split, "val.txt"), (unlabelled, "no labelled frame")):
        monkeypatch.setattr(engine, "build_val_videos", fake)
        with pytest.raises((FileNotFoundError, TrainingError), match=error):
            train(tiny_cfg(out, "schedule.iterations=2", "eval.interval=0"))
        assert not (out / "metrics.jsonl").exists() and not (out / "last.pt").exists()
    # no validation configured: the split is not read
    monkeypatch.setattr(engine, "build_val_videos", no_split)
    train(tiny_cfg(out, "schedule.iterations=1", "eval.interval=0", "eval.at_end=false"))


def test_dataset_kwargs_are_checked_like_config_keys() -> None:
    from vidccnet.engine.build import build_train_dataset, build_val_videos
    from vidccnet.engine.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown config key 'data.kwargs.num_video'; did you "
                                          r"mean 'data.kwargs.num_videos'\? \(valid keys"):
        build_train_dataset(load_config(None, ["data.kwargs.num_video=4"]))
    from vidccnet.engine.build import check_dataset_kwargs

    with pytest.raises(ConfigError,
                       match="'eval.kwargs.strech'; did you mean 'eval.kwargs.stretch'"):
        check_dataset_kwargs(load_config(None, ["data.name=camvid", "eval.kwargs.strech=false"]))
    check_dataset_kwargs(load_config(None, ["data.name=camvid", "eval.kwargs.stretch=false"]))
    with pytest.raises(ConfigError, match="unknown config key 'eval.kwargs.stretch'"):  # CamVid's
        build_val_videos(load_config(None, ["eval.kwargs.stretch=false"]))
    with pytest.raises(ConfigError, match="'data.kwargs.clip_len'.*set data.clip_len"):
        build_train_dataset(load_config(None, ["data.kwargs.clip_len=3"]))
    with pytest.raises(ConfigError, match="'data.kwargs.num_video'"):  # also for evaluation
        build_val_videos(load_config(None, ["data.kwargs.num_video=4"]))
    # the synthetic world's own arguments pass through the dataset's **kwargs
    ds = build_train_dataset(load_config(None, ["data.kwargs={num_videos: 1, noise: [1, 2]}"]))
    assert ds.world.noise == (1.0, 2.0)


@pytest.mark.parametrize("override,words", [
    ("data.kwargs.label_all_frames=maybe",
     "'data.kwargs.label_all_frames' expects true/false, got 'maybe'"),
    ("data.kwargs.num_videos=two", "'data.kwargs.num_videos' expects an integer, got 'two'"),
    ("data.kwargs.num_videos=2.5", "'data.kwargs.num_videos' expects an integer, got 2.5"),
    ("data.kwargs.num_videos=true", "'data.kwargs.num_videos' expects an integer, got True"),
    ("data.kwargs.blur_prob=[1]", "'data.kwargs.blur_prob' expects a number, got [1]"),
    ("data.kwargs.noise=[1, 2, 3]", "'data.kwargs.noise' expects 2 values, got 3"),
    ("eval.kwargs.seed=x", "'eval.kwargs.seed' expects an integer"),
])
def test_dataset_kwargs_values_are_checked_against_the_datasets_types(override, words) -> None:
    """A value of the wrong type was a TypeError traceback deep in the dataset, or, for a
    bool, silently true ('maybe')."""
    from vidccnet.engine.build import check_dataset_kwargs
    from vidccnet.engine.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(words)):
        check_dataset_kwargs(load_config(None, [override]))


def test_dataset_kwargs_of_the_right_types_pass() -> None:
    from vidccnet.engine.build import check_dataset_kwargs

    cfg = load_config(None, [
        "data.kwargs.label_all_frames=false", "data.kwargs.num_videos=3.0",
        "data.kwargs.blur_prob=1", "data.kwargs.noise=[1, 2.5]", "data.kwargs.seed=4"])
    check_dataset_kwargs(cfg)
    assert cfg.data.kwargs == {"label_all_frames": False, "num_videos": 3, "blur_prob": 1.0,
                               "noise": (1.0, 2.5), "seed": 4}  # as a config field converts
    check_dataset_kwargs(load_config(None, ["data.name=vspw", "data.kwargs.max_videos=null"]))


@pytest.mark.parametrize("key,words", [
    ("augment", "training-only"), ("crop_size", "training-only"),
    ("scale_range", "training-only"), ("frame_stride", "set data.frame_stride"),
])
def test_eval_kwargs_refuse_what_evaluation_does_not_read(key, words) -> None:
    """eval.kwargs.augment / crop_size / scale_range were dropped silently; frame_stride there
    spaced the evaluation videos' frames unlike the evaluator's clips."""
    from vidccnet.engine.build import check_dataset_kwargs
    from vidccnet.engine.config import ConfigError

    value = {"augment": "true", "crop_size": "[8, 8]", "scale_range": "[1, 1]",
             "frame_stride": "2"}[key]
    with pytest.raises(ConfigError, match=f"'eval.kwargs.{key}'.*{words}"):
        check_dataset_kwargs(load_config(None, [f"eval.kwargs.{key}={value}"]))


def test_amp_on_cpu_trains_and_evaluates_in_float32(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from vidccnet.engine import amp
    from vidccnet.engine.build import evaluator_kwargs

    amp._warned.clear()
    cfg = tiny_cfg(tmp_path / "amp", "runtime.amp=fp16", "schedule.iterations=1",
                   "eval.interval=0", "eval.at_end=false")
    assert evaluator_kwargs(cfg, torch.device("cpu"))["amp"] == "none"
    with caplog.at_level("WARNING"):
        train(cfg)
    assert load_checkpoint(tmp_path / "amp" / "last.pt")["scaler"] is None  # no GradScaler
    assert any("amp=fp16 ignored on cpu" in r.getMessage() for r in caplog.records)


def test_logs_without_a_terminal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """stderr is not a terminal under pytest: a start line and one line per log_interval."""
    cfg = tiny_cfg(tmp_path / "log", "schedule.iterations=2", "runtime.log_interval=1",
                   "eval.interval=0", "eval.at_end=false", "runtime.progress=true")
    with caplog.at_level("INFO", logger="vidccnet.engine.train"):
        train(cfg, name="tiny.yaml")
    lines = [r.getMessage() for r in caplog.records if r.name == "vidccnet.engine.train"]
    start = [m for m in lines if m.startswith("start:")]
    assert len(start) == 1, lines
    from vidccnet.engine.build import build_train_dataset

    n_params = sum(p.numel() for _, p in _model_params(cfg))
    n_clips = len(build_train_dataset(cfg))
    for part in ("config tiny.yaml", "ccnet3d_resnet18", f"{n_params / 1e6:.2f}M params", "cpu",
                 f"synthetic train: {n_clips} clips", "2 iterations"):
        assert part in start[0], (part, start[0])
    steps = [m for m in lines if m.startswith("iteration ")]
    assert [m.split()[1] for m in steps] == ["1/2", "2/2"], lines
    for m in steps:
        for part in ("loss ", "lr ", "clips/s", "ETA "):
            assert part in m, m


def test_progress_bar_on_a_terminal_keeps_log_lines_off_its_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import io
    import logging

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    handler = logging.StreamHandler(term)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    cfg = tiny_cfg(tmp_path / "tty", "schedule.iterations=2", "runtime.log_interval=1",
                   "eval.interval=1", "eval.at_end=false", "runtime.progress=true")
    try:
        with caplog.at_level("INFO"):
            train(cfg)
    finally:
        root.removeHandler(handler)
    text = term.getvalue()
    assert "train:" in text and "2/2" in text  # the bar was drawn
    logged = [line.split("\r")[-1] for line in text.split("\n") if "LOG" in line]
    assert sum("val mIoU" in seg for seg in logged) == 2, text
    for seg in logged:  # each log line on a line of its own (after the bar is cleared by \r)
        assert seg.startswith("LOG") and seg.count("LOG") == 1, repr(seg)
    assert "LOG iteration 1/2" not in text  # per-interval lines stay on the bar


def test_evaluate_script_replaces_stale_plots(load_script, tmp_path: Path, monkeypatch) -> None:
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.train import build_model

    cfg = tiny_cfg(tmp_path / "unused", "eval.vc_windows=[1]")
    torch.manual_seed(0)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                           "config": config_to_dict(cfg), "version": 1, "iteration": 0})
    out = tmp_path / "eval"
    out.mkdir()
    for name in ("class_iou.png", "strip_gone_video.png", "notes.txt"):
        (out / name).write_bytes(b"old")  # an earlier evaluation's plots (its eval.json says so)
    (out / "eval.json").write_text(json.dumps({"files": {
        "class_iou": str(out / "class_iou.png"), "strip": str(out / "strip_gone_video.png"),
        "eval_json": str(out / "eval.json")}}))
    script = load_script("evaluate.py")
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    assert script.main(["--checkpoint", str(ckpt), "--output", str(out),
                        "runtime.num_threads=1"]) == 0
    assert threads == [1]  # runtime.num_threads holds here as in train.py
    monkeypatch.undo()
    files = json.loads((out / "eval.json").read_text())["files"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(Path(files[k]).name for k in ("class_iou", "strip")), pngs
    assert (out / "class_iou.png").read_bytes() != b"old"
    assert (out / "notes.txt").read_bytes() == b"old"  # not ours: kept
    assert script.main(["--checkpoint", str(ckpt), "--output", str(out), "--no-plots"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "notes.txt"]
    # a folder no evaluation wrote into: its own plots are not ours to delete
    mine = tmp_path / "paper"
    mine.mkdir()
    for name in ("class_iou.png", "strip_figure3.png"):
        (mine / name).write_bytes(b"mine")
    # ... nor to overwrite: with plots on it is refused before evaluating (it replaced them)
    assert script.main(["--checkpoint", str(ckpt), "--output", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["class_iou.png", "strip_figure3.png"]
    assert all(p.read_bytes() == b"mine" for p in mine.iterdir())
    assert script.main(["--checkpoint", str(ckpt), "--output", str(mine), "--no-plots"]) == 0
    assert sorted(p.name for p in mine.iterdir()) == ["class_iou.png", "eval.json",
                                                       "strip_figure3.png"]
    # the eval.json that run wrote lists no plot: they are still the user's (a later run
    # deleted them, and with plots on replaced them)
    assert script.main(["--checkpoint", str(ckpt), "--output", str(mine), "--no-plots"]) == 0
    assert script.main(["--checkpoint", str(ckpt), "--output", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["class_iou.png", "eval.json",
                                                       "strip_figure3.png"]
    assert all(p.read_bytes() == b"mine" for p in mine.glob("*.png"))


def test_evaluate_script_killed_while_writing_leaves_no_unlisted_plot(
        load_script, tmp_path: Path, monkeypatch) -> None:
    """The plots were written before eval.json: an evaluation killed between them left a
    strip under a new name that the earlier eval.json does not list, and every later run
    refused the folder ("plots no evaluation wrote"). Killed at eval.json now, the earlier
    report is left whole, and the next run replaces it."""
    import vidccnet.engine.report as report
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.train import build_model

    cfg = tiny_cfg(tmp_path / "unused", "eval.vc_windows=[1]")
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                           "config": config_to_dict(cfg), "version": 1, "iteration": 0})
    out = tmp_path / "eval"
    out.mkdir()
    for name in ("class_iou.png", "strip_gone_video.png"):
        (out / name).write_bytes(b"old")
    (out / "eval.json").write_text(json.dumps({"files": {
        "class_iou": str(out / "class_iou.png"), "strip": str(out / "strip_gone_video.png"),
        "eval_json": str(out / "eval.json")}}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_eval_json", killed)
    script = load_script("evaluate.py")
    assert script.main(["--checkpoint", str(ckpt), "--output", str(out)]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    assert script.main(["--checkpoint", str(ckpt), "--output", str(out)]) == 0
    files = json.loads((out / "eval.json").read_text())["files"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        Path(files[k]).name for k in ("class_iou", "strip"))
    assert all(p.read_bytes() != b"old" for p in out.glob("*.png"))


def test_evaluate_script_evaluates_every_video_unless_told(load_script, tmp_path: Path,
                                                           caplog) -> None:
    """The VSPW / folders recipes cap periodic validation (eval.max_videos: 50), and the cap
    is in the checkpoint's config: evaluate.py took the first 50 of VSPW's 343 val videos,
    silently. It evaluates every video unless eval.max_videos is given on its command line,
    and then says the figures cover part of the split."""
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.train import build_model

    cfg = tiny_cfg(tmp_path / "unused", "eval.kwargs={num_videos: 3}", "eval.max_videos=1")
    torch.manual_seed(0)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                           "config": config_to_dict(cfg), "version": 1, "iteration": 0})
    script = load_script("evaluate.py")
    with caplog.at_level("INFO"):
        assert script.main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "a"),
                            "--no-plots"]) == 0
    report = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert report["metrics"]["videos"] == 3
    assert "eval.max_videos=1" in caplog.text and "not applied" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        assert script.main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "b"),
                            "--no-plots", "eval.max_videos=2"]) == 0
    report = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert report["metrics"]["videos"] == 2
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("2 of the 3" in r.getMessage() for r in warned), caplog.text
    caplog.clear()  # a cap the split does not reach changes nothing: not a word about it
    cfg = tiny_cfg(tmp_path / "unused", "eval.kwargs={num_videos: 3}", "eval.max_videos=5")
    save_checkpoint(ckpt, {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                           "config": config_to_dict(cfg), "version": 1, "iteration": 0})
    with caplog.at_level("INFO"):
        assert script.main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "c"),
                            "--no-plots"]) == 0
    assert "max_videos" not in caplog.text


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_evaluate_script_interrupted_is_one_line_and_writes_nothing(
        load_script, tmp_path: Path, monkeypatch, capsys, how: str) -> None:
    """Ctrl-C or SIGTERM during the evaluation: one line, exit 130 / 143, no output folder
    (a traceback and an empty folder before); an earlier report in it is left whole."""
    import os
    import signal

    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.evaluate import Evaluator
    from vidccnet.engine.train import build_model

    cfg = tiny_cfg(tmp_path / "unused", "eval.vc_windows=[1]")
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                           "config": config_to_dict(cfg), "version": 1, "iteration": 0})

    def stop(self, model, videos):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluator, "run", stop)
    script = load_script("evaluate.py")
    code = {"ctrl-c": 130, "sigterm": 143}[how]
    assert script.main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "ev")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no report was written" in err[0], err
    assert not (tmp_path / "ev").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "eval.json").write_text("{}")
    (tmp_path / "old" / "class_iou.png").write_bytes(b"old")
    assert script.main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "old")]) == code
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["class_iou.png", "eval.json"]


def test_evaluate_script_refuses_what_it_cannot_honour(load_script, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """--output that is a file, and model.* overrides (the model is the checkpoint's), get one
    line and exit 2 before any evaluation."""
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.models.build import build_model

    cfg = tiny_cfg(tmp_path / "unused")
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                           "config": config_to_dict(cfg), "version": 1, "iteration": 0})
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    script = load_script("evaluate.py")
    for args, needle in (
        (["--output", str(a_file)], "is not a folder"),
        (["--output", str(a_file / "eval")], f"'{a_file}' is a file, not a folder"),
        (["model.recurrence=0"], "model.recurrence"),
    ):
        assert script.main(["--checkpoint", str(ckpt), "--no-plots", *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    assert a_file.read_text() == "mine"
    assert not (tmp_path / "eval_val").exists()
    # a split without a labelled frame: no evaluation, one line
    import vidccnet.engine.build as build

    real = build.build_val_videos

    def unlabelled(cfg, split=None):
        videos = real(cfg, split)
        for v in videos:
            v.labelled = []
        return videos

    build.build_val_videos = unlabelled
    try:
        assert script.main(["--checkpoint", str(ckpt), "--no-plots"]) == 2
    finally:
        build.build_val_videos = real
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no labelled frame" in lines[0], lines
    assert not (tmp_path / "eval_val").exists()


def test_evaluate_script_attention_off(load_script, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    """--attention-off evaluates with every gamma = 0 (its own folder, flagged in eval.json) and
    refuses a model whose head applies no attention."""
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.train import build_model

    def checkpoint(name: str, *extra: str) -> Path:
        cfg = tiny_cfg(tmp_path / "unused", "eval.vc_windows=[1]", *extra)
        torch.manual_seed(0)
        model = build_model(cfg, 7, pretrained=False)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("gamma"):
                    p.fill_(5.0)  # an attention that matters
        path = tmp_path / name / "best.pt"
        path.parent.mkdir()
        save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg),
                               "version": 1, "iteration": 0})
        return path

    script = load_script("evaluate.py")
    ckpt = checkpoint("att")
    assert script.main(["--checkpoint", str(ckpt), "--no-plots"]) == 0
    assert script.main(["--checkpoint", str(ckpt), "--no-plots", "--attention-off"]) == 0
    on = json.loads((ckpt.parent / "eval_val" / "eval.json").read_text())
    off = json.loads((ckpt.parent / "eval_val_attention_off" / "eval.json").read_text())
    assert off["config"]["attention_off"] is True and on["config"]["attention_off"] is False
    assert off["metrics"]["IoU"] != on["metrics"]["IoU"]
    assert load_checkpoint(ckpt)["model"]["head.cca.cca.gamma"].item() == 5.0  # untouched
    capsys.readouterr()
    plain = checkpoint("plain", "model.recurrence=0")
    assert script.main(["--checkpoint", str(plain), "--attention-off"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no criss-cross attention" in err, err
    assert not (plain.parent / "eval_val_attention_off").exists()


def test_evaluate_script_default_folder_is_the_checkpoints_own(load_script,
                                                               tmp_path: Path) -> None:
    """last.pt (or a copy) evaluated without --output wrote into eval_<split>/, the folder of
    best.pt's report, and replaced it. best.pt keeps eval_<split>/; any other checkpoint writes
    eval_<stem>_<split>/."""
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.train import build_model

    cfg = tiny_cfg(tmp_path / "unused", "eval.vc_windows=[1]")
    state = {"model": build_model(cfg, 7, pretrained=False).state_dict(),
             "config": config_to_dict(cfg), "version": 1, "iteration": 0}
    for name in ("best.pt", "last.pt"):
        save_checkpoint(tmp_path / name, state)
    script = load_script("evaluate.py")
    assert script.main(["--checkpoint", str(tmp_path / "best.pt"), "--no-plots"]) == 0
    best_report = (tmp_path / "eval_val" / "eval.json").read_bytes()
    assert script.main(["--checkpoint", str(tmp_path / "last.pt"), "--no-plots"]) == 0
    assert script.main(["--checkpoint", str(tmp_path / "last.pt"), "--no-plots",
                        "--attention-off"]) == 0
    assert (tmp_path / "eval_val" / "eval.json").read_bytes() == best_report  # untouched
    for folder in ("eval_last_val", "eval_last_val_attention_off"):
        report = json.loads((tmp_path / folder / "eval.json").read_text())
        assert report["config"]["checkpoint"] == str(tmp_path / "last.pt"), folder


def test_evaluate_script_refuses_an_unwritable_report_folder_before_evaluating(
        load_script, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """A report folder without write permission failed only when the report was written,
    after the whole evaluation, with a traceback. It is refused first, in one line. (The
    tests run as root, where permission bits do not bite: os.access is replaced.)"""
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.evaluate import Evaluator
    from vidccnet.engine.train import build_model

    cfg = tiny_cfg(tmp_path / "unused")
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "last.pt", {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                                      "config": config_to_dict(cfg), "version": 1,
                                      "iteration": 0})
    locked = tmp_path / "locked"
    locked.mkdir()

    def access(path, mode):
        return Path(path) not in (run, locked)

    def evaluated(self, model, videos):
        raise AssertionError("evaluated although the report cannot be written")

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(Evaluator, "run", evaluated)
    script = load_script("evaluate.py")
    for args, needle in (
        ([], f"the default --output {run / 'eval_last_val'}: no permission to write in "
             f"'{run}'; choose a folder you can write to and pass it as --output DIR"),
        (["--output", str(locked / "ev")], f"--output {locked / 'ev'}: no permission to write "
                                          f"in '{locked}'"),
    ):
        assert script.main(["--checkpoint", str(run / "last.pt"), "--no-plots", *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]
    assert list(locked.iterdir()) == []


def test_evaluate_script_permission_denied_mid_run_is_one_line(
        load_script, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """A PermissionError that the check before evaluating cannot foresee (a root-squashed NFS
    share, where os.access and the server disagree, while the report is written) was a
    traceback."""
    from vidccnet.engine.checkpoint import save_checkpoint
    from vidccnet.engine.config import config_to_dict
    from vidccnet.engine.evaluate import Evaluator
    from vidccnet.engine.train import build_model

    cfg = tiny_cfg(tmp_path / "unused")
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg, 7, pretrained=False).state_dict(),
                           "config": config_to_dict(cfg), "version": 1, "iteration": 0})
    report = tmp_path / "ev" / "eval.json"

    def denied(self, model, videos):
        raise PermissionError(13, "Permission denied", str(report))

    monkeypatch.setattr(Evaluator, "run", denied)
    script = load_script("evaluate.py")
    assert script.main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "ev"),
                        "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Permission denied" in err[0] and str(report) in err[0], err


def _train_until(cfg, stop_at: int) -> None:
    """Run ``cfg`` but interrupt it right after the checkpoint of iteration ``stop_at``."""
    import vidccnet.engine.train as tr

    real_save = tr.save_checkpoint

    class _Stop(Exception):
        pass

    def save_then_stop(path, state):
        real_save(path, state)
        if Path(path).name == "last.pt" and state["iteration"] == stop_at:
            raise _Stop

    tr.save_checkpoint = save_then_stop
    try:
        import dataclasses

        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime,
                                                                   ckpt_interval=stop_at))
        with pytest.raises(_Stop):
            train(cfg)
    finally:
        tr.save_checkpoint = real_save


def _nan_after(monkeypatch: pytest.MonkeyPatch, good_steps: int,
               gradient: bool = False) -> None:
    """Make the criterion's loss NaN from forward call ``good_steps + 1`` on; with
    ``gradient``, keep the loss finite and make its gradient NaN instead."""
    import vidccnet.engine.train as tr

    real = tr.build_criterion

    def build(cfg):
        crit = real(cfg)
        calls = {"n": 0}

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = crit

            def forward(self, outputs, labels):
                calls["n"] += 1
                loss, parts = self.inner(outputs, labels)
                if calls["n"] > good_steps and gradient:  # d sqrt(z - z) / dz = inf * 0
                    z = next(v for v in outputs.values() if torch.is_tensor(v))
                    loss = loss + torch.sqrt(z - z).sum()
                elif calls["n"] > good_steps:
                    loss = loss * float("nan")
                return loss, parts

        return Wrapped()

    monkeypatch.setattr(tr, "build_criterion", build)


@pytest.mark.parametrize("what", ["loss", "gradients"])
def test_nonfinite_step_stops_and_keeps_last_good(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  what: str) -> None:
    """A NaN loss, or a finite loss with NaN gradients (which nothing caught without a
    GradScaler: the weights became NaN and last.pt was overwritten with them), stops the run
    before the step and keeps the last good checkpoint."""
    _nan_after(monkeypatch, good_steps=1, gradient=what == "gradients")
    out = tmp_path / "nan"
    cfg = tiny_cfg(out, "schedule.iterations=4", "runtime.ckpt_interval=1", "eval.interval=0",
                   "eval.at_end=false")
    with pytest.raises(TrainingError, match=f"non-finite {what} at iteration 2.*last good"):
        train(cfg)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_nonfinite_loss_in_an_overwrite_run_does_not_point_at_the_earlier_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before its first checkpoint an overwrite run's folder still holds the run it replaces:
    its last.pt is not 'the last good checkpoint' of this one (--resume would continue it)."""
    out = tmp_path / "run"
    common = ("eval.interval=0", "eval.at_end=false")
    train(tiny_cfg(out, "schedule.iterations=1", *common))
    _nan_after(monkeypatch, good_steps=1)
    cfg = tiny_cfg(out, "schedule.iterations=4", "runtime.ckpt_interval=100",
                   "runtime.overwrite=true", *common)
    with pytest.raises(TrainingError, match="non-finite loss at iteration 2") as err:
        train(cfg)
    assert "last good" not in str(err.value) and "earlier run" in str(err.value)
    assert load_checkpoint(out / "last.pt")["iteration"] == 1  # the earlier run, kept


@pytest.mark.parametrize("clip", ["null", "1.0"])
def test_nonfinite_gradients_skipped_when_configured(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     clip: str) -> None:
    _nan_after(monkeypatch, good_steps=1, gradient=True)
    out = tmp_path / "skip"
    result = train(tiny_cfg(out, "schedule.iterations=2", "runtime.skip_nonfinite=true",
                            f"optim.grad_clip={clip}", "eval.interval=0", "eval.at_end=false"))
    assert result["skipped"] == 1 and result["iteration"] == 2
    ckpt = load_checkpoint(out / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def _train_dying_at_a_save(cfg, dies) -> None:
    """Train ``cfg`` until a checkpoint save for which ``dies(file name, state)`` holds: the run
    dies there (before writing it), as a killed run would."""
    import vidccnet.engine.train as tr

    real_save = tr.save_checkpoint

    class _Died(Exception):
        pass

    def save_or_die(path, state):
        if dies(Path(path).name, state):
            raise _Died
        real_save(path, state)

    tr.save_checkpoint = save_or_die
    try:
        with pytest.raises(_Died):
            train(cfg)
    finally:
        tr.save_checkpoint = real_save


def test_a_validation_rerun_after_a_resume_is_logged_once(tmp_path: Path) -> None:
    """A run that died after a validation wrote its record but before the checkpoint after it
    re-runs that validation on --resume; metrics.jsonl then held two records of it."""
    out = tmp_path / "run"
    cfg = tiny_cfg(out, "schedule.iterations=2", "runtime.ckpt_interval=2", "eval.interval=2")
    _train_dying_at_a_save(cfg, lambda name, state: name == "last.pt"
                           and not state["train_state"]["val_pending"])
    assert [r["type"] for r in _read_jsonl(out / "metrics.jsonl")].count("val") == 1
    train(cfg, resume=True)
    vals = [r for r in _read_jsonl(out / "metrics.jsonl") if r["type"] == "val"]
    assert [r["iteration"] for r in vals] == [2], vals


def test_a_validation_rerun_after_a_resume_is_in_tensorboard_once(tmp_path: Path) -> None:
    """TensorBoard purged from the step after the checkpoint, so a validation the resume runs
    again showed twice (val/mIoU steps [1, 2, 2]); purged from the checkpoint's step, its
    training scalars there come back from metrics.jsonl."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = tiny_cfg(out, "schedule.iterations=2", "runtime.ckpt_interval=1", "eval.interval=1",
                   "runtime.log_interval=1", "runtime.tensorboard=true", "eval.at_end=false")
    _train_dying_at_a_save(cfg, lambda name, state: state["iteration"] == 2 and (
        name == "best.pt" or (name == "last.pt" and not state["train_state"]["val_pending"])))
    train(cfg, resume=True)
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/mIoU")] == [1, 2]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    logged = {r["iteration"]: r["loss"] for r in _read_jsonl(out / "metrics.jsonl")
              if r["type"] == "train"}
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(
        [logged[1], logged[2]], rel=1e-6)


def test_clips_per_s_after_a_resume_between_log_lines(tmp_path: Path, monkeypatch) -> None:
    """The first log line after a resume between two log lines averages the losses of every
    step since the previous line, but only the resumed steps were timed: clips/s counted
    the steps before the interruption too (2x too fast here). A fake clock makes every
    training step last the same."""
    import types

    import vidccnet.engine.train as tr

    ticks = iter(range(10**6))
    monkeypatch.setattr(tr, "time", types.SimpleNamespace(
        perf_counter=lambda: float(next(ticks)), time=__import__("time").time))
    common = ("runtime.log_interval=2", "eval.interval=0", "eval.at_end=false",
              "schedule.iterations=2")
    train(tiny_cfg(tmp_path / "a", *common))
    part = tiny_cfg(tmp_path / "b", *common)
    _train_until(part, 1)
    train(part, resume=True)
    rate = {k: [r["clips_per_s"] for r in _read_jsonl(tmp_path / k / "metrics.jsonl")
                if r["type"] == "train"] for k in "ab"}
    assert rate["a"] == rate["b"] and len(rate["a"]) == 1, rate


def test_a_warm_up_longer_than_the_run_is_a_warning(tmp_path: Path, caplog) -> None:
    """VSPW's 1000 warm-up steps in a 500-step run: the lr never reaches optim.lr."""
    cfg = tiny_cfg(tmp_path / "run", "schedule.iterations=1", "schedule.warmup_iters=5",
                   "eval.interval=0", "eval.at_end=false")
    with caplog.at_level("WARNING"):
        train(cfg)
    assert "schedule.warmup_iters=5 is longer than the run (1 iteration):" in caplog.text


def test_nonfinite_loss_skipped_when_configured(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    _nan_after(monkeypatch, good_steps=1)
    out = tmp_path / "skip"
    cfg = tiny_cfg(out, "schedule.iterations=2", "runtime.skip_nonfinite=true",
                   "runtime.log_interval=1", "eval.interval=0", "eval.at_end=false")
    with caplog.at_level("INFO", logger="vidccnet.engine.train"):
        result = train(cfg)
    # the line of an interval of skipped steps says so (it read 'loss nan', as if the
    # weights had diverged)
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration ")]
    assert "loss nan" not in steps[1] and "all 1 steps skipped" in steps[1], steps
    assert result["skipped"] == 1 and result["iteration"] == 2
    ckpt = load_checkpoint(out / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert [r["skipped"] for r in _read_jsonl(out / "metrics.jsonl")] == [0, 1]


def test_deterministic_sets_cublas_workspace(tmp_path: Path, monkeypatch) -> None:
    """cuBLAS is deterministic only with CUBLAS_WORKSPACE_CONFIG set (PyTorch's reproducibility
    notes); runtime.deterministic=true did not set it, so GPU matmuls could differ run to run."""
    import os

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    train(tiny_cfg(tmp_path / "run", "schedule.iterations=1", "runtime.deterministic=true"))
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's choice is kept
    train(tiny_cfg(tmp_path / "run2", "schedule.iterations=1", "runtime.deterministic=true"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_resume_needs_no_backbone_file(tmp_path: Path) -> None:
    """last.pt replaces the ImageNet weights at once, yet a resume loaded the backbone file
    again and failed where it is gone (another node, a cleaned weights/, another cwd)."""
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    out = tmp_path / "run"
    train(tiny_cfg(out, "schedule.iterations=2", f"model.pretrained_backbone={weights}"))
    weights.unlink()
    result = train(tiny_cfg(out, "schedule.iterations=3", f"model.pretrained_backbone={weights}"),
                   resume=True)
    assert result["iteration"] == 3


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(tiny_cfg(tmp_path / "none", "schedule.iterations=1"), resume=True)


# ------------------------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, overrides: list[str], out: str,
                resume: bool = False, keep_at: int | None = None) -> None:
    """One DDP rank; ``keep_at``: also copy last.pt of that iteration to it<N>.pt."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _install_data_standins()
    _no_dropout()
    if keep_at is not None:
        import vidccnet.engine.train as tr

        real_save = tr.save_checkpoint

        def save_and_keep(path, state):
            real_save(path, state)
            if Path(path).name == "last.pt" and state["iteration"] == keep_at:
                real_save(Path(path).with_name(f"it{keep_at}.pt"), state)

        tr.save_checkpoint = save_and_keep
    result = train(load_config(None, overrides), resume=resume)
    if rank == 0:
        Path(out).write_text(json.dumps(result, default=str))


def _ddp_worker_rank1_without_best(rank: int, world: int, port: int, overrides: list[str],
                                   out: str) -> None:
    """A resuming DDP rank; rank 1 reads no best.pt (a node where only last.pt was copied)."""
    if rank == 1:
        import vidccnet.engine.train as tr

        tr.best_so_far = lambda recorded, path: recorded
    _ddp_worker(rank, world, port, overrides, out, resume=True)


def _no_dropout() -> None:
    # Dropout masks are drawn per process, so they cannot match between 1 and 2 processes.
    torch.nn.Dropout2d.forward = lambda self, x: x  # type: ignore[method-assign]


DDP_COMMON = ["schedule.iterations=1", "schedule.warmup_iters=0", "data.batch_size=1",
              "loss.ohem=false",
              "eval.interval=0",
              "runtime.log_interval=1", "eval.kwargs={num_videos: 2}"]


def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    """2 gloo processes x batch 1 == 1 process x batch 1 x 2 accumulation steps.

    The global batches are the same (rank r takes positions r, r + 2, ... of the epoch order;
    the single process takes them as consecutive micro-batches), augmentation seeds depend on
    (seed, epoch, index) only, and BatchNorm sees one clip per forward in both runs, so the
    trained parameters agree to float tolerance. (SyncBatchNorm is CUDA-only in PyTorch, hence
    micro-batches rather than one batch of 2.) Dropout is switched off because its masks are
    drawn per process. The validation metrics of the DDP run (videos sharded over the ranks,
    confusion matrices all-reduced) equal a single-process evaluation of the same weights.
    """
    import torch.multiprocessing as mp

    ddp_out = tmp_path / "ddp"
    overrides = TINY + DDP_COMMON + [f"runtime.output_dir={ddp_out}"]
    mp.spawn(_ddp_worker, args=(2, _free_port(), overrides, str(tmp_path / "ddp.json")),
             nprocs=2, join=True)
    ddp = json.loads((tmp_path / "ddp.json").read_text())

    single_out = tmp_path / "single"
    saved = torch.nn.Dropout2d.forward
    _no_dropout()
    try:
        cfg = load_config(None, TINY + DDP_COMMON + [
            "optim.accum_steps=2", "eval.at_end=false", f"runtime.output_dir={single_out}"])
        train(cfg)
    finally:
        torch.nn.Dropout2d.forward = saved
    a = load_checkpoint(ddp_out / "last.pt")
    b = load_checkpoint(single_out / "last.pt")
    params = {name for name, _ in _model_params(cfg)}
    assert params
    # one SGD step at lr 0.01 moves parameters by ~1e-3; they must agree to round-off (1e-6).
    # (One step: later steps amplify the 1-ulp round-off of the gradient average through
    # BatchNorm on single clips, to ~1e-5 after two steps.)
    for k in params:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=0, atol=1e-6), k
    assert a["model"]["backbone.layer1.0.bn2.bias"].abs().max() > 1e-4  # the weights did move
    # the logged training losses are those of the whole global batch, not of rank 0's share
    logs = [[r for r in _read_jsonl(d / "metrics.jsonl") if r["type"] == "train"]
            for d in (ddp_out, single_out)]
    for key in ("loss", "ce", "aux"):
        assert logs[0][0][key] == pytest.approx(logs[1][0][key], rel=1e-5), key
    # the same weights evaluated in one process give the DDP run's validation figures
    from vidccnet.engine.build import build_evaluator, build_val_videos
    from vidccnet.engine.checkpoint import build_model_from_checkpoint

    model, ckpt_cfg = build_model_from_checkpoint(a, "cpu")
    videos = build_val_videos(ckpt_cfg)
    assert len(videos) == 2 and ddp["val"]["videos"] == 2
    ref = build_evaluator(ckpt_cfg, 7, torch.device("cpu")).run(model, videos)
    for key in ("mIoU", "pixel_acc", "fwIoU", "mVC_2"):
        assert ddp["val"][key] == pytest.approx(ref[key], abs=1e-9), key


def test_ddp_resume_takes_rank_0s_best_miou(tmp_path: Path) -> None:
    """Each rank took the best mIoU so far from its own disk: a node without best.pt (only
    last.pt is copied between nodes) kept last.pt's, rank 0 took a newer best.pt's, they
    disagreed on whether the next validation improved, and the checkpoint collectives hung.
    Every rank uses rank 0's."""
    import torch.multiprocessing as mp

    from vidccnet.engine.checkpoint import save_checkpoint

    out = tmp_path / "run"
    overrides = TINY + DDP_COMMON + ["eval.interval=1", "runtime.ckpt_interval=1",
                                     "eval.at_end=false", f"runtime.output_dir={out}"]
    mp.spawn(_ddp_worker, args=(2, _free_port(), overrides + ["schedule.iterations=1"],
                                str(tmp_path / "a.json")), nprocs=2, join=True)
    best = load_checkpoint(out / "best.pt")
    best["metrics"]["mIoU"] = 0.99  # newer than last.pt's record: the run stopped between
    save_checkpoint(out / "best.pt", best)
    last = load_checkpoint(out / "last.pt")
    last["train_state"]["best_mIoU"] = 0.0
    save_checkpoint(out / "last.pt", last)
    ctx = mp.spawn(_ddp_worker_rank1_without_best,
                   args=(2, _free_port(), overrides + ["schedule.iterations=2"],
                         str(tmp_path / "b.json")), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the resumed DDP run hung")
    assert load_checkpoint(out / "best.pt")["metrics"]["mIoU"] == 0.99  # not replaced
    assert load_checkpoint(out / "last.pt")["train_state"]["best_mIoU"] == 0.99


def test_ddp_resume_logs_the_global_batchs_losses(tmp_path: Path) -> None:
    """A checkpoint between two log lines keeps the losses summed since the last line; under
    DDP those must be every rank's (they were rank 0's, used on every rank after a resume)."""
    import shutil

    import torch.multiprocessing as mp

    full = tmp_path / "full"
    overrides = TINY + DDP_COMMON + ["schedule.iterations=3", "runtime.log_interval=2",
                                     "runtime.ckpt_interval=1", "eval.at_end=false"]
    mp.spawn(_ddp_worker, args=(2, _free_port(), overrides + [f"runtime.output_dir={full}"],
                                str(tmp_path / "a.json"), False, 1), nprocs=2, join=True)
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.move(resumed / "it1.pt", resumed / "last.pt")  # as if stopped after iteration 1
    mp.spawn(_ddp_worker, args=(2, _free_port(), overrides + [f"runtime.output_dir={resumed}"],
                                str(tmp_path / "b.json"), True), nprocs=2, join=True)
    logs = [[r for r in _read_jsonl(d / "metrics.jsonl") if r["type"] == "train"]
            for d in (full, resumed)]
    assert [r["iteration"] for r in logs[1]] == [2, 3]
    for a, b in zip(*logs):
        for key in ("loss", "ce", "aux"):
            assert b[key] == pytest.approx(a[key], rel=1e-6), (a["iteration"], key)


def test_ddp_with_parameters_no_loss_reaches(tmp_path: Path) -> None:
    """With loss.cc_weight=0 (synthetic_tiny.yaml, the documented CPU torchrun run) the
    embedding gets no gradient; with model.recurrence=0 the attention, with loss.aux_weight=0
    the auxiliary head. DDP then needs find_unused_parameters, or it fails on step 2."""
    import torch.multiprocessing as mp

    from vidccnet.engine.train import ddp_finds_unused_parameters

    assert not ddp_finds_unused_parameters(load_config(None, TINY))
    for extra in ("loss.cc_weight=0", "model.recurrence=0", "loss.aux_weight=0"):
        assert ddp_finds_unused_parameters(load_config(None, TINY + [extra])), extra
    overrides = TINY + DDP_COMMON + ["schedule.iterations=2", "loss.cc_weight=0",
                                     f"runtime.output_dir={tmp_path / 'ddp'}"]
    mp.spawn(_ddp_worker, args=(2, _free_port(), overrides, str(tmp_path / "ddp.json")),
             nprocs=2, join=True)
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["iteration"] == 2


def _model_params(cfg) -> list:
    from vidccnet.engine.train import build_model

    return list(build_model(cfg, 7, pretrained=False).named_parameters())


# -------------------------------------------------------------------------------- scripts


def test_train_script_missing_config_subprocess() -> None:
    """The real command line: exit status 2 and exactly one line on stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", "configs/does_not_exist.yaml"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0], proc.stderr


def test_train_script_under_torchrun_reports_a_config_error_once(
        load_script, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of a torchrun reads the same config: a mistake in it was printed once
    per process. Rank 0 says it; the others exit with the same code in silence."""
    args = ["--config", str(REPO / "configs/synthetic_tiny.yaml"), "optim.lrr=0.1"]
    for rank, said in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        assert load_script("train.py").main(args) == 2
        assert ("did you mean 'optim.lr'" in capsys.readouterr().err) == said, rank


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_script_help_says_amp_is_cuda_only(load_script, script: str,
                                           capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        load_script(script).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runtime.amp=bf16|fp16 autocasts on CUDA only; on CPU it is ignored" in text


@pytest.mark.parametrize(
    "script, args, needle",
    [
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"), "optim.lrr=0.1"],
         "did you mean 'optim.lr'"),
        ("train.py", ["--config", str(REPO / "configs/camvid_ccnet3d_r50.yaml"),
                      "data.root=/nonexistent/camvid", "runtime.device=cpu"], "camvid"),
        ("train.py", ["--config", str(REPO / "configs/vspw_ccnet3d_r50.yaml"),
                      "runtime.device=cpu"], "data.root is not set"),
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"),  # not 'data.root'
                      "data.name=cityscapes", "runtime.output_dir=/nonexistent/run"],
         "unknown dataset 'cityscapes'; choose one of synthetic, camvid, vspw, folders"),
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"), "--resume",
                      "runtime.output_dir=/nonexistent/run"], "no checkpoint"),
        ("evaluate.py", ["--checkpoint", "/nonexistent/best.pt"], "not found"),
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"),
                      "data.kwargs.num_video=4", "runtime.output_dir=/nonexistent/run"],
         "did you mean 'data.kwargs.num_videos'"),
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"),
                      "model.kwargs.head_chanels=64", "runtime.output_dir=/nonexistent/run"],
         "did you mean 'head_channels'"),
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"),
                      "runtime.output_dir=" + str(REPO / "README.md")], "is not a folder"),
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"),
                      "runtime.num_threads=-1"], "runtime.num_threads"),
        ("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"),  # not Errno 20
                      "runtime.output_dir=" + str(REPO / "README.md" / "run")],
         "README.md' is a file"),
        ("evaluate.py", ["--checkpoint", str(REPO / "README.md"), "--device", "gpu"],
         "unknown device 'gpu'; use auto, cpu or cuda"),
        *([("train.py", ["--config", str(REPO / "configs/synthetic_tiny.yaml"),
                         "runtime.device=cuda", "runtime.output_dir=/nonexistent/run"],
            "no CUDA device")] if not torch.cuda.is_available() else []),
    ],
)
def test_scripts_fail_with_one_line(load_script, script: str, args: list[str], needle: str,
                                    capsys: pytest.CaptureFixture) -> None:
    assert load_script(script).main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert needle.lower() in lines[0].lower()


def test_builders_still_importable_from_the_trainer_module():
    """They lived in engine/train.py before engine/build.py and engine/optim.py."""
    import vidccnet.engine.build as build
    import vidccnet.engine.optim as optim
    import vidccnet.engine.train as train_mod

    for name in ("build_evaluator", "build_train_dataset", "build_val_videos",
                 "check_dataset_kwargs", "evaluator_kwargs"):
        assert getattr(train_mod, name) is getattr(build, name)
    for name in ("PolyWarmup", "build_optimizer", "build_scheduler",
                 "configure_resumed_optimizer"):
        assert getattr(train_mod, name) is getattr(optim, name)


def test_resume_drops_tensorboard_scalars_logged_after_the_checkpoint(tmp_path: Path) -> None:
    """Like metrics.jsonl, TensorBoard shows each step once after a resume: the steps logged
    after the checkpoint are purged, not shown twice."""
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import vidccnet.engine.train as tr

    out = tmp_path / "run"
    common = ("runtime.log_interval=1", "eval.interval=0", "eval.at_end=false",
              "runtime.ckpt_interval=1", "runtime.tensorboard=true", "data.kwargs.num_frames=2",
              "schedule.iterations=3")
    real_save = tr.save_checkpoint

    def save_and_keep(path, state):
        real_save(path, state)
        if Path(path).name == "last.pt" and state["iteration"] == 1:
            shutil.copy(path, tmp_path / "at1.pt")

    tr.save_checkpoint = save_and_keep
    try:
        train(tiny_cfg(out, *common))
    finally:
        tr.save_checkpoint = real_save
    shutil.copy(tmp_path / "at1.pt", out / "last.pt")  # as if it had stopped after step 3's log
    train(tiny_cfg(out, *common), resume=True)
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


def test_resume_position_counts_clips_of_all_processes() -> None:
    """The epoch position a resume continues at, per rank: from the clips of all ranks
    (``clips_in_epoch``), or from an earlier checkpoint's per-rank ``batch_in_epoch`` with its
    batch size and process count (the length of its ``rng`` list)."""
    from vidccnet.engine.train import _resume_position

    old = {"rng": [{}, {}], "config": {"data": {"batch_size": 2}}}
    assert _resume_position({"batch_in_epoch": 3}, old, world_size=1, batch_size=4) == 12
    assert _resume_position({"batch_in_epoch": 3}, old, world_size=4, batch_size=1) == 3
    assert _resume_position({"clips_in_epoch": 12}, old, world_size=3, batch_size=8) == 4
    assert _resume_position({"clips_in_epoch": 13}, old, world_size=4, batch_size=8) == 3
    assert _resume_position({}, {"rng": [{}]}, world_size=1, batch_size=2) == 0


def test_train_script_resumes_the_folder_of_the_config_it_is_given(load_script, tmp_path: Path,
                                                                    capsys) -> None:
    """A copied run folder's config.yaml still names the original folder: resuming the copy
    with ``--config COPY/config.yaml --resume`` is refused in one line (it used to continue and
    rewrite the original run), and runtime.output_dir=COPY resumes the copy."""
    import shutil

    common = ["runtime.log_interval=1", "eval.interval=0", "eval.at_end=false",
              "runtime.ckpt_interval=100", "data.kwargs.num_frames=2"]
    run, copy = tmp_path / "run", tmp_path / "copy"
    train(tiny_cfg(run, *common, "schedule.iterations=1"))
    shutil.copytree(run, copy)
    before = {n: (run / n).read_bytes() for n in ("last.pt", "config.yaml", "metrics.jsonl")}
    script = load_script("train.py")
    assert script.main(["--config", str(copy / "config.yaml"), "--resume",
                        "schedule.iterations=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runtime.output_dir=" + str(copy) in err[0], err
    assert {n: (run / n).read_bytes() for n in before} == before
    assert script.main(["--config", str(copy / "config.yaml"), f"runtime.output_dir={copy}",
                        "--resume", "schedule.iterations=2"]) == 0  # overrides around a flag
    assert load_checkpoint(copy / "last.pt")["iteration"] == 2
    assert {n: (run / n).read_bytes() for n in before} == before


def test_train_script_does_not_rewrite_the_config_file_it_reads(load_script, tmp_path: Path,
                                                               capsys) -> None:
    """A fresh run whose --config is the output folder's own config.yaml (a hand-written,
    commented config kept there) is refused: the run would replace it with the resolved
    config, overrides baked in."""
    out = tmp_path / "proj"
    out.mkdir()
    text = "# my settings\n" + (REPO / "configs" / "synthetic_tiny.yaml").read_text()
    text = text.replace("output_dir:", f"output_dir: {out}  #", 1)
    (out / "config.yaml").write_text(text)
    assert f"output_dir: {out}" in text
    script = load_script("train.py")
    assert script.main(["--config", str(out / "config.yaml"), "schedule.iterations=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rewrites" in err[0], err
    assert (out / "config.yaml").read_text() == text


def test_a_crop_larger_than_the_frames_at_any_scale_is_warned_about(caplog) -> None:
    """data.crop_size 480x480 on frames with a 64-pixel short side: even at the largest random
    rescale most of each clip is padding (slow, and trains nothing); the start says so."""
    import logging
    from types import SimpleNamespace

    from vidccnet.engine.train import _fill_frame_short_side

    frames = SimpleNamespace(frame_short_side=64)
    with caplog.at_level(logging.WARNING, logger="vidccnet.engine.train"):
        cfg = _fill_frame_short_side(load_config(None, ["data.crop_size=[48, 64]"]), frames)
        assert cfg.data.frame_short_side == 64 and not caplog.records
        _fill_frame_short_side(load_config(None, ["data.crop_size=[480, 480]",
                                                  "data.scale_range=[0.5, 2.0]"]), frames)
    assert len(caplog.records) == 1
    assert "data.crop_size 480x480" in caplog.records[0].getMessage()
    # data.crop_size null: the dataset's own default crop (the folders layout's 480x480)
    caplog.clear()
    from vidccnet.data.transforms import ClipAugment

    frames.augment = ClipAugment(crop_size=(480, 480), scale_range=(0.5, 2.0))
    with caplog.at_level(logging.WARNING, logger="vidccnet.engine.train"):
        _fill_frame_short_side(load_config(None, ["data.crop_size=null"]), frames)
    assert len(caplog.records) == 1, "the dataset's default crop was not checked"
    assert "480x480" in caplog.records[0].getMessage()


def test_an_unset_crop_size_leaves_the_datasets_own_default(monkeypatch) -> None:
    """data.crop_size null means the dataset's default crop (CamVid's 360x480 full frame, the
    synthetic world's frame size), as the config documents; it used to pass None through,
    which switched CamVid's crop off (and batches of clips of different sizes failed)."""
    import vidccnet.data as data
    from vidccnet.engine.build import build_train_dataset

    seen = {}
    monkeypatch.setattr(data, "build_dataset", lambda name, split, **kw: seen.update(kw))
    build_train_dataset(load_config(None, ["data.crop_size=null"]))
    assert "crop_size" not in seen
    build_train_dataset(load_config(None, ["data.crop_size=[32, 48]"]))
    assert seen["crop_size"] == (32, 48)


def test_train_script_interrupted_says_what_there_is_to_resume(load_script, tmp_path: Path,
                                                              monkeypatch, capsys) -> None:
    """Ctrl-C: 'continue with --resume' only when this run wrote last.pt (it was said before
    the first checkpoint too, and --resume then failed); before it, what the folder holds."""
    import os

    import vidccnet.engine.train as engine

    out = tmp_path / "run"
    args = ["--config", str(REPO / "configs/synthetic_tiny.yaml"), f"runtime.output_dir={out}",
            "runtime.overwrite=true"]

    def interrupted(save: bool):
        def fake(cfg, resume=False, name=None):
            if save:
                out.mkdir(exist_ok=True)
                (out / "last.pt").write_bytes(b"new")
            raise KeyboardInterrupt
        return fake

    script = load_script("train.py")
    for save, earlier, needle in ((False, False, "nothing to resume"),
                                  (True, False, "continue with --resume"),
                                  (False, True, "still holds the earlier run")):
        if earlier:
            (out / "last.pt").write_bytes(b"old")
            os.utime(out / "last.pt", (0, 0))
        monkeypatch.setattr(engine, "train", interrupted(save))
        assert script.main(args) == 130
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err

    # a --resume stopped before its next checkpoint: last.pt is the run it continues, not one
    # it was to replace (it said 'start again with runtime.overwrite=true', deleting the run)
    monkeypatch.setattr(engine, "train", interrupted(False))
    assert script.main([*args[:2], f"runtime.output_dir={out}", "--resume"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"train.py: interrupted; continue with --resume ({out / 'last.pt'} is kept)"]


@pytest.mark.parametrize("bad, words", [("eval.clip_stride=4", "eval.clip_stride"),
                                        ("eval.vc_windows=[0]", "eval.vc_windows")])
def test_eval_settings_that_cannot_validate_are_refused_before_training(
        tmp_path: Path, bad: str, words: str) -> None:
    """They were refused at the first validation, after the training it ends (no last.pt of
    that iteration); the message names the key."""
    out = tmp_path / "run"
    with pytest.raises((TrainingError, ValueError), match=words):
        train(tiny_cfg(out, "schedule.iterations=2", "eval.interval=2", bad))
    assert not (out / "metrics.jsonl").exists()


def test_a_fresh_start_does_not_replace_a_config_yaml_it_did_not_write(tmp_path: Path) -> None:
    """A folder holding a config.yaml (the user's, or a run's that left nothing else) is
    refused without runtime.overwrite: the run would replace the file."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("# my notes\n")
    with pytest.raises(TrainingError, match="config.yaml.*runtime.overwrite=true"):
        train(tiny_cfg(out, "schedule.iterations=1", "eval.interval=0", "eval.at_end=false"))
    assert (out / "config.yaml").read_text() == "# my notes\n"

def test_evaluation_follows_the_training_frame_stride() -> None:
    """The evaluator gets data.frame_stride (CamVid's evaluation videos are already strided
    views: 1 there); a clip_stride > 1 with it is refused at load."""
    from vidccnet.engine.build import evaluator_kwargs
    from vidccnet.engine.config import ConfigError

    assert evaluator_kwargs(tiny_cfg(Path("u"), "data.frame_stride=3"), "cpu")["frame_stride"] == 3
    assert evaluator_kwargs(tiny_cfg(Path("u")), "cpu")["frame_stride"] == 1
    camvid = load_config(REPO / "configs/camvid_ccnet3d_r50.yaml",
                         ["data.frame_stride=2", "runtime.device=cpu"])
    assert evaluator_kwargs(camvid, "cpu")["frame_stride"] == 1
    with pytest.raises(ConfigError, match="eval.clip_stride"):
        tiny_cfg(Path("u"), "data.frame_stride=2", "eval.clip_stride=2")


def test_evaluation_follows_the_training_anchor() -> None:
    """eval.anchor unset follows data.anchor, also with a shipped config (which names no
    eval.anchor): a data.anchor=centre run was validated at the causal clip position, one its
    labels never trained on (CamVid labels only the anchor frame); a set value still wins."""
    from vidccnet.engine.build import evaluator_kwargs

    assert evaluator_kwargs(tiny_cfg(Path("u"), "data.anchor=centre"), "cpu")["anchor"] == "centre"
    assert evaluator_kwargs(tiny_cfg(Path("u")), "cpu")["anchor"] == "causal"
    camvid = load_config(REPO / "configs/camvid_ccnet3d_r50.yaml",
                         ["data.anchor=centre", "runtime.device=cpu"])
    assert evaluator_kwargs(camvid, "cpu")["anchor"] == "centre"
    both = tiny_cfg(Path("u"), "data.anchor=centre", "eval.anchor=causal")
    assert evaluator_kwargs(both, "cpu")["anchor"] == "causal"


def test_no_two_runs_share_a_process_random_stream() -> None:
    """Each process seeds its RNGs (dropout draws) from (seed, rank): ``seed + rank`` gave
    rank 1 of seed 0 the stream of rank 0 of seed 1. Rank 0 keeps the seed itself (the draws
    of the single-process runs documented so far)."""
    from vidccnet.engine.train import seed_everything

    def draws(seed: int, rank: int) -> list[float]:
        seed_everything(seed, rank)
        return torch.rand(4).tolist()

    assert draws(0, 1) != draws(1, 0)
    seen = {tuple(draws(s, r)) for s in range(4) for r in range(4)}
    assert len(seen) == 16
    assert draws(5, 0) == torch.rand(4, generator=torch.Generator().manual_seed(5)).tolist()


def test_the_trainer_reads_the_device_once_per_micro_batch_and_once_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every conversion of a tensor to a Python value waits for the device (a GPU sync). The
    trainer needs one per micro-batch (its loss is checked for finiteness before its backward)
    and one for the gradients' (before the optimizer step); the loss parts stay on the device
    until a log line or a checkpoint (they were converted, one by one, at every micro-batch).
    Counted here: the conversions made in train.py and in the criterion's forward, per step.
    The loss functions' own label checks (cross_entropy, the category-consistent loss) read
    the device too; they come after the forward pass has been waited for, and are not counted."""
    import sys
    from collections import Counter

    made: Counter = Counter()
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, real=real, **kwargs):
            code = sys._getframe(1).f_code
            where = Path(code.co_filename).name
            if where == "train.py" or (where == "losses.py" and code.co_name == "forward"):
                made[where] += 1
            return real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    totals = []
    for steps in (1, 3):  # a log line and a checkpoint at the end of both: their difference
        made.clear()     # is two steps without either
        train(tiny_cfg(tmp_path / str(steps), f"schedule.iterations={steps}",
                       "optim.accum_steps=2", "loss.ohem=false", "runtime.log_interval=100",
                       "runtime.ckpt_interval=100", "eval.interval=0", "eval.at_end=false"))
        totals.append(sum(made.values()))
    assert (totals[1] - totals[0]) / 2 == 2 + 1


def test_class_names_in_the_config_that_are_not_the_datasets_are_refused(tmp_path) -> None:
    """`data.class_names=[bg,ball]` on the command line, with a dataset of other classes, was
    replaced by the dataset's names without a word (found training on one's own folders)."""
    from vidccnet.engine.train import _fill_dataset_info

    names = list(vdata.dataset_info("synthetic")["class_names"])
    cfg = load_config(None, ["data.class_names=[bg, ball]"])
    with pytest.raises(ConfigError, match=r"data\.class_names \['bg', 'ball'\].*are not the "
                                          r"dataset's.*drop data\.class_names"):
        _fill_dataset_info(cfg)
    same = _fill_dataset_info(load_config(None, [f"data.class_names={names}"]))  # a run's own
    assert same.data.class_names == names
    assert _fill_dataset_info(load_config(None, [])).data.class_names == names


def test_an_overwrite_run_cut_or_failing_at_its_first_save_leaves_one_runs_files(
        tmp_path: Path, monkeypatch) -> None:
    """An overwrite run's first checkpoint replaces the earlier run. A Ctrl-C or SIGTERM just
    after it wrote its first last.pt left that last.pt with the earlier run's config.yaml,
    best.pt and (put back) metrics.jsonl; deleting the earlier run before that save lost it
    when the save failed (a full disk). The first checkpoint is written aside, then the earlier
    run goes and the checkpoint is moved in: a failed or interrupted save leaves the earlier
    run whole, a completed one this run's files only."""
    import vidccnet.engine.train as train_module

    common = ("runtime.log_interval=1", "eval.interval=0", "runtime.ckpt_interval=100",
              "data.kwargs.num_frames=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=2"))
    earlier = sorted(p.name for p in out.iterdir() if p.name != "tb")
    assert "best.pt" in earlier
    real_save = train_module.save_checkpoint
    rerun = ("schedule.iterations=1", "eval.at_end=false", "runtime.overwrite=true")

    def disk_full(path, state):
        raise OSError(28, "No space left on device")

    def save_then_ctrl_c(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    for fake, error in ((disk_full, OSError), (save_then_ctrl_c, KeyboardInterrupt)):
        monkeypatch.setattr(train_module, "save_checkpoint", fake)
        with pytest.raises(error):
            train(tiny_cfg(out, *common, *rerun))
        remove_killed_saves(out)  # what the next start does with a save cut short
        assert sorted(p.name for p in out.iterdir() if p.name != "tb") == earlier
        assert load_checkpoint(out / "last.pt")["iteration"] == 2
        assert "iterations: 2" in (out / "config.yaml").read_text()
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    train(tiny_cfg(out, *common, *rerun))
    assert load_checkpoint(out / "last.pt")["iteration"] == 1
    assert "iterations: 1" in (out / "config.yaml").read_text()
    assert [r["iteration"] for r in _read_jsonl(out / "metrics.jsonl")] == [1]
    assert sorted(p.name for p in out.iterdir() if p.name != "tb") == [
        "config.yaml", "last.pt", "metrics.jsonl"]


def test_more_workers_than_cores_is_one_warning_naming_the_key(tmp_path: Path, caplog,
                                                              monkeypatch) -> None:
    """data.num_workers above the cores (the folders config's 8 on a laptop) printed PyTorch's
    generic multi-line UserWarning twice (once when the loader was built, once when it was
    first iterated), naming neither the config key nor the value to set."""
    import warnings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        with caplog.at_level("WARNING", logger="vidccnet.engine.train"):
            train(tiny_cfg(tmp_path / "run", "data.num_workers=2", "schedule.iterations=1",
                           "eval.at_end=false", "eval.interval=0"))
        assert warnings.filters == filters  # PyTorch's warning is silenced for the run only
    said = [r.getMessage() for r in caplog.records if "num_workers" in r.getMessage()]
    assert len(said) == 1 and "data.num_workers=2" in said[0] and "1 CPU core" in said[0]
    assert not [w for w in caught if "DataLoader will create" in str(w.message)]


def test_a_resume_with_other_model_settings_names_them(tmp_path: Path) -> None:
    """Resuming with the original config but without one of the run's model overrides said
    "do not fit the model ... was it trained with another model name or num_classes?", where
    the cause is the model setting that differs and the fix the run's own config.yaml."""
    common = ("eval.interval=0", "eval.at_end=false", "data.kwargs.num_frames=2")
    out = tmp_path / "run"
    train(tiny_cfg(out, *common, "schedule.iterations=1"))
    before = (out / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"--resume: .*last\.pt holds a model built with "
                                              r"other settings \(model\.kwargs\.head_channels: "
                                              r"16 -> 8\); resume with the run's own config, "
                                              r"--config .*config\.yaml --resume"):
        train(tiny_cfg(out, *common, "schedule.iterations=2", "model.kwargs.head_channels=8"),
              resume=True)
    assert (out / "last.pt").read_bytes() == before
