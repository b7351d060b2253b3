"""Checkpoints: atomic writes, weights_only loading, clear errors, RNG capture, model rebuild."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vidccnet.engine import checkpoint as ck
from vidccnet.engine.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from vidccnet.engine.config import config_to_dict, load_config

TINY_MODEL = ["model.name=ccnet3d_resnet18", "model.kwargs.head_channels=16",
              "data.class_names=[a, b, c]", "data.palette=[[0, 0, 0], [9, 9, 9], [5, 5, 5]]"]


def _state(**extra) -> dict:
    return {"model": {"w": torch.arange(4.0)}, "config": {}, "version": 1, "iteration": 3,
            "metrics": {"mIoU": 0.5}, **extra}


def test_save_load_round_trip_weights_only(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "last.pt"
    save_checkpoint(p, _state(rng=[capture_rng_state()]))
    got = load_checkpoint(p)
    assert torch.equal(got["model"]["w"], torch.arange(4.0)) and got["iteration"] == 3
    # the file really is loadable by plain torch.load(weights_only=True)
    torch.load(p, weights_only=True)
    assert [f.name for f in p.parent.iterdir()] == ["last.pt"]  # no temp files left


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "last.pt"
    save_checkpoint(p, _state())
    before = p.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, _state(iteration=99))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]


def _no_unsafe_advice(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for bad in ("weights_only", "trust", "add_safe_globals", "PyTorch 2.6"):
        assert bad not in msg, msg
    return msg


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a torch file")
    with pytest.raises(CheckpointError,
                       match=r"cannot be read: it is not a vidccnet checkpoint \(wrong") as e:
        load_checkpoint(bad)
    _no_unsafe_advice(e)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot be read: the file is empty") as e:
        load_checkpoint(empty)
    _no_unsafe_advice(e)
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state())
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot be read: it is truncated or damaged") as e:
        load_checkpoint(truncated)
    _no_unsafe_advice(e)
    other_zip = tmp_path / "other.pt"
    import zipfile

    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError,
                       match="zip archive but not a PyTorch file, so not a vidccnet") as e:
        load_checkpoint(other_zip)
    _no_unsafe_advice(e)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a vidccnet checkpoint"):
        load_checkpoint(plain)
    newer = tmp_path / "newer.pt"
    torch.save(_state(version=ck.CHECKPOINT_VERSION + 1), newer)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(newer)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_file_mode_follows_the_umask(tmp_path: Path, umask: int) -> None:
    import os
    import stat

    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "last.pt", _state())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == 0o666 & ~umask


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pt"
    torch.save(_state(metrics={"x": _Evil()}), p, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="Python objects other than tensors") as e:
        load_checkpoint(p)
    _no_unsafe_advice(e)


def test_rng_state_capture_restore() -> None:
    state = capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, current: int) -> list:
    """``count`` CUDA generators (16-byte states, device i's filled with i), the current
    device ``current``; returns the list of (device, state) that set_rng_state* wrote."""
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(count)]
    written: list = []

    def index(device) -> int:
        return current if device == "cuda" else int(device)

    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: count)
    monkeypatch.setattr(cuda, "current_device", lambda: current)
    monkeypatch.setattr(cuda, "get_rng_state", lambda device="cuda": states[index(device)])
    monkeypatch.setattr(cuda, "get_rng_state_all", lambda: list(states))
    monkeypatch.setattr(cuda, "set_rng_state", lambda state, device="cuda": written.append(
        (index(device), state)))
    monkeypatch.setattr(cuda, "set_rng_state_all", lambda new: written.extend(enumerate(new)))
    return written


def test_cuda_rng_state_follows_the_process_not_the_gpu_index(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process draws on its own GPU (cuda:LOCAL_RANK under torchrun): its checkpoint keeps
    that GPU's CUDA RNG state, which a resume restores to the GPU it runs on. Every GPU's
    states restored by index were dropped when the resumed run saw another number of GPUs
    (one per process with CUDA_VISIBLE_DEVICES), and went to another rank's GPU when the
    ranks' GPUs changed (2 nodes x 4 GPUs resumed on 1 x 8)."""
    _fake_gpus(monkeypatch, count=4, current=1)  # local rank 1 of a node with 4 GPUs
    state = capture_rng_state()
    written = _fake_gpus(monkeypatch, count=1, current=0)  # resumed alone on its own GPU
    restore_rng_state(state)
    assert [(i, s.tolist()) for i, s in written] == [(0, [1] * 16)]
    # a checkpoint of earlier versions (every GPU's states) is still restored by index
    written = _fake_gpus(monkeypatch, count=2, current=1)
    restore_rng_state({**state, "cuda": [torch.full((16,), 7, dtype=torch.uint8)] * 2})
    assert [(i, s[0].item()) for i, s in written] == [(0, 7), (1, 7)]


def test_build_model_from_checkpoint_and_mismatch(tmp_path: Path) -> None:
    cfg = load_config(None, TINY_MODEL)
    from vidccnet.engine.train import build_model

    torch.manual_seed(0)
    model = build_model(cfg, 3, pretrained=False)
    ckpt = {"model": model.state_dict(), "config": config_to_dict(cfg), "version": 1}
    rebuilt, got_cfg = build_model_from_checkpoint(ckpt, "cpu")
    assert got_cfg == cfg and not rebuilt.training
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v)
    # the same weights under another model's config (more head channels) -> clear error
    other = load_config(None, [*TINY_MODEL[:1], "model.kwargs.head_channels=32", *TINY_MODEL[2:]])
    with pytest.raises(CheckpointError, match="do not fit the model.*shape"):
        build_model_from_checkpoint({**ckpt, "config": config_to_dict(other)}, "cpu")
    with pytest.raises(CheckpointError, match="missing"):
        load_model_weights(model, {k: v for k, v in ckpt["model"].items() if "head" not in k})
    with pytest.raises(CheckpointError, match="config is invalid"):
        build_model_from_checkpoint({**ckpt, "config": {"optim": {"lrr": 1}}}, "cpu")


