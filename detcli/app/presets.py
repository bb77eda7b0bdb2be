"""``detcli presets``: the built-in presets at a glance, and any preset as the full YAML to copy and edit.

The table's figures come from each preset's ``zoo`` section (COCO, 80 classes): the official box AP, and the
parameters and GFLOPs counted the way the family's reference counts them (``tests/e2e/test_presets_command.py``
checks them against a count of the model). Nothing is built here, so the listing is instant.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass

import yaml

from detcli.config.loader import builtin_presets, load_preset, presets_dir
from detcli.config.schema import Preset, model_config_types
from detcli.console import Reporter
from detcli.errors import DetcliError

# model.type → the family's display name, in the schema's order (the model config classes carry the names)
FAMILIES = {family: config.display_name for family, config in model_config_types().items()}


@dataclass
class PresetRow:
    """One built-in preset as ``detcli presets`` lists it; None where the preset gives no figure."""

    name: str
    family: str
    input_size: tuple[int, int]  # (w, h)
    params: int | None
    gflops: float | None
    coco_ap: float | None
    params_counted: str  # how, in words ("every parameter, as MMDetection counts")
    gflops_counted: str  # "MACs, as MMDetection counts", "2×MACs"


def preset_rows() -> list[PresetRow]:
    """Every built-in preset, by family, then from the smallest model up."""
    from detcli.models import detector_class  # the classes say how their family counts (imports torch)
    from detcli.models.complexity import flop_count_words, param_count_words

    rows = []
    for name, path in builtin_presets().items():
        preset, _ = load_preset(path)
        cls = detector_class(preset)
        zoo = preset.zoo
        rows.append(PresetRow(
            name=name, family=cls.display_name,
            input_size=(int(preset.input.size[0]), int(preset.input.size[1])),
            params=zoo.params if zoo else None, gflops=zoo.gflops if zoo else None,
            coco_ap=zoo.coco_ap if zoo else None,
            params_counted=param_count_words(cls), gflops_counted=flop_count_words(cls),
        ))
    order = list(FAMILIES.values())
    return sorted(rows, key=lambda r: (order.index(r.family) if r.family in order else len(order), r.params or 0,
                                       r.input_size, r.name))


def list_presets(reporter: Reporter) -> None:
    """The table of :func:`preset_rows` and what its columns mean, per family."""
    rows = preset_rows()
    reporter.table(
        "built-in presets (COCO, 80 classes)",
        ["preset", "family", "input", "params", "GFLOPs", "COCO AP"],
        [[r.name, r.family, f"{r.input_size[0]}×{r.input_size[1]}",
          "–" if r.params is None else f"{r.params / 1e6:.2f} M",
          "–" if r.gflops is None else f"{r.gflops:.2f}",
          "–" if r.coco_ap is None else f"{r.coco_ap:.1f}"] for r in rows],
        numeric=False,
    )
    reporter.info("input: w×h at test time (keep-ratio presets: the long × short resize scale).")
    reporter.info("params: of the inference graph; GFLOPs: one image at that input; each family counted its own "
                  "way (its reference's, where one publishes figures):")
    conventions = {r.family: (r.params_counted, r.gflops_counted) for r in rows}
    width = max(map(len, conventions))
    for family, (params, flops) in conventions.items():
        reporter.info(f"  {family.ljust(width)}  params: {params}; GFLOPs: {flops}")
    reporter.info("COCO AP: box AP on val2017 published for the official recipe (each preset's `reference`); "
                  "–: none published.")
    reporter.info("A preset in full, to copy and edit: detcli presets NAME > my.yaml, then detcli train -p my.yaml")


def resolved_yaml(name_or_path: str, overrides: list[str] | None = None) -> str:
    """The preset as YAML with its ``base`` merged, ``overrides`` applied and every default filled in, under a
    comment header: a file ``detcli train -p`` accepts unchanged."""
    preset, path = load_preset(name_or_path, list(overrides or []))
    where = "built in" if path.resolve().parent == presets_dir().resolve() else str(path)
    header = [f"# detcli preset {preset.name} ({where}), resolved: base merged, every default filled in."]
    command = f"detcli presets {shlex.quote(str(name_or_path))}" + "".join(
        f" --set {shlex.quote(o)}" for o in overrides or [])
    header.append(f"# Copy and edit: {command} > my.yaml; detcli train -p my.yaml")
    if preset.zoo is not None:
        header.append("# zoo: the built-in recipe's COCO figures; update or delete them when you change the model")
    return "\n".join(header) + "\n" + preset_yaml(preset)


def preset_yaml(preset: Preset) -> str:
    """``preset`` as YAML, fields in schema order."""
    return yaml.safe_dump(preset.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=120)


def presets_command(name: str | None, overrides: list[str], reporter: Reporter | None = None) -> None:
    """``detcli presets [NAME]``: the table, or one preset's resolved YAML on stdout (pipe-safe: no wrapping)."""
    if name is None:
        if overrides:
            raise DetcliError("--set changes one preset: give its NAME, e.g. detcli presets rtmdet-s --set "
                              "train.epochs=100")
        list_presets(reporter or Reporter())
        return
    sys.stdout.write(resolved_yaml(name, overrides))
