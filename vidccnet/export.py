"""ONNX export of vidccnet models with dynamic batch, clip length and frame size.

    from vidccnet.export import export_onnx
    export_onnx(model, "model.onnx")           # input "clip" (B, 3, T, H, W) -> "logits"

`torch.onnx.export(model, (clip,), dynamo=True)` works on any vidccnet model where the exporter
says it exports (torch 2.14; not 2.6 / 2.7): while it traces, `criss_cross_attention` runs the
standard-op formulation of `vidccnet.ops.export` instead of the custom op (which has no ONNX
translation). `export_onnx` switches to that formulation itself, on every torch, and adds what
a deployment wants: an eval-mode float32 model, the named dimensions B, T, H, W kept symbolic,
stable input / output names, an atomic write and an optional check against PyTorch with
onnxruntime.

Exported graphs accept B >= 1, T >= 1, H, W >= `MIN_SIZE`. The example clip of a dynamic
export needs B >= 2 and T >= `MIN_FRAMES` (3): the exporter fixes a dimension of example size 1
into the graph, and the temporal shift slices the T - 1 frame pairs of a clip, so an example
with T = 2 (one pair) fixes T as well.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .ops.export import export_formulation

__all__ = ["MIN_FRAMES", "MIN_OPSET", "MIN_SIZE", "compare_onnx", "dynamic_shapes", "export_onnx"]

logger = logging.getLogger(__name__)

MIN_FRAMES = 3  # smallest T of a dynamic export's example clip (the graph takes T >= 1)
MIN_SIZE = 16  # smallest frame height / width of a dynamic export (2 feature rows at stride 8)
MIN_OPSET = 18  # oldest opset torch.onnx's dynamo exporter writes (older ones: a conversion)
DEFAULT_EXAMPLE = (2, 3, 4, 64, 64)  # (B, 3, T, H, W): B, T above the tracer's 0/1 special cases


def dynamic_shapes(max_size: int = 8192) -> dict[str, dict[int, Any]]:
    """`dynamic_shapes` for `torch.export` / `torch.onnx.export` of a model's `clip` argument."""
    Dim = torch.export.Dim
    return {
        "clip": {
            0: Dim("B", min=1, max=1024),
            2: Dim("T", min=1, max=1024),
            3: Dim("H", min=MIN_SIZE, max=max_size),
            4: Dim("W", min=MIN_SIZE, max=max_size),
        }
    }


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example: Tensor | tuple[int, ...] = DEFAULT_EXAMPLE,
    dynamic: bool = True,
    opset: int | None = None,
    optimize: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export `model` (clip -> logits) to an ONNX file, written atomically.

    Args:
        model: a vidccnet model (any `nn.Module` taking one clip (B, 3, T, H, W) and returning
            logits (B, K, T, H, W) in eval mode). It is exported in eval mode, float32, on CPU;
            the module itself is left in the mode, dtype and device it had.
        path: destination `.onnx` file (the folder must exist).
        example: an example clip, or its shape (B, 3, T, H, W). With `dynamic=True` use
            B >= 2 and T >= `MIN_FRAMES` (smaller values would be fixed into the graph).
        dynamic: keep B, T, H, W symbolic (input shape `[B, 3, T, H, W]`); False fixes the
            example's shape.
        opset: ONNX opset, ``MIN_OPSET`` (18) or later (default: the exporter's; 20 with
            torch 2.14).
        optimize: run the exporter's graph optimiser (constant folding, fusion).
        metadata: strings stored in the model's `metadata_props` (e.g. class names as JSON).

    Returns:
        The path written.

    Raises:
        ValueError: a bad example shape or a missing destination folder.
        RuntimeError: the exporter failed (its message is kept).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"output folder '{path.parent}' does not exist")
    if opset is not None and int(opset) < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is older than torch.onnx's exporter writes (its conversion to older "
            f"opsets fails and keeps {MIN_OPSET}); use opset {MIN_OPSET} or later"
        )
    if opset is not None and int(opset) > (newest := _newest_opset()):
        raise ValueError(f"opset {opset} is newer than the installed onnx knows ({newest}); "
                         f"use opset {MIN_OPSET} to {newest}, or upgrade onnx")
    clip = _example_clip(example, dynamic)
    module = _ExportView(model)
    kwargs: dict[str, Any] = dict(
        dynamo=True,
        input_names=["clip"],
        output_names=["logits"],
        optimize=optimize,
        verbose=False,
    )
    if dynamic:
        kwargs["dynamic_shapes"] = dynamic_shapes()
    if opset is not None:
        kwargs["opset_version"] = int(opset)
    was_training = model.training
    module.eval()  # also puts `model` in eval mode
    try:
        with export_formulation():  # torch 2.6 / 2.7's exporter does not say that it exports
            program = torch.onnx.export(module, (clip,), **kwargs)
    finally:
        model.train(was_training)
    for key, value in (metadata or {}).items():
        program.model.metadata_props[str(key)] = str(value)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
    try:
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def _newest_opset() -> int:
    """The newest ONNX opset the installed onnx package knows."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def compare_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    clips: list[Tensor],
    providers: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the ONNX file with onnxruntime and `model` (eval, float32, CPU) on each clip.

    Args:
        model: the PyTorch model that was exported.
        path: the `.onnx` file.
        clips: float32 clips (B, 3, T, H, W).
        providers: onnxruntime execution providers (default: CPU).

    Returns:
        Per clip: {"shape": clip shape, "max_abs_diff": max |onnx - torch| over the logits,
        "max_abs_logit": max |torch logit|}.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    module = _ExportView(model)
    diffs = []
    was_training = model.training
    module.eval()
    try:
        for clip in clips:
            clip = clip.detach().to("cpu", torch.float32)
            with torch.no_grad():
                ref = module(clip).numpy()
            got = session.run(None, {name: clip.numpy()})[0]
            if got.shape != ref.shape:
                raise RuntimeError(
                    f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}"
                )
            diffs.append({
                "shape": tuple(clip.shape),
                "max_abs_diff": float(np.abs(got - ref).max()),
                "max_abs_logit": float(np.abs(ref).max()),
            })
    finally:
        model.train(was_training)
    return diffs


class _ExportView(nn.Module):
    """`model` on CPU in float32, its parameters shared (nothing copied when already so)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        param = next(model.parameters(), None)
        if param is not None and (param.device.type != "cpu" or param.dtype != torch.float32):
            raise ValueError(
                f"export a float32 CPU model (got {param.dtype} on {param.device}); "
                "call model.float().cpu() first"
            )
        self.model = model

    def forward(self, clip: Tensor) -> Tensor:
        out = self.model(clip)
        return out["out"] if isinstance(out, dict) else out


def _example_clip(example: Tensor | tuple[int, ...], dynamic: bool) -> Tensor:
    clip = example if isinstance(example, Tensor) else None
    shape = tuple(clip.shape) if clip is not None else tuple(int(s) for s in example)
    if len(shape) != 5 or shape[1] != 3:
        raise ValueError(f"example must be a clip (B, 3, T, H, W), got shape {shape}")
    if dynamic and (shape[0] < 2 or shape[2] < MIN_FRAMES or min(shape[3:]) < MIN_SIZE):
        raise ValueError(
            f"a dynamic export needs an example with B >= 2, T >= {MIN_FRAMES} and H, W >= "
            f"{MIN_SIZE} (smaller values are fixed into the graph); got {shape}"
        )
    if clip is None:
        clip = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return clip.detach().to("cpu", torch.float32)
