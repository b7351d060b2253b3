"""Checkpoints: atomic save, safe (``weights_only``) load, model rebuild, RNG state capture.

A checkpoint is a plain dict (see docs/design.md, "Checkpoints")::

    {"model": state_dict, "optimizer": ..., "lr_scheduler": ..., "scaler": ... or None,
     "iteration": int, "config": config_to_dict(cfg), "metrics": dict, "version": int,
     "rng": [per-rank RNG states] (training checkpoints), "train_state": {...}}

Everything in it is tensors, numbers, strings, lists and dicts, so ``torch.load(...,
weights_only=True)`` reads it without executing code.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidccnet.cli import checkpoint_in_folder
from vidccnet.writer import write_atomically

from .config import Config, ConfigError, config_from_dict

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "build_model_from_checkpoint",
    "capture_rng_state",
    "init_model_from_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "config", "version")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of the wrong format or does not fit the model."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (:func:`vidccnet.writer.write_atomically`).

    The dict is saved to a temporary file in the same directory, flushed to disk and renamed over
    ``path`` with ``os.replace``; a crash while saving leaves the previous file untouched. The
    file gets the mode a plain ``open()`` would give it (0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: torch.save(state, f))


def remove_killed_saves(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.NAME.pt.*.tmp``, ``.config.yaml.*.tmp``,
    ``.metrics.jsonl.*.tmp``) that saves and rewrites of a run folder killed by SIGKILL or a
    power cut left in ``folder``; returns them. A save that returns or raises leaves none."""
    stale = sorted(p for pattern in (".*.pt.*.tmp", ".config.yaml.*.tmp", ".metrics.jsonl.*.tmp")
                   for p in Path(folder).glob(pattern))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _why_unreadable(path: Path, exc: BaseException) -> str:
    """What ``path`` is not, for a file ``torch.load(weights_only=True)`` refused: empty,
    truncated, another format, or a pickle of arbitrary objects. Never suggests an unsafe load."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    lead = f"checkpoint '{path}' cannot be read:"
    if size == 0:
        return f"{lead} the file is empty, not a vidccnet checkpoint"
    if head == b"PK\x03\x04":  # a zip archive, the format torch.save writes
        if not zipfile.is_zipfile(path):
            return (
                f"{lead} it is truncated or damaged (it starts like a PyTorch file, a zip "
                f"archive, but the archive is incomplete: {size} bytes); copy it again or use "
                "another checkpoint"
            )
        with zipfile.ZipFile(path) as z:
            is_torch = any(n.endswith("/data.pkl") for n in z.namelist())
        if not is_torch:
            return (
                f"{lead} it is a zip archive but not a PyTorch file, so not a vidccnet "
                "checkpoint"
            )
    elif head[:1] != b"\x80":  # neither zip nor pickle (the legacy torch.save format)
        return (
            f"{lead} it is not a vidccnet checkpoint (wrong format: not a PyTorch file; it "
            f"starts with {head!r})"
        )
    if isinstance(exc, pickle.UnpicklingError):
        return (
            f"{lead} it is not a vidccnet checkpoint (the safe loader refuses its contents: "
            "Python objects other than tensors, numbers, strings, lists and dicts, which is all "
            "a vidccnet checkpoint holds); it was not loaded, because unpickling such objects "
            "can run code"
        )
    return (
        f"{lead} it is truncated or damaged (a PyTorch file whose contents cannot be read: "
        f"{type(exc).__name__}); copy it again or use another checkpoint"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; ``mmap=True`` maps the tensors
    instead of reading them (to look at the small entries of a large file).

    Raises:
        CheckpointError: the file does not exist, is empty, truncated or damaged, is not a
            PyTorch file, holds arbitrary Python objects (never unpickled) or lacks the keys of
            a vidccnet checkpoint (``model``, ``config``, ``version``). The message says which.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint '{path}' is a folder, not a checkpoint file; {checkpoint_in_folder(path)}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' not found; train one with scripts/train.py (it writes "
            "OUTPUT_DIR/best.pt and last.pt) or pass the right path"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        # torch's own message advises retrying with weights_only=False: wrong for a damaged
        # file and unsafe for a foreign one, so say what the file is instead
        raise CheckpointError(_why_unreadable(path, exc)) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"'{path}' is not a vidccnet checkpoint (needs keys {', '.join(REQUIRED_KEYS)}; "
            f"found {keys})"
        )
    check_version(ckpt, f"checkpoint '{path}'")
    return ckpt


def check_version(ckpt: dict, what: str = "the checkpoint") -> None:
    """Refuse a checkpoint of a newer format than this code reads (no ``version``: current)."""
    version = ckpt.get("version", CHECKPOINT_VERSION)
    if int(version) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{what} has format version {version}, newer than this code supports "
            f"({CHECKPOINT_VERSION}); update vidccnet"
        )


def load_model_weights(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """``model.load_state_dict(state_dict)`` with a clear error when they do not fit.

    Raises:
        CheckpointError: missing / unexpected parameter names or shape mismatches.
    """
    own = model.state_dict()
    optional = tuple(getattr(model, "training_only_prefixes", ()))  # loads without them
    missing = [k for k in own if k not in state_dict and not k.startswith(optional)]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]})")
        raise CheckpointError(
            f"the weights in {source} do not fit the model: {'; '.join(parts)}; was it trained "
            "with another model name or num_classes?"
        )
    model.load_state_dict(state_dict)


# Model kwargs that change the computation but no parameter shape: a mismatch loads silently.
_SHAPE_FREE_KWARGS = ("head_activation", "contract_dilation")
_BACKBONE_SHAPE_KWARGS = ("stem", "backbone_width")  # besides the depth (the model name)


def init_model_from_checkpoint(
    model: nn.Module, path: str | Path, model_kwargs: dict | None = None
) -> dict[str, list[str]]:
    """Initialise ``model`` from the weights of the vidccnet checkpoint at ``path``.

    The backbone (``backbone.*``) must match exactly (every tensor present, same shape). Other
    tensors are copied where name and shape match; the rest keep their initialisation and are
    reported: ``reinitialised`` (shape differs, e.g. classifiers for another class count),
    ``missing`` (not in the file, e.g. layers the source model did not have) and ``unused``
    (in the file, not in the model). ``model_kwargs`` (the ``create_model`` kwargs of the new
    model) are compared with the checkpoint's for settings that change no shape (head
    activation, dilation), which are logged as warnings when they differ.

    Returns:
        ``{"loaded": [...], "reinitialised": [...], "missing": [...], "unused": [...]}``.

    Raises:
        CheckpointError: unreadable checkpoint, or a backbone that does not fit (the message
            names the checkpoint's model and kwargs so that the config can match them).
    """
    ckpt = load_checkpoint(path)
    state = ckpt["model"]
    src_model = ckpt.get("config", {}).get("model", {}) if isinstance(ckpt.get("config"), dict) \
        else {}
    src_kwargs = dict(src_model.get("kwargs") or {})
    own = model.state_dict()
    bad = [
        k for k, v in own.items()
        if k.startswith("backbone.") and (k not in state or tuple(state[k].shape) != tuple(v.shape))
    ]
    if bad:
        from vidccnet.models.ccnet import CCNet  # here: the models import torchvision

        defaults = inspect.signature(CCNet).parameters
        fix = [f"model.kwargs.{k}={src_kwargs.get(k, defaults[k].default)}"
               for k in _BACKBONE_SHAPE_KWARGS
               if src_kwargs.get(k, defaults[k].default)
               != (model_kwargs or {}).get(k, defaults[k].default)]
        name = src_model.get("name", "?")
        raise CheckpointError(
            f"model.init_from={path}: {len(bad)} backbone tensors are missing or of another shape "
            f"(e.g. {bad[0]}); the checkpoint holds a {name} built with {src_kwargs}: "
            + (f"set {', '.join(fix)} to match" if fix else f"use the depth of its {name}")
        )
    report: dict[str, list[str]] = {"loaded": [], "reinitialised": [], "missing": [], "unused": []}
    take = {}
    optional = tuple(getattr(model, "training_only_prefixes", ()))  # fresh in a new run anyway
    for k, v in own.items():
        if k not in state:
            if not k.startswith(optional):
                report["missing"].append(k)
        elif tuple(state[k].shape) != tuple(v.shape):
            report["reinitialised"].append(k)
        else:
            take[k] = state[k]
            report["loaded"].append(k)
    report["unused"] = [k for k in state if k not in own]
    model.load_state_dict(take, strict=False)
    from vidccnet.models.ccnet import CCNet  # here: the models import torchvision

    defaults = inspect.signature(CCNet).parameters
    for key in _SHAPE_FREE_KWARGS:  # compare the values in use, defaults included
        mine = (model_kwargs or {}).get(key, defaults[key].default)
        theirs = src_kwargs.get(key, defaults[key].default)
        if mine != theirs:
            logger.warning(
                "model.init_from: the checkpoint was trained with %s=%r, this model uses %r "
                "(set model.kwargs.%s=%s to match)", key, theirs, mine, key, theirs,
            )
    logger.info(
        "model.init_from=%s: loaded %d tensors; %d re-initialised (other shape: %s); "
        "%d not in the file (%s); %d in the file unused (%s)",
        path, len(report["loaded"]), len(report["reinitialised"]),
        ", ".join(report["reinitialised"][:6]) or "-", len(report["missing"]),
        ", ".join(report["missing"][:6]) or "-", len(report["unused"]),
        ", ".join(report["unused"][:6]) or "-",
    )
    return report


def build_model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> tuple[
    nn.Module, Config
]:
    """Rebuild the trained network from a loaded checkpoint, in eval mode on ``device``.

    Returns:
        (model, cfg) where cfg is the training config stored in the checkpoint.

    Raises:
        CheckpointError: the stored config is invalid or the weights do not fit.
    """
    from vidccnet.models.build import build_model  # here: the models import torchvision

    try:
        cfg = config_from_dict(ckpt["config"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"the checkpoint's config is invalid: {exc}") from None
    num_classes = _num_classes(cfg)
    model = build_model(cfg, num_classes, pretrained=False)
    load_model_weights(model, ckpt["model"])
    model.to(device).eval()
    return model, cfg


def _num_classes(cfg: Config) -> int:
    if cfg.data.class_names:
        return len(cfg.data.class_names)
    from vidccnet.data import dataset_info

    return int(dataset_info(cfg.data.name, cfg.data.root)["num_classes"])


# ------------------------------------------------------------------------------ RNG states


def capture_rng_state() -> dict:
    """RNG states of torch (CPU and the current CUDA device), numpy and python as
    ``weights_only``-safe values.

    CUDA: the current device's generator only, the one this process draws from (cuda:LOCAL_RANK
    under torchrun); the others' are never drawn from here, and a resumed run may see other
    GPUs, or give this rank another one. (Reading a generator's state, a seed and an offset
    held by the host, creates no CUDA context on any GPU.)
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": list(py_state[1]),
            "gauss_next": py_state[2],
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`: the CUDA state goes to the current device."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"]), p["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if torch.is_tensor(cuda):
        torch.cuda.set_rng_state(cuda.cpu().to(torch.uint8))
    else:  # checkpoints of earlier versions: every GPU's states, restored by index
        cuda_states = [s.cpu().to(torch.uint8) for s in cuda]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning("checkpoint holds %d CUDA RNG states for %d devices; not restored",
                           len(cuda_states), torch.cuda.device_count())