def test_rebuilding_a_model_does_not_import_the_trainer() -> None:
    """build_model lives with the models: the checkpoint code has no import of engine/train.py
    (not even a local one), and the old import path still gives the same function."""
    import ast

    tree = ast.parse(Path(ck.__file__).read_text())
    sources = [(n.module or "", n.level) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    sources += [(a.name, 0) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m, level in sources
                if (level == 1 and m == "train") or m == "vidccnet.engine.train"], sources
    from vidccnet.engine.train import build_model as old
    from vidccnet.models.build import build_model

    assert old is build_model


def test_init_from_names_the_backbone_option_that_differs(tmp_path):
    """A checkpoint of another backbone width was told to set model.kwargs.stem."""
    from vidccnet.engine.checkpoint import CheckpointError, init_model_from_checkpoint
    from vidccnet.models import create_model

    src = create_model("ccnet3d_resnet18", 3, backbone_width=8, head_channels=16)
    path = tmp_path / "src.pt"
    torch.save({"model": src.state_dict(), "version": 1, "config": {"model": {
        "name": "ccnet3d_resnet18", "kwargs": {"backbone_width": 8, "head_channels": 16}}}},
        path)
    model = create_model("ccnet3d_resnet18", 3, head_channels=16, backbone_width=16)
    with pytest.raises(CheckpointError, match="set model.kwargs.backbone_width=8 to match") as e:
        init_model_from_checkpoint(model, path, {"head_channels": 16, "backbone_width": 16})
    assert "stem" not in str(e.value)
    model = create_model("ccnet3d_resnet50", 3, backbone_width=8, head_channels=16)
    with pytest.raises(CheckpointError, match="use the depth of its ccnet3d_resnet18"):
        init_model_from_checkpoint(model, path, {"backbone_width": 8, "head_channels": 16})


def test_a_run_folder_is_named_as_a_folder_with_the_checkpoint_to_pass(tmp_path: Path) -> None:
    """--checkpoint RUNDIR said 'not found': it is a folder, and its best.pt / last.pt are
    what to pass."""
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file; pass a \.pt "
                                              r"file written by scripts/train\.py"):
        load_checkpoint(run)
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=f"is a folder.*pass '{run / 'last.pt'}'$"):
        load_checkpoint(run)
    (run / "best.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=f"pass '{run / 'best.pt'}' \\(or "
                                              f"'{run / 'last.pt'}'\\)$"):
        load_checkpoint(run)
