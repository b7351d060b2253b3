"""Evaluation reports: terminal table, ``eval.json`` and matplotlib plots.

``evaluate_and_report`` runs an ``Evaluator`` and writes everything a paper needs into one folder:

- ``eval.json``: every figure (fractions in [0, 1]; NaN written as null), per-class IoU by name,
  the evaluator settings and the config dict passed in;
- ``class_iou.png``: per-class IoU bars (palette colours, mIoU line);
- ``strip_<video>.png``: for one video, a strip of frames with ground truth and prediction;
- the terminal table (returned by ``format_table``; written to ``stream`` when given, else
  logged at INFO level).

Plots use matplotlib's object API on an Agg canvas, so no global backend is changed.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from vidccnet.cli import plural
from vidccnet.data.base import EvalVideo
from vidccnet.engine.evaluate import Evaluator
from vidccnet.writer import save_figure, write_atomically, write_text_atomically

__all__ = [
    "class_iou_figure",
    "colorize",
    "default_palette",
    "evaluate_and_report",
    "format_table",
    "plot_class_iou",
    "plot_video_strip",
    "to_jsonable",
    "video_strip_figure",
    "write_eval_json",
]

logger = logging.getLogger(__name__)

IGNORE_COLOUR = (255, 255, 255)  # colour of ignore_index pixels in the strip plots


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy/torch values -> Python, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value: Any) -> str:
    return "n/a" if _is_missing(value) else f"{100.0 * float(value):.2f}"


def _class_names(names: Sequence[str] | None, k: int) -> list[str]:
    if names is None:
        return [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"got {len(names)} class names for {k} classes; pass one name per class")
    return [str(n) for n in names]


def format_table(results: dict, class_names: Sequence[str] | None = None) -> str:
    """The terminal table: per-class IoU, then the summary figures (accuracies in %).

    Args:
        results: the dict returned by ``Evaluator.run``.
        class_names: one name per class (default ``class_<i>``).
    """
    iou = list(results["IoU"])
    names = _class_names(class_names, len(iou))
    width = max([len("pixel accuracy")] + [len(n) for n in names]) + 2
    lines = [f"{'class':<{width}}{'IoU %':>8}", "-" * (width + 8)]
    lines += [f"{name:<{width}}{_pct(v):>8}" for name, v in zip(names, iou)]
    lines.append("-" * (width + 8))
    rows = [("mIoU", _pct(results.get("mIoU"))), ("fwIoU", _pct(results.get("fwIoU")))]
    rows.append(("pixel accuracy", _pct(results.get("pixel_acc"))))
    if "mAcc" in results:
        rows.append(("mAcc", _pct(results["mAcc"])))
    vc_keys = [k for k in results if k.startswith("mVC_")]
    for key in sorted(vc_keys, key=lambda k: int(k[4:]) if k[4:].isdigit() else 0):
        rows.append((key, _pct(results[key])))
    if "flicker" in results:
        rows.append(("flicker", _pct(results["flicker"])))
    lines += [f"{name:<{width}}{value:>8}" for name, value in rows]
    lines += _why_unavailable(results)
    if results.get("metric_convention"):
        lines.append(f"metric convention: {results['metric_convention']} (docs/metrics.md)")
    if "frames" in results:
        fps = results.get("fps")
        lines.append(
            f"{plural(results['frames'], 'labelled frame')}, "
            f"{plural(results['videos'], 'video') if 'videos' in results else '? videos'}, "
            f"{results.get('seconds', float('nan')):.1f} s"
            + ("" if _is_missing(fps) else f" ({fps:.2f} frames/s)")
        )
    return "\n".join(lines)


def _why_unavailable(results: dict) -> list[str]:
    """Lines saying why a temporal figure (mVC_n, flicker) is n/a: they are computed on videos
    whose labelled frames are consecutive, mVC_n on those with more than n (docs/metrics.md)."""
    missing = [k for k in results
               if (k.startswith("mVC_") or k == "flicker") and _is_missing(results[k])]
    if not missing or "consecutive_videos" not in results:
        return []
    if not results["consecutive_videos"]:
        names = " and ".join([", ".join(missing[:-1]), missing[-1]] if missing[1:] else missing)
        return [f"n/a: {names} need consecutive labelled frames; these videos' labels are "
                "sparse"]
    longest = results.get("longest_consecutive", 0)
    lines = []
    for key in missing:
        if key == "flicker":
            lines.append(f"n/a: flicker needs a video of 2 or more labelled frames; the "
                         f"longest has {longest}")
        elif key[4:].isdigit() and longest <= int(key[4:]):
            lines.append(f"n/a: {key} needs a video of more than {key[4:]} labelled frames; "
                         f"the longest has {longest}")
        else:
            lines.append(f"n/a: {key}: in no window of {key[4:]} frames does a pixel keep its "
                         "ground truth")
    return lines


def write_json(path: str | Path, payload: Any, indent: int = 2) -> None:
    """Write ``to_jsonable(payload)`` as strict JSON, whole or not at all
    (:func:`vidccnet.writer.write_text_atomically`)."""
    text = json.dumps(to_jsonable(payload), indent=indent, allow_nan=False) + "\n"
    write_text_atomically(path, text)


def write_eval_json(
    path: str | Path,
    results: dict,
    class_names: Sequence[str] | None = None,
    config: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Write ``eval.json`` (strict JSON: NaN -> null) and return the dict written.

    Keys: ``metrics`` (all figures), ``class_iou`` ({name: IoU}), ``config`` (as passed),
    ``created`` (UTC ISO time) and those of ``extra``.
    """
    names = _class_names(class_names, len(results["IoU"]))
    report: dict = {
        "metrics": dict(results),
        "class_iou": dict(zip(names, results["IoU"])),
        "config": config if config is not None else {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    report.update(extra or {})
    report = to_jsonable(report)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return report


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A deterministic, well-spread palette (tab20 colours, then golden-ratio hues)."""
    import colorsys

    from matplotlib import colormaps

    tab = colormaps["tab20"]
    out = []
    for i in range(num_classes):
        if i < 20:
            r, g, b, _ = tab(i)
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.9)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def colorize(
    mask: np.ndarray | torch.Tensor,
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
) -> np.ndarray:
    """(H, W) class map -> (H, W, 3) uint8 RGB; ``ignore_index`` is white, unknown values black."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask).astype(np.int64)
    lut = np.zeros((max(len(palette), ignore_index + 1, int(mask.max(initial=0)) + 1), 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut[ignore_index] = IGNORE_COLOUR
    return lut[np.clip(mask, 0, len(lut) - 1)]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def class_iou_figure(
    iou: Sequence[float],
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    title: str | None = None,
    miou: float | None = None,
) -> Any:
    """A matplotlib figure: horizontal per-class IoU bars (%) with the mIoU as a dashed line;
    NaN classes say n/a.

    ``miou`` (a fraction) is the line's figure, e.g. the report's (its rule may leave out
    classes with an IoU); default: the mean of the classes with an IoU."""
    k = len(iou)
    names = _class_names(class_names, k)
    palette = list(palette) if palette is not None else default_palette(k)
    values = np.array([np.nan if _is_missing(v) else 100.0 * v for v in iou], dtype=np.float64)
    fig = _new_figure(7.0, max(2.5, 0.22 * k + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    ypos = np.arange(k)
    colors = [tuple(c / 255.0 for c in palette[i]) for i in range(k)]
    ax.barh(ypos, np.nan_to_num(values, nan=0.0), color=colors, edgecolor="black", linewidth=0.4)
    for y, v in zip(ypos, values):
        ax.text(
            (0.0 if np.isnan(v) else v) + 1.0,
            y,
            "n/a" if np.isnan(v) else f"{v:.1f}",
            va="center",
            fontsize=7,
        )
    miou = 100.0 * miou if miou is not None and math.isfinite(miou) else (
        float(np.nanmean(values)) if np.any(~np.isnan(values)) else None)
    if miou is not None:
        ax.axvline(miou, color="black", linestyle="--", linewidth=1.0, label=f"mIoU {miou:.1f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(ypos)
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title or "Per-class IoU")
    fig.tight_layout()
    return fig


def video_strip_figure(
    frames: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str] | None = None,
    frame_ids: Sequence[int] | None = None,
    ignore_index: int = 255,
    title: str | None = None,
) -> Any:
    """A matplotlib figure. Rows: frames (H, W, 3) uint8, ground truth (H, W), prediction
    (H, W); one column a frame.

    A legend lists the classes visible in the ground truth or the prediction.
    """
    n = len(frames)
    if n == 0 or len(gts) != n or len(preds) != n:
        raise ValueError(
            f"plot_video_strip needs as many frames, labels and predictions (got {n}, {len(gts)},"
            f" {len(preds)}), at least one"
        )
    gts = [np.asarray(g) for g in gts]
    preds = [np.asarray(p) for p in preds]
    h, w = gts[0].shape
    col_w = 2.4
    fig = _new_figure(col_w * n + 1.8, col_w * h / max(w, 1) * 3 + 0.8)
    rows = (("frame", frames), ("ground truth", gts), ("prediction", preds))
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = fig.add_subplot(3, n, r * n + c + 1)
            img = images[c] if r == 0 else colorize(images[c], palette, ignore_index)
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0 and frame_ids is not None:
                ax.set_title(f"frame {frame_ids[c]}", fontsize=8)
    values = {int(v) for m in (*gts, *preds) for v in np.unique(m)}
    present = sorted(v for v in values if v != ignore_index)
    if present or ignore_index in values:
        from matplotlib.patches import Patch

        names = list(class_names) if class_names is not None else None
        handles = [
            Patch(
                color=tuple(ch / 255.0 for ch in palette[v]) if v < len(palette) else "black",
                label=names[v] if names is not None and v < len(names) else str(v),
            )
            for v in present[:24]
        ]
        if ignore_index in values:
            colour = tuple(ch / 255.0 for ch in IGNORE_COLOUR)
            handles.append(Patch(facecolor=colour, edgecolor="black", label="ignore"))
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (col_w * n + 1.8), 1))
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path


def plot_class_iou(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """:func:`class_iou_figure` saved to ``path`` (PNG, or the format of its extension)."""
    return _save(class_iou_figure(*args, **kwargs), path)


def plot_video_strip(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """:func:`video_strip_figure` saved to ``path`` (PNG, or the format of its extension)."""
    return _save(video_strip_figure(*args, **kwargs), path)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _strip_frames(video: EvalVideo, count: int) -> list[int]:
    labelled = list(video.labelled)
    if len(labelled) <= count:
        return labelled
    if video.consecutive:  # consecutive frames show temporal (in)consistency
        return labelled[:count]
    picks = np.linspace(0, len(labelled) - 1, count).round().astype(int)
    return [labelled[i] for i in sorted(set(picks.tolist()))]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "video"


def evaluate_and_report(
    model: nn.Module,
    videos: Sequence[EvalVideo],
    out_dir: str | Path,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    config: dict | None = None,
    strip_video: str | None = None,
    strip_frames: int = 6,
    plots: bool = True,
    stream: TextIO | None = None,
    **evaluator_kwargs: Any,
) -> dict:
    """Evaluate ``model`` on ``videos`` and write the report into ``out_dir``.

    Args:
        model: clip model, (B, 3, T, H, W) -> logits (B, K, T, H, W) in eval mode.
        videos: evaluation videos (``build_eval_videos(...)``).
        out_dir: folder for ``eval.json``, ``class_iou.png``, ``strip_<video>.png`` (created).
        num_classes: K (default: ``len(class_names)``).
        class_names / palette: for the table and the plots (defaults: ``class_<i>`` and a
            generated palette).
        config: plain dict stored under ``config`` in ``eval.json`` (e.g. ``config_to_dict(cfg)``
            plus the checkpoint path).
        strip_video: name of the video for the strip plot (default: the first video with
            ``consecutive=True``, else the first video); its first (consecutive) or evenly spaced
            ``strip_frames`` labelled frames are shown.
        plots: write the PNG plots.
        stream: where to write the terminal table (e.g. ``sys.stdout``); None logs it at INFO.
        **evaluator_kwargs: ``Evaluator`` arguments: ``clip_len`` (required), ``clip_stride``,
            ``anchor``, ``scales``, ``flip``, ``crop_size``, ``device``, ``amp``,
            ``ignore_index``, ``vc_windows``, ``batch_size``, ``frame_stride``,
            ``metric_convention`` (``Evaluator``'s default is "mmseg" whatever the data: pass
            "vspw" for VSPW's official mIoU; ``scripts/evaluate.py`` picks it from the
            dataset, ``vidccnet.engine.build.evaluator_kwargs``), ``vc_labelled_only``.

    Returns:
        The dict written to ``eval.json``: ``metrics`` (``Evaluator.run`` figures, NaN -> None),
        ``class_iou``, ``config``, ``evaluator`` (its settings), ``metric_convention`` (its name,
        "vspw" or "mmseg"; ``evaluator`` holds the ``miou_over`` it implies and the mVC's
        ``vc_count_ignored``), ``files`` (paths written), ``created``.
    """
    if num_classes is None:
        if class_names is None:
            raise ValueError("evaluate_and_report needs num_classes or class_names")
        num_classes = len(class_names)
    names = _class_names(class_names, num_classes)
    palette = list(palette) if palette is not None else default_palette(num_classes)
    if len(palette) < num_classes:
        raise ValueError(f"palette has {len(palette)} colours for {num_classes} classes")
    out_dir = Path(out_dir)
    evaluator = Evaluator(num_classes=num_classes, **evaluator_kwargs)
    results = evaluator.run(model, videos)

    table = format_table(results, names)
    if stream is not None:
        stream.write(table + "\n")
        stream.flush()
    else:
        logger.info("evaluation results\n%s", table)

    # everything is computed before the first file is written: an interrupted evaluation
    # leaves no folder, or an earlier report whole
    strip = None
    if plots:
        chosen = None
        if strip_video is not None:
            chosen = next((v for v in videos if v.name == strip_video), None)
            if chosen is None:
                raise ValueError(
                    f"strip_video {strip_video!r} is not among the evaluated videos; "
                    f"e.g. {[v.name for v in videos[:3]]}"
                )
        else:
            chosen = next((v for v in videos if v.consecutive and v.labelled), None)
            chosen = chosen or next((v for v in videos if v.labelled), None)
        if chosen is not None and strip_frames > 0:
            ids = _strip_frames(chosen, strip_frames)
            was_training = model.training
            try:
                preds = {i: p.cpu().numpy() for i, p in evaluator.predict_video(model, chosen, ids)}
            finally:
                model.train(was_training)
            strip = (chosen, ids, [np.asarray(chosen.load_frame(i)) for i in ids],
                     [np.asarray(chosen.load_label(i)) for i in ids], [preds[i] for i in ids])

    # the plots too are drawn first, and written after eval.json, which lists them: a folder
    # never holds a plot its eval.json does not list (evaluate.py refuses such a folder)
    pictures: dict[str, tuple[Path, bytes]] = {}
    if plots:
        pictures["class_iou"] = (out_dir / "class_iou.png", _png(class_iou_figure(
            results["IoU"], names, palette, miou=results["mIoU"])))
    if strip is not None:
        chosen, ids, frames, labels, predicted = strip
        pictures["strip"] = (out_dir / f"strip_{_safe_name(chosen.name)}.png", _png(
            video_strip_figure(frames, labels, predicted, palette, class_names=names,
                               frame_ids=ids, ignore_index=evaluator.ignore_index,
                               title=chosen.name)))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {key: str(path) for key, (path, _) in pictures.items()}
    files["eval_json"] = str(out_dir / "eval.json")
    report = write_eval_json(
        out_dir / "eval.json",
        results,
        names,
        config,
        extra={
            "evaluator": evaluator.config(),
            "metric_convention": evaluator.metric_convention,
            "files": files,
        },
    )
    for path, data in pictures.values():
        write_atomically(path, lambda f, data=data: f.write(data))
    return report
