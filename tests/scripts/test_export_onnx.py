"""scripts/export_onnx.py: one-line errors before anything is loaded, and a ccnet3d export whose
onnxruntime logits match PyTorch's (fp32, 1e-4) at the export shape and at other B, T, H, W."""

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
NAMES = ["sky", "road", "car"]


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("export_onnx")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, save_tiny_checkpoint):
    def prepare(model):
        torch.nn.init.constant_(model.head.cca.cca.gamma, 0.8)  # let the attention act
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)

    return save_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.pt", NAMES,
        model={"name": "ccnet3d_resnet18", "kwargs": {"head_channels": 16}},
        data={"clip_len": 3}, prepare=prepare,
    )


def _one_line_error(capsys, needle):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("export_onnx.py: error:"), err
    assert needle in err, err


@pytest.mark.parametrize("case, needle", [
    ("missing", "nope.pt"),
    ("corrupt", "bad.pt"),
    ("not_onnx", "must end in .onnx"),
    ("no_folder", "does not exist"),
    ("small_dynamic_example", "or pass --static"),
    ("negative_tolerance", "--tolerance must be > 0"),
    ("old_opset", "use opset 18 or later"),
    ("future_opset", "newer than the installed onnx"),  # wrote opset 18, exit 0, a traceback
])
def test_expected_errors_are_one_line_exit_2(script, ckpt, tmp_path, capsys, case, needle):
    out = tmp_path / "model.onnx"
    src = ckpt
    extra = {"small_dynamic_example": ["--example", "1", "5", "64", "64"],
             "negative_tolerance": ["--tolerance", "-1"],
             "old_opset": ["--opset", "9"],
             "future_opset": ["--opset", "99"]}.get(case, [])
    if case == "missing":
        src = tmp_path / "nope.pt"
    elif case == "corrupt":
        src = tmp_path / "bad.pt"
        src.write_bytes(b"\x00not a checkpoint" * 10)
    elif case == "not_onnx":
        out = tmp_path / "model.pt"
    elif case == "no_folder":
        out = tmp_path / "missing" / "model.onnx"
    assert script.main([str(src), "--out", str(out), *extra]) == 2
    _one_line_error(capsys, needle)
    assert list(tmp_path.iterdir()) in ([], [src])  # nothing written


def test_an_existing_out_file_is_kept_without_overwrite(script, ckpt, tmp_path, capsys):
    """An existing --out was replaced without a word (convert_checkpoint.py and
    segment_video.py's --overlay refuse theirs without --overwrite)."""
    out = tmp_path / "model.onnx"
    out.write_text("my important model")
    assert script.main([str(ckpt), "--out", str(out)]) == 2
    _one_line_error(capsys, "exists; pass --overwrite to replace it")
    assert out.read_text() == "my important model"
    args = script.parse_args([str(ckpt), "--out", str(out), "--overwrite"])
    assert script.check_paths(args) == (ckpt, out)


