"""What a dataset scan found: counts for the console table and the run manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DatasetSummary:
    """Counts from building a :class:`~detcli.data.coco.CocoDetection`.

    Attributes:
        ann_file, img_dir: the split's files.
        images: images listed in the annotation file.
        images_kept: images the dataset serves.
        instances: training targets over the kept images.
        empty_images: kept images with no training target.
        dropped: annotations that are not targets, by reason (``coco_json.DROP_REASONS``; ``crowd`` included).
        dropped_examples: a few annotation ids per reason.
        missing_images: listed images whose file does not exist; ``missing_examples`` names a few.
        refused_images: listed images refused unread because their ``file_name`` is absolute or climbs out
            of the image folder (``coco_json.escapes_image_dir``); ``refused_examples`` names a few.
        filtered_empty: images removed because they have no target (``filter_empty``).
        filtered_small: images removed because min(w, h) < ``min_size``.
        size_mismatch: images whose decoded size differs from the JSON's (seen so far, this process).
        corrupt_images: unreadable image files met so far in this process (skipped and substituted).
        class_names: names in label order; ``per_class`` training targets per class name.
    """

    ann_file: str
    img_dir: str
    images: int
    images_kept: int
    instances: int
    empty_images: int
    dropped: dict[str, int]
    dropped_examples: dict[str, list[int]]
    missing_images: int
    missing_examples: list[str]
    refused_images: int
    refused_examples: list[str]
    filtered_empty: int
    filtered_small: int
    class_names: list[str]
    per_class: dict[str, int]
    size_mismatch: list[str] = field(default_factory=list)
    corrupt_images: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        """One human-readable line per thing worth a warning."""
        out = []
        for reason, n in self.dropped.items():
            if n and reason != "crowd":
                ex = ", ".join(str(i) for i in self.dropped_examples.get(reason, []))
                out.append(f"{n} annotation(s) dropped: {reason.replace('_', ' ')} (ids {ex})")
        if self.missing_images:
            out.append(
                f"{self.missing_images} of {self.images} image file(s) missing under {self.img_dir}, skipped: "
                + ", ".join(self.missing_examples)
            )
        if self.refused_images:
            out.append(
                f"{self.refused_images} image(s) refused unread, their file_name is absolute or leads out of "
                f"{self.img_dir}: " + ", ".join(self.refused_examples)
            )
        if self.corrupt_images:
            out.append(f"{len(self.corrupt_images)} unreadable image(s) skipped: " + ", ".join(self.corrupt_images[:5]))
        if self.size_mismatch:
            out.append(f"{len(self.size_mismatch)} image(s) differ in size from the JSON: " + ", ".join(self.size_mismatch[:5]))
        if self.instances == 0:
            out.append("no training targets at all")
        return out

    def to_table(self, title: str | None = None):
        """A ``rich.table.Table`` of the counts (rich is imported lazily)."""
        from rich.table import Table
        from rich.text import Text

        t = Table(title=title or Path(self.ann_file).name, show_header=True, header_style="bold")
        t.add_column("item")
        t.add_column("count", justify="right")
        t.add_row("images listed", str(self.images))
        t.add_row("images used", str(self.images_kept))
        t.add_row("  without targets", str(self.empty_images))
        for label, n in (
            ("missing files", self.missing_images),
            ("refused: path outside folder", self.refused_images),
            ("filtered: no targets", self.filtered_empty),
            ("filtered: too small", self.filtered_small),
            ("unreadable (skipped)", len(self.corrupt_images)),
        ):
            if n:
                t.add_row(label, Text(str(n), style="yellow"))
        t.add_row("instances", str(self.instances))
        for reason, n in self.dropped.items():
            if n:
                colour = "dim" if reason == "crowd" else "yellow"
                t.add_row(f"  dropped: {reason.replace('_', ' ')}", Text(str(n), style=colour))
        t.add_section()
        for name, n in self.per_class.items():
            t.add_row(Text(f"class {name}"), Text(str(n), style="" if n else "red"))
        return t
