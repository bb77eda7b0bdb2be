"""The run record: the typed ``detcli-1`` checkpoint, as :meth:`detcli.engine.trainer.Trainer._payload` writes it.

A checkpoint is validated once, when it is read: :func:`detcli.checkpoints.io.read_any_checkpoint` gives a
``detcli-1`` file as its record (and :func:`~detcli.checkpoints.io.load_checkpoint` requires one), through
:meth:`RunRecord.read`: every field has its type, range and shape here, and a file that does not fit is a
:class:`~detcli.errors.DetcliError` naming the file and the field (``last.pt: epoch: must be ≥ 0, got -3``).
Readers then use the attributes, typed. Tensors and state dicts stay the objects torch read (their container
types are checked, not their numbers). Fields a newer writer adds are kept as extras.

Still validated where they are used: ``preset`` (with the ``--set`` overrides, by
:func:`detcli.config.loader.validate_preset`) and the paths of ``dataset.config``
(:func:`detcli.data.recorded.recorded_dataset`, like a dataset YAML the user gave).

This is the record the library API builds on (issue 21: one run record for everything a checkpoint or a run
says). Until every reader uses attributes, ``record["key"]`` and ``record.get("key")`` give a field as the
file stores it (plain dicts, lists and tensors).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError, field_validator, model_validator

from detcli.config.schema import MAX_INPUT_SIZE, MIN_INPUT_SIZE
from detcli.errors import DetcliError

FORMAT = "detcli-1"  # the layout's name, the ``format`` field of every detcli checkpoint
MAX_SEED = 2**32 - 1  # NumPy's seed range (0 … 2**32 − 1), as Lightning's seed_everything bounds it
RESUME_FIELDS = ("epoch", "model", "preset", "class_names", "dataset")  # what a resume reads from last.pt
Count = Annotated[StrictInt, Field(ge=0)]
Side = Annotated[StrictInt, Field(ge=MIN_INPUT_SIZE, le=MAX_INPUT_SIZE)]


# ---------------------------------------------------------------------------------------- tensors, checked
def describe(value: Any) -> str:
    """A short description of a value for a message (never a long repr, never a tensor's numbers)."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    if type(value) is str:
        return repr(value[:57]) + ("..." if len(value) > 57 else "")
    if type(value) in (bool, int, float, type(None)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, (dict, list, tuple, set)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return f"numpy.{type(value).__name__} {value.item()!r}"[:80]
    return f"a {type(value).__name__}"


def _tensor(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"must be a tensor, got {describe(value)}")
    return value


def _state_dict(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a state dict (tensor names → tensors), got {describe(value)}")
    for key, tensor in value.items():
        if not isinstance(key, str):
            raise ValueError(f"must be a state dict: the key {describe(key)} is not a tensor name")
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"must be a state dict: {key!r} is {describe(tensor)}, not a tensor")
    if not value:
        raise ValueError("must be a state dict: it holds no tensors")
    return value  # the object torch read (an OrderedDict with its _metadata), not a copy


StateDict = Annotated[Any, AfterValidator(_state_dict)]


def _byte_state(value: Any, numel: int | None = None) -> torch.Tensor:
    """A generator state: a 1-D uint8 tensor (of ``numel`` bytes, when given)."""
    _tensor(value)
    if value.dtype != torch.uint8 or value.dim() != 1 or (numel is not None and value.numel() != numel):
        size = f"{numel} " if numel is not None else ""
        raise ValueError(f"must be a generator state ({size}bytes, a 1-D uint8 tensor), got {describe(value)}")
    return value


def _cpu_generator_state(value: Any) -> torch.Tensor:
    return _byte_state(value, torch.get_rng_state().numel())


def _any_byte_state(value: Any) -> torch.Tensor:
    return _byte_state(value)


def _python_rng(value: Any) -> Any:
    """``[version, internal, gauss]`` of :func:`random.getstate` (internal: 624 words and the position)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and value[0] == 3 and type(value[0]) is int
    internal = value[1] if ok else None
    ok = ok and isinstance(internal, (list, tuple)) and len(internal) == 625
    ok = ok and all(type(v) is int and 0 <= v < 2**32 for v in internal) and internal[-1] <= 624
    ok = ok and (value[2] is None or type(value[2]) is float)
    if not ok:
        raise ValueError(f"must be Python's random state [3, 625 words, gauss], got {describe(value)}")
    return value


def _numpy_rng(value: Any) -> Any:
    """``[kind, keys, pos, has_gauss, cached]`` of NumPy's legacy generator (keys: 624 int64 words)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 5 and value[0] == "MT19937"
    keys = value[1] if ok else None
    ok = ok and isinstance(keys, torch.Tensor) and keys.dtype == torch.int64 and list(keys.shape) == [624]
    ok = ok and type(value[2]) is int and 0 <= value[2] <= 624  # a position past the keys reads past them
    ok = ok and value[3] in (0, 1) and type(value[3]) is int and type(value[4]) is float
    if not ok:
        raise ValueError(f"must be NumPy's random state ['MT19937', 624 keys, pos ≤ 624, 0|1, float], got "
                         f"{describe(value)}")
    return value


# ---------------------------------------------------------------------------------------- the layout
class _Layout(BaseModel):
    """A part of the record: typed fields, unknown fields kept (a newer writer's), no NaN or infinity."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True, allow_inf_nan=False)

    def stored(self) -> dict[str, Any]:
        """This part as the file stores it: plain dicts and lists, the tensors as read."""
        out = {name: _stored(getattr(self, name)) for name in type(self).model_fields
               if name in self.model_fields_set or getattr(self, name) is not None}  # a None the file lacks: absent
        out.update({k: _stored(v) for k, v in (self.__pydantic_extra__ or {}).items()})
        return out


def _stored(value: Any) -> Any:
    if isinstance(value, _Layout):
        return value.stored()
    if isinstance(value, StartArgs):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


class EmaState(_Layout):
    """``ModelEMA.state_dict()``."""

    module: StateDict = Field(description="the averaged weights")
    updates: Count = Field(description="optimizer steps averaged")
    decay: Annotated[StrictFloat, Field(ge=0, le=1)] | None = None
    gamma: Annotated[StrictFloat, Field(gt=0)] | None = None


class ParamGroup(_Layout):
    params: list[Count] = Field(description="indices into OptimizerState.state")


class OptimizerState(_Layout):
    """``torch.optim.Optimizer.state_dict()``: per-parameter buffers (tensors) and the parameter groups."""

    state: dict[StrictInt, dict[str, Any]]
    param_groups: list[ParamGroup] = Field(min_length=1)


class EarlyStopping(_Layout):
    best_epoch: Count = Field(0, description="1-based epoch of best_map (0: none yet)")
    stale: Count = Field(0, description="validations since best_map last improved")
    stopped: StrictBool = False


class RngState(_Layout):
    """:func:`detcli.engine.seed.get_rng_state` of one process."""

    python: Annotated[Any, AfterValidator(_python_rng)]
    numpy: Annotated[Any, AfterValidator(_numpy_rng)]
    torch: Annotated[Any, AfterValidator(_cpu_generator_state)]
    cuda: list[Annotated[Any, AfterValidator(_any_byte_state)]] = Field(default_factory=list)  # size: torch's
    generators: list[Annotated[Any, AfterValidator(_cpu_generator_state)]] = Field(default_factory=list)


class RngRecord(_Layout):
    per_rank: list[RngState] = Field(description="one state per training process, by rank")


class SplitRecord(_Layout):
    """What a split was when the run trained on it (for the manifest and the eye; paths are not used)."""

    ann_file: StrictStr | None = None
    img_dir: StrictStr | None = None
    images: Count | None = None
    fingerprint: StrictStr | None = None


class DatasetRecord(_Layout):
    config: dict[str, Any] | None = Field(
        None, description="DatasetConfig dump; its paths are checked by detcli.data.recorded when used")
    imgsz: Side | None = None
    train: SplitRecord | None = None
    val: SplitRecord | None = None


class StartArgs(BaseModel):
    """The invocation of a run (``train_args`` of run.json's start record and of every checkpoint)."""

    model_config = ConfigDict(extra="allow")

    argv: list[str] = Field(default_factory=list)
    data: str = Field(min_length=1, description="the --data given: a path, 'demo', or 'files' (--train-ann …)")
    imgsz: int | None = Field(None, ge=MIN_INPUT_SIZE, le=MAX_INPUT_SIZE)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str | None = None
    weights: str | None = Field(None, description="initial --weights, as an absolute path")
    run_id: str | None = Field(None, description="tells this run's checkpoints from an earlier run's (--exist-ok)")



class TrainArgs(StartArgs):
    """The invocation (:class:`detcli.engine.run_dir.StartArgs`); ``data`` may be absent (a library-built run)."""

    data: str | None = Field(None, min_length=1)


class RunRecord(_Layout):
    """A ``detcli-1`` checkpoint (``best.pt``: no optimizer, scaler, EMA or random states; ``model`` holds the
    weights to run). Every field but ``format`` may be absent; the commands require what they use
    (:meth:`require`)."""

    format: Literal[FORMAT]
    epoch: Count | None = Field(None, description="epochs completed; a resume continues at this 0-based epoch")
    model: StateDict | None = None
    ema: EmaState | None = None
    optimizer: OptimizerState | None = None
    scaler: dict[str, StrictInt | StrictFloat] | None = Field(None, description="GradScaler.state_dict()")
    schedule_state: dict[str, Any] | None = Field(None, description="LRSchedule.state_dict()")
    best_map: Annotated[StrictFloat, Field(ge=-1, le=1)] | None = Field(
        None, description="best metrics/AP50-95 so far; -1 before any validation")
    early_stopping: EarlyStopping | None = None
    metrics: dict[str, Any] | None = Field(None, description="EvalResult.to_dict() of the last validation")
    train_time: Annotated[StrictFloat, Field(ge=0)] | None = Field(None, description="seconds of training")
    preset: dict[str, Any] | None = Field(None, description="Preset.model_dump(mode='json'), the train section run")
    input_size: Annotated[list[Side], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[w, h] trained at")
    class_names: Annotated[list[StrictStr], Field(min_length=1)] | None = None
    cat_ids: list[Annotated[StrictInt, Field(ge=0, lt=2**63)]] | None = Field(
        None, description="the dataset's category id of each class")
    dataset: DatasetRecord | None = None
    rng: RngRecord | None = None
    train_args: TrainArgs | None = None
    versions: dict[str, StrictStr | None] | None = None
    date: StrictStr | None = None

    @field_validator("cat_ids")
    @classmethod
    def _one_id_per_class(cls, ids: list[int] | None, info) -> list[int] | None:
        names = info.data.get("class_names")
        if ids is not None and names is not None and len(ids) != len(names):
            raise ValueError(f"must hold one id per class name: {len(ids)} ids for {len(names)} names")
        return ids

    @model_validator(mode="after")
    def _resumable_is_complete(self) -> RunRecord:
        """A record with optimizer state is a ``last.pt``: resuming needs everything the trainer writes there."""
        if self.optimizer is not None:
            missing = [n for n in RESUME_FIELDS if getattr(self, n) is None]
            if missing:
                raise ValueError(f"a last.pt (it has optimizer state) without {', '.join(missing)}")
        return self

    # ------------------------------------------------------------------ reading
    @classmethod
    def read(cls, raw: Any, path: Path | str) -> RunRecord:
        """``raw`` (what :func:`torch.load` gave for a ``detcli-1`` file) as a record.

        Raises:
            DetcliError: naming ``path`` and each field that does not fit (at most four).
        """
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise DetcliError(f"{path}: not a valid detcli checkpoint (an edited or damaged file): "
                              f"{problems(e)}") from None

    def require(self, path: Path | str, *names: str) -> None:
        """Raise :class:`DetcliError` naming the fields of ``names`` that are absent (None)."""
        missing = [n for n in names if getattr(self, n, None) is None]
        if missing:
            raise DetcliError(
                f"{path}: detcli checkpoint without {', '.join(repr(k) for k in missing)} "
                "(an incomplete or edited file); use a best.pt or last.pt written by detcli train"
            )

    @property
    def trained_imgsz(self) -> int | None:
        """The ``--imgsz`` the weights were trained at: the long side of ``input_size``, else ``train_args.imgsz``
        (older checkpoints), else None (the preset's size)."""
        if self.input_size is not None:
            return max(self.input_size)
        return self.train_args.imgsz if self.train_args is not None else None

    def weights_to_run(self, path: Path | str) -> dict[str, torch.Tensor]:
        """The EMA weights when there is an EMA (``last.pt``), else ``model``."""
        if self.ema is not None:
            return self.ema.module
        self.require(path, "model")
        return self.model

    # ------------------------------------------------------------------ as the file stores it
    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields and key not in (self.__pydantic_extra__ or {}):
            raise KeyError(key)
        return _stored(getattr(self, key))

    def get(self, key: str, default: Any = None) -> Any:
        """``record[key]``, or ``default`` when the file has no value there (absent or None)."""
        value = self[key] if key in self else None
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.model_fields_set or key in (self.__pydantic_extra__ or {}))

    def keys(self) -> list[str]:
        return [k for k in [*type(self).model_fields, *(self.__pydantic_extra__ or {})] if k in self]


# ---------------------------------------------------------------------------------------- messages
_SAID = {
    "int_type": "must be an integer", "int_parsing": "must be an integer", "float_type": "must be a number",
    "float_parsing": "must be a number", "finite_number": "must be a finite number", "string_type": "must be a string",
    "bool_type": "must be true or false", "list_type": "must be a list", "tuple_type": "must be a list",
    "dict_type": "must be a mapping", "model_type": "must be a mapping", "model_attributes_type": "must be a mapping",
    "missing": "is missing",
}
_BOUNDS = {"greater_than_equal": ("≥", "ge"), "less_than_equal": ("≤", "le"), "greater_than": (">", "gt"),
           "less_than": ("<", "lt")}


def problems(err: ValidationError, shown: int = 4) -> str:
    """``field.path: what it must be, got what it is`` for the first ``shown`` errors, ``; ``-separated."""
    items = []
    for e in err.errors()[:shown]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "(top level)"
        kind, ctx = e["type"], e.get("ctx") or {}
        if kind == "value_error":
            items.append(f"{where}: {ctx.get('error', e['msg'])}" if e["loc"] else str(ctx.get("error", e["msg"])))
            continue
        if kind in _BOUNDS:
            sign, key = _BOUNDS[kind]
            said = f"must be {sign} {ctx.get(key)}"
        elif kind in ("too_short", "too_long"):
            n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
            said = f"must have {'at least' if kind == 'too_short' else 'at most'} {n} item(s)"
        elif kind == "literal_error":
            said = f"must be {ctx.get('expected')}"
        else:
            said = _SAID.get(kind, e["msg"][:1].lower() + e["msg"][1:])
        items.append(f"{where}: {said}" + ("" if kind == "missing" else f", got {describe(e.get('input'))}"))
    more = len(err.errors()) - shown
    return "; ".join(items) + (f" (and {more} more)" if more > 0 else "")


__all__ = ["RunRecord", "EmaState", "OptimizerState", "EarlyStopping", "RngState", "DatasetRecord",
           "SplitRecord", "TrainArgs", "describe", "problems"]