def test_an_out_folder_without_write_permission_is_refused(script, ckpt, tmp_path, capsys,
                                                            monkeypatch):
    """The same one line as every other script's (vidccnet.cli.unwritable), before anything is
    loaded. The tests run as root, where permission bits do not bite: os.access is replaced."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    out = locked / "model.onnx"
    assert script.main([str(ckpt), "--out", str(out)]) == 2
    _one_line_error(capsys, f"--out {out}: no permission to write in '{locked}'")
    assert list(locked.iterdir()) == []


def test_missing_export_packages_are_named(script, ckpt, tmp_path, capsys, monkeypatch):
    real = script.importlib.util.find_spec
    monkeypatch.setattr(script.importlib.util, "find_spec",
                        lambda name: None if name == "onnxruntime" else real(name))
    out = tmp_path / "model.onnx"
    assert script.main([str(ckpt), "--out", str(out), "--check"]) == 2
    _one_line_error(capsys, "onnxruntime not installed: pip install -e '.[export]'")
    assert not out.exists()


def test_export_matches_pytorch_with_dynamic_shapes(script, ckpt, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vidccnet.engine.checkpoint import build_model_from_checkpoint, load_checkpoint

    out = tmp_path / "model.onnx"
    # --no-optimize keeps the test fast; the optimiser only rewrites the graph (same operators)
    assert script.main([str(ckpt), "--out", str(out), "--check", "--no-optimize"]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "max |onnx - torch|" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary left

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "clip" and inp.shape == ["B", 3, "T", "H", "W"]
    assert outp.name == "logits"
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["vidccnet.class_names"]) == NAMES

    model, _ = build_model_from_checkpoint(load_checkpoint(ckpt), "cpu")
    g = torch.Generator().manual_seed(1)
    # the export shape (2, 3, 3, 64, 64) and others: B = 1, 3; T = 1, 2, 3, 5; H, W not
    # multiples of 8
    for shape in [(2, 3, 3, 64, 64), (1, 3, 5, 40, 56), (3, 3, 3, 17, 30), (1, 3, 1, 24, 32),
                  (2, 3, 2, 32, 24)]:
        clip = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = model(clip).numpy()
        got = session.run(None, {"clip": clip.numpy()})[0]
        assert got.shape == ref.shape == (shape[0], len(NAMES), *shape[2:])
        assert abs(got - ref).max() <= 1e-4, shape


def test_library_export_refuses_an_opset_the_exporter_cannot_write(tmp_path):
    """torch.onnx's exporter writes opset 18+; asked for opset 9 it logged a failed conversion and
    wrote opset 18 anyway."""
    from vidccnet.export import MIN_OPSET, export_onnx

    with pytest.raises(ValueError, match=f"use opset {MIN_OPSET} or later"):
        export_onnx(torch.nn.Identity(), tmp_path / "m.onnx", opset=9)
    with pytest.raises(ValueError, match="newer than the installed onnx"):
        export_onnx(torch.nn.Identity(), tmp_path / "m.onnx", opset=99)
    assert not any(tmp_path.iterdir())


def test_sigterm_leaves_no_temporary_file(script, ckpt, tmp_path, capsys, monkeypatch,
                                          main_under_sigterm):
    """SIGTERM (a job's time limit, ``timeout``) during the check: exit 143, one line, and
    neither the output nor the exported temporary file next to it (the process died with
    ``.model.PID.check.onnx`` left behind, tens of MB for a real model)."""
    import os
    import signal

    import vidccnet.export

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(vidccnet.export, "compare_onnx", killed)
    rc = main_under_sigterm(script.main, [str(ckpt), "--out", str(tmp_path / "model.onnx"),
                                          "--check"])
    err = capsys.readouterr().err
    assert rc == 143 and err.count("\n") == 1 and "terminated (SIGTERM)" in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_export_is_on_disk_before_it_takes_the_name(script, ckpt, tmp_path, capsys,
                                                         monkeypatch):
    """The exported file was renamed into place without fsync: after a power cut the name
    could hold an empty file (vidccnet.writer.write_atomically syncs; this did not)."""
    import os

    import vidccnet.export

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def exported(model, path, **kwargs):
        Path(path).write_bytes(b"onnx")

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(src).name))
        real_replace(src, dst)

    monkeypatch.setattr(vidccnet.export, "export_onnx", exported)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "model.onnx"
    assert script.main([str(ckpt), "--out", str(out)]) == 0, capsys.readouterr().err
    tmp = f".model.{os.getpid()}.check.onnx"
    assert events == [("fsync", tmp), ("replace", tmp)], events
    assert out.read_bytes() == b"onnx"


def test_a_run_folder_as_checkpoint_names_its_best_pt(script, tmp_path, capsys):
    """A run folder passed as the checkpoint said 'not found': it is a folder, and its best.pt
    is what to pass."""
    (tmp_path / "best.pt").write_bytes(b"x")
    assert script.main([str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, f"is a folder, not a checkpoint file; pass '{tmp_path / 'best.pt'}'")
