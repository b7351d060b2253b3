"""Training / evaluation configuration: frozen dataclasses, YAML files and dotted overrides.

A config file is a complete YAML document with up to seven sections (``model``, ``data``,
``optim``, ``schedule``, ``loss``, ``eval``, ``runtime``); anything it leaves out takes the
dataclass default below. There is no inheritance between files. Command-line overrides are
``section.key=value`` (or ``section.dict_key.sub=value`` for the free-form dict fields); the
value is parsed as YAML (a string field keeps its text as written) and checked against the
field's type. Unknown keys and wrong types raise :class:`ConfigError` naming the key (with a
did-you-mean suggestion for unknown keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "apply_overrides",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid (unknown key, wrong type, unreadable file)."""


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got {value!r}")


def _positive(key: str, value: Any) -> None:
    if isinstance(value, int) and value < 1:
        raise ConfigError(f"config key '{key}' must be >= 1, got {value}")


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A key given twice in one mapping: valid YAML, refused by :class:`_UniqueKeyLoader`."""


def _yaml_problem(exc: yaml.YAMLError, lines: bool = True) -> str:
    """PyYAML's error on one line: the line (unless not ``lines``), column and problem, without
    the excerpt and the caret PyYAML adds (under the name '<unicode string>')."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return " ".join(str(exc).split())

    def at(m: yaml.Mark) -> str:
        return f"line {m.line + 1}, column {m.column + 1}" if lines else f"column {m.column + 1}"

    text = f"{at(mark)}: {exc.problem}"
    start = getattr(exc, "context_mark", None)
    if exc.context and start is not None and (start.line, start.column) != (mark.line,
                                                                             mark.column):
        text += f" ({exc.context} started at {at(start)})"
    return text


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """A config file's YAML error on one line (see :func:`_yaml_problem`)."""
    if isinstance(exc, _DuplicateKey):
        return f"config file '{path}', {_yaml_problem(exc)}"
    return f"config file '{path}' is not valid YAML: {_yaml_problem(exc)}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(
                    None, None, f"key {key!r} twice in one section (the first would be "
                    "ignored); merge them", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _require(key: str, value: Any, ok: bool, rule: str) -> None:
    """Refuse ``value`` unless ``ok``: ``rule`` says what the key accepts."""
    if not ok:
        raise ConfigError(f"config key '{key}' must be {rule}, got {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _non_negative(key: str, value: Any) -> None:
    _require(key, value, _finite(value) and value >= 0, ">= 0")


ANCHORS = ("causal", "centre")  # vidccnet.data.clips.ANCHORS (this module imports no torch)


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build (passed to ``vidccnet.models.create_model``).

    ``temporal_shift`` / ``temporal_attention`` left at ``None`` use the model's own default
    (on for ``ccnet3d_*``, off for ``ccnet2d_*``). ``kwargs`` are extra keyword arguments for
    ``create_model`` (e.g. ``head_channels``, ``stem``). ``init_from`` names a vidccnet
    checkpoint (e.g. one made by ``scripts/convert_checkpoint.py``) whose weights initialise the
    model before training: the backbone must match exactly, head tensors of another shape
    (e.g. the classifiers for another class count) keep their fresh initialisation (reported).
    """

    name: str = "ccnet3d_resnet18"
    pretrained_backbone: str | None = None
    recurrence: int = 2
    temporal_shift: bool | None = None
    temporal_attention: bool | None = None
    shift_fraction: float = 0.125
    attention_backend: str = "auto"
    kwargs: dict = field(default_factory=dict)
    init_from: str | None = None

    def __post_init__(self) -> None:
        _require("model.recurrence", self.recurrence,
                 isinstance(self.recurrence, int) and self.recurrence >= 0, ">= 0")
        _require("model.shift_fraction", self.shift_fraction,
                 _finite(self.shift_fraction) and 0 <= self.shift_fraction <= 0.5, "in [0, 0.5]")
        _choice("model.attention_backend", self.attention_backend,
                ("auto", "reference", "triton"))


@dataclass(frozen=True)
class DataConfig:
    """Training data: dataset, clip sampling, augmentation and loader.

    ``batch_size`` is per process (global batch = batch_size x world size x accum_steps).
    ``augment`` turns on the clip-consistent augmentation: random rescale in ``scale_range``,
    random crop of ``crop_size`` (H, W; None = the dataset's default), horizontal flip and
    colour jitter. ``anchor`` is "causal" (labelled frame last in its clip) or "centre".
    ``kwargs`` go to ``build_dataset`` / ``build_eval_videos`` (e.g. the synthetic world's
    ``num_videos``, ``num_frames``, ``height``, ``width``, ``seed``). ``class_names`` and
    ``palette`` are filled from ``vidccnet.data.dataset_info`` when training starts;
    ``frame_short_side`` (pixels) from the training frames of a dataset used at its stored size
    (``folders``, ``vspw``), the scale ``segment_video.py --size model`` resizes to.
    """

    name: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    clip_len: int = 4
    frame_stride: int = 1
    anchor: str = "causal"
    crop_size: tuple[int, int] | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    augment: bool = True
    batch_size: int = 2
    num_workers: int = 0
    kwargs: dict = field(default_factory=dict)
    class_names: list[str] | None = None
    palette: list[tuple[int, int, int]] | None = None
    frame_short_side: int | None = None

    def __post_init__(self) -> None:
        _choice("data.anchor", self.anchor, ANCHORS)
        _positive("data.clip_len", self.clip_len)
        _positive("data.frame_short_side", self.frame_short_side)
        _positive("data.frame_stride", self.frame_stride)
        _positive("data.batch_size", self.batch_size)
        _non_negative("data.num_workers", self.num_workers)
        for v in self.crop_size or ():
            _positive("data.crop_size", v)
        lo, hi = self.scale_range
        _require("data.scale_range", list(self.scale_range),
                 _finite(lo) and _finite(hi) and 0 < lo <= hi, "[low, high] with 0 < low <= high")


@dataclass(frozen=True)
class OptimConfig:
    """SGD as in CCNet (one learning rate for backbone and head, as the official code does)."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    grad_clip: float | None = None
    accum_steps: int = 1
    # Learning-rate multiplier for the criss-cross attention's residual weight gamma (0 at
    # init with model.kwargs.attention_init=ccnet, 1 with the default identity init). 1.0 is
    # CCNet's single learning rate; a larger value lets the attention switch on within short
    # schedules (docs/results.md, study findings).
    gamma_lr_mult: float = 1.0
    # Learning-rate multiplier for the attention's query, key and value projections: 5 lets
    # the demo's attention learn its temporal cue within 600 steps (docs/training.md).
    attention_lr_mult: float = 1.0
    # false: no weight decay on the parameters of fewer than 2 dimensions (norm weights and
    # biases, biases, the attention's gamma), as timm and mmseg (norm_decay_mult=0) do, common
    # with AdamW. true decays all, as the official CCNet's SGD (the shipped configs).
    norm_bias_decay: bool = True

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, ("sgd", "adamw"))
        for key in ("lr", "gamma_lr_mult", "attention_lr_mult"):
            v = getattr(self, key)
            _require(f"optim.{key}", v, _finite(v) and v > 0, "> 0 and finite")
        _require("optim.momentum", self.momentum, _finite(self.momentum) and
                 0 <= self.momentum < 1, "in [0, 1)")
        if self.name == "adamw" and (self.nesterov or self.momentum != OptimConfig.momentum):
            raise ConfigError("config keys 'optim.momentum' and 'optim.nesterov' are SGD's; "
                              "AdamW uses its default betas (0.9, 0.999): remove them, or use "
                              "optim.name=sgd")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("config key 'optim.nesterov' needs a momentum > 0 "
                              "(optim.momentum is 0)")
        _non_negative("optim.weight_decay", self.weight_decay)
        if self.grad_clip is not None:
            _require("optim.grad_clip", self.grad_clip,
                     _finite(self.grad_clip) and self.grad_clip > 0, "> 0 (or null: no clipping)")
        _positive("optim.accum_steps", self.accum_steps)


@dataclass(frozen=True)
class ScheduleConfig:
    """Iteration-based poly schedule with linear warm-up.

    lr(it) = lr * warm(it) * max((1 - it / iterations) ** poly_power, min_lr_ratio) where warm
    rises linearly from ``warmup_ratio`` to 1 over ``warmup_iters`` optimizer steps.
    """

    iterations: int = 1000
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    poly_power: float = 0.9
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _positive("schedule.iterations", self.iterations)
        _non_negative("schedule.warmup_iters", self.warmup_iters)
        _require("schedule.warmup_ratio", self.warmup_ratio,
                 _finite(self.warmup_ratio) and 0 < self.warmup_ratio <= 1, "in (0, 1]")
        _non_negative("schedule.poly_power", self.poly_power)
        _require("schedule.min_lr_ratio", self.min_lr_ratio,
                 _finite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "in [0, 1]")


# the category-consistent loss's arguments (vidccnet.losses.CategoryConsistentLoss) and the
# defaults of its two margins
CC_KWARGS = ("delta_v", "delta_d", "alpha", "beta", "gamma")
CC_MARGINS = {"delta_v": 0.5, "delta_d": 1.5}
# the label every dataset of vidccnet.data gives void / unlabelled pixels and augmentation
# padding (vidccnet.data.base.EvalVideo)
VOID_LABEL = 255


@dataclass(frozen=True)
class LossConfig:
    """Arguments of ``vidccnet.losses.SegmentationCriterion``."""

    aux_weight: float = 0.4
    cc_weight: float = 1.0
    ohem: bool = False
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000
    class_weights: list[float] | None = None
    ignore_index: int = 255
    cc_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _non_negative("loss.aux_weight", self.aux_weight)
        _non_negative("loss.cc_weight", self.cc_weight)
        _require("loss.ohem_thresh", self.ohem_thresh,
                 _finite(self.ohem_thresh) and 0 < self.ohem_thresh <= 1, "in (0, 1]")
        _non_negative("loss.ohem_min_kept", self.ohem_min_kept)
        if self.class_weights is not None and not self.class_weights:
            raise ConfigError("config key 'loss.class_weights' must be null or one weight a "
                              "class, got []; leave it out (null) for no class weights")
        for w in self.class_weights or ():
            _non_negative("loss.class_weights", w)
        if self.ignore_index != VOID_LABEL:  # the evaluator reads it too
            raise ConfigError(
                f"config key 'loss.ignore_index' must be {VOID_LABEL}, the label the datasets "
                f"give void and unlabelled pixels, got {self.ignore_index}; to leave a class "
                "out of the loss, give it weight 0 in loss.class_weights")
        if self.class_weights and not any(self.class_weights):
            raise ConfigError("config key 'loss.class_weights' is all 0: no pixel would count "
                              "in the loss; give the classes to train a positive weight")
        for key, value in self.cc_kwargs.items():
            if key not in CC_KWARGS:
                close = difflib.get_close_matches(str(key), CC_KWARGS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown config key 'loss.cc_kwargs.{key}'{hint} (accepted: "
                                  f"{', '.join(CC_KWARGS)})")
            _require(f"loss.cc_kwargs.{key}", value, isinstance(value, (int, float))
                     and not isinstance(value, bool) and _finite(value) and value >= 0,
                     "a number >= 0")
        delta_v, delta_d = ({**CC_MARGINS, **self.cc_kwargs}[k] for k in CC_MARGINS)
        if not delta_v < delta_d:
            raise ConfigError(f"config key 'loss.cc_kwargs.delta_v' ({delta_v}) must be below "
                              f"'loss.cc_kwargs.delta_d' ({delta_d}; defaults "
                              f"{' and '.join(map(str, CC_MARGINS.values()))})")


@dataclass(frozen=True)
class EvalConfig:
    """Validation during training (and defaults of ``scripts/evaluate.py``).

    ``interval`` is in iterations (0 disables periodic validation; the end of training still
    validates unless ``at_end`` is false). ``clip_len`` None uses ``data.clip_len``, ``anchor``
    None ``data.anchor`` (the clip position training labels).
    ``max_videos`` limits the number of validation videos during training (None = all);
    ``scripts/evaluate.py`` applies it only when given on its command line.
    ``metric_convention``: "auto" (VSPW's official evaluator on ``data.name: vspw``, else
    "mmseg"), "vspw" or "mmseg" (docs/metrics.md). ``vc_labelled_only``: mVC over labelled
    pixels only, instead of VSPW's definition (which counts constant void pixels).
    """

    split: str = "val"
    interval: int = 500
    at_end: bool = True
    clip_len: int | None = None
    clip_stride: int = 1
    anchor: str | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crop_size: tuple[int, int] | None = None
    vc_windows: tuple[int, ...] = (8, 16)
    max_videos: int | None = None
    metric_convention: str = "auto"
    vc_labelled_only: bool = False
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("eval.metric_convention", self.metric_convention, ("auto", "vspw", "mmseg"))
        if self.anchor is not None:
            _choice("eval.anchor", self.anchor, ANCHORS)
        _non_negative("eval.interval", self.interval)
        for key in ("clip_len", "clip_stride", "max_videos"):
            _positive(f"eval.{key}", getattr(self, key))
        for key in ("scales", "vc_windows"):
            _require(f"eval.{key}", list(getattr(self, key)), len(getattr(self, key)) > 0,
                     "a non-empty list")
        for v in self.scales:
            _require("eval.scales", list(self.scales), _finite(v) and v > 0, "> 0")
        for v in self.crop_size or ():
            _positive("eval.crop_size", v)
        for v in self.vc_windows:
            _positive("eval.vc_windows", v)


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how to run.

    ``amp``: "none", "bf16" or "fp16" (fp16 uses a GradScaler); autocast is used on CUDA only:
    on CPU the setting is ignored with a warning and the run is float32 (CPU autocast is much
    slower; ``vidccnet.engine.amp.resolve_amp``). ``device``: "auto", "cpu", "cuda".
    ``sync_bn`` converts BatchNorm to SyncBatchNorm when distributed.
    ``deterministic`` turns on ``torch.use_deterministic_algorithms(warn_only=True)``.
    """

    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    compile: bool = False
    channels_last: bool = False
    sync_bn: bool = False
    deterministic: bool = False
    log_interval: int = 10
    ckpt_interval: int = 500
    skip_nonfinite: bool = False
    overwrite: bool = False
    tensorboard: bool = True
    progress: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _choice("runtime.amp", self.amp, ("none", "bf16", "fp16"))
        _choice("runtime.device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        _positive("runtime.log_interval", self.log_interval)
        _positive("runtime.ckpt_interval", self.ckpt_interval)
        _positive("runtime.num_threads", self.num_threads)
        if not self.output_dir.strip():  # an unset $VAR: the run would fill the current folder
            raise ConfigError("config key 'runtime.output_dir' must name a folder, got "
                              f"{self.output_dir!r}; give the run's folder, e.g. runs/my_run")


@dataclass(frozen=True)
class Config:
    """The whole run: one frozen dataclass per section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def eval_frame_stride(self) -> int:
        """The evaluator's clip frame spacing: ``data.frame_stride``, except for CamVid, whose
        evaluation videos are already views of every ``frame_stride``-th frame."""
        return 1 if self.data.name == "camvid" else self.data.frame_stride

    @property
    def eval_anchor(self) -> str:
        """The evaluator's clip anchor: ``eval.anchor``, else ``data.anchor``."""
        return self.eval.anchor or self.data.anchor

    def __post_init__(self) -> None:  # checks across sections
        if self.eval_frame_stride > 1 and self.eval.clip_stride > 1:
            raise ConfigError(
                f"config key 'eval.clip_stride' must be 1 with data.frame_stride="
                f"{self.data.frame_stride}: each evaluation clip predicts one frame, got "
                f"{self.eval.clip_stride}"
            )
        clip = self.eval.clip_len or self.data.clip_len
        if self.eval.clip_stride > clip:
            raise ConfigError(
                f"config key 'eval.clip_stride' must be <= the evaluation clip length {clip} "
                "(eval.clip_len, else data.clip_len): frames are emitted from each clip, got "
                f"{self.eval.clip_stride}"
            )


# ----------------------------------------------------------------------------------- typing


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    """(True, inner) for ``X | None`` / ``Optional[X]``, else (False, tp)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            inner = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return True, inner
    return False, tp


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the type ``tp`` and convert lists to tuples where needed."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' may not be null (expected {_type_name(inner)})")
    tp = inner
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"config key '{key}' expects a mapping, got {value!r}")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            size = len(args) if origin is tuple and args and args[-1] is not Ellipsis else None
            raise ConfigError(f"config key '{key}' expects a list in brackets, "
                              f"{_list_example(key, value, size)}, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"config key '{key}' expects {len(args)} values, got {len(value)}: {value!r}"
                )
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            elem = args[0] if args else Any
            items = [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")  # pragma: no cover


def _list_example(key: str, value: Any, size: int | None = None) -> str:
    """``e.g. key=[64, 96]`` from the numbers a non-list value holds (``64x96``, ``1.0``); one
    number for a key of ``size`` values is repeated (``64`` -> ``[64, 64]``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        numbers = [str(value)]
    else:
        numbers = re.findall(r"\d+(?:\.\d+)?", str(value))
    if size and len(numbers) == 1:
        numbers *= size
    return f"e.g. {key}=[{', '.join(numbers)}]" if numbers else f"e.g. {key}=[a, b]"


def _unknown_key(key: str, choices: list[str]) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    prefix = key[: -len(leaf)]
    close = difflib.get_close_matches(leaf, choices, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return ConfigError(
        f"unknown config key '{key}'{hint} (valid keys here: {', '.join(sorted(choices))})"
    )


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a (possibly partial) mapping, checking every key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        name = prefix.rstrip(".") or "the config file"
        raise ConfigError(f"config section '{name}' must be a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in names:
            raise _unknown_key(f"{prefix}{key}", names)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


# ------------------------------------------------------------------------------ public API


def config_from_dict(d: dict) -> Config:
    """Build a :class:`Config` from a nested plain dict (missing keys take defaults).

    Raises:
        ConfigError: on unknown keys or values of the wrong type.
    """
    return _build(Config, d, "")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Config) -> dict:
    """The config as nested plain dicts / lists / scalars (YAML- and ``weights_only``-safe)."""
    return _plain(cfg)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs between two
    :func:`config_to_dict` dicts (keys missing on one side show as ``None``)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_diff(a, b, f"{prefix}{key}."))
        elif _plain(a) != _plain(b):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as a complete YAML document."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def _parse_override(text: str) -> tuple[list[str], str]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override '{text}' must look like section.key=value")
    return parts, raw


def _yaml_value(raw: str, key: str, is_list: bool = False) -> Any:
    """An override's value parsed as YAML; ``is_list``: the key takes a list (for the hint)."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        fix = (f"write a list in brackets, {_list_example(key, raw)}" if is_list
               else "check its brackets and quotes, or quote a text value inside the shell's "
               f"quotes: \"{key}='...'\"")
        raise ConfigError(f"override '{key}': {raw!r} is not valid YAML: "
                          f"{_yaml_problem(exc, lines=False)}; {fix}") from None


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Return a new config with ``section.key=value`` overrides applied in order.

    The value is parsed as YAML (``1e-3``, ``[352, 480]``, ``null``, ``true``) and checked against
    the field's type; a string field keeps the raw text. For dict fields (``model.kwargs``,
    ``data.kwargs``, ...) ``section.kwargs.name=value`` sets one entry.

    Raises:
        ConfigError: on a malformed override, unknown key or wrong type.
    """
    d = config_to_dict(cfg)
    for text in overrides:
        parts, raw = _parse_override(text)
        key = ".".join(parts)
        cls: Any = Config
        node = d
        for depth, part in enumerate(parts):
            hints = _hints(cls)
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                raise _unknown_key(".".join(parts[: depth + 1]), names)
            tp = hints[part]
            last = depth == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:
                    raise ConfigError(
                        f"override '{key}' names a whole section; set its keys, "
                        f"e.g. {key}.{dataclasses.fields(tp)[0].name}=..."
                    )
                cls, node = tp, node[part]
                continue
            _, inner = _is_optional(tp)
            is_dict = inner is dict or typing.get_origin(inner) is dict
            if last:
                if inner is str:  # the text as written; null / ~ for None
                    value = None if raw.strip() in ("null", "~") else raw
                else:
                    value = _yaml_value(raw, key, typing.get_origin(inner) in (list, tuple))
                node[part] = _coerce(value, tp, key)
            elif is_dict:
                target = node.get(part)
                if target is None:
                    target = node[part] = {}
                for sub in parts[depth + 1 : -1]:
                    target = target.setdefault(sub, {})
                    if not isinstance(target, dict):
                        raise ConfigError(f"override '{key}': '{sub}' is not a mapping")
                target[parts[-1]] = _yaml_value(raw, key)
            else:
                raise ConfigError(
                    f"override '{key}': '{'.'.join(parts[: depth + 1])}' is a value, not a "
                    "section"
                )
            break
    return config_from_dict(d)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (``None``: all defaults) and apply dotted overrides.

    Raises:
        ConfigError: missing/unreadable file, invalid YAML, unknown key or wrong type.
    """
    data: Any = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(
                f"config '{p}' is a folder; pass a YAML file, e.g. {p / 'config.yaml'} for a run "
                "folder"
            )
        if not p.is_file():
            raise ConfigError(
                f"config file '{p}' not found; pass an existing file, e.g. "
                "--config configs/synthetic_tiny.yaml"
            )
        try:
            data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except UnicodeDecodeError:
            raise ConfigError(
                f"config file '{p}' is not a text file (a checkpoint?); pass the YAML config "
                "(a run folder's config.yaml)"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(p, exc)) from None
        if data is None:  # an empty file would train the defaults without a word
            raise ConfigError(
                f"config file '{p}' is empty; pass a config such as configs/synthetic_tiny.yaml"
            )
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping of sections")
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from None
    return apply_overrides(cfg, list(overrides))
