"""What ``detcli predict`` leaves behind: annotated images and videos, and one ``predictions.json``."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from detcli.errors import DetcliError
from detcli.evaluation.coco_results import coco_boxes_scores
from detcli.fileio import atomic_write_json
from detcli.inference.frames import Frame
from detcli.plots.detections import draw_detections
from detcli.structures import Detections


class PredictionWriter:
    """Saves annotated images/videos and one ``predictions.json`` for a predict run.

    Images keep their file name under ``out_dir``; each video becomes ``<stem>.mp4`` (mp4v), or a folder
    ``<stem>/`` of ``<stem>_<frame>.jpg`` when no mp4 writer can be opened.

    ``predictions.json`` is a COCO results file (``COCO.loadRes`` reads it): a list of ``{"image_id",
    "category_id", "bbox": [x, y, w, h], "score"}`` in original pixels, each with ``"file_name"`` (the
    source path as found), ``"frame"`` (video frame number, ``None`` for an image) and ``"category"`` (the
    class name) beside it. ``image_id`` numbers the images and video frames from 1 in the order they were
    read (:attr:`Frame.index` + 1: sorted file order for folders and globs). Written atomically by
    :meth:`close`.

    Args:
        out_dir: created if missing.
        class_names: name per class index.
        save_images: write annotated images/videos (the JSON is always written).
        cat_ids: category id per class index (default: the class index itself).
    """

    def __init__(
        self,
        out_dir: str | Path,
        class_names: list[str],
        save_images: bool = True,
        cat_ids: list[int] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        self.cat_ids = list(cat_ids) if cat_ids is not None else list(range(len(class_names)))
        self.save_images = save_images
        self.records: list[dict] = []
        self.saved: list[Path] = []  # annotated images / videos / frame folders, in order
        self._names: dict[str, str] = {}  # source path -> output name (unique)
        self._video_path: str | None = None
        self._video: cv2.VideoWriter | None = None
        self._video_frames_dir: Path | None = None

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, frame: Frame, det: Detections) -> None:
        """Record ``det`` (original pixels) for ``frame`` and save its annotated picture."""
        self.records.extend(self._records(frame, det))
        if not self.save_images:
            return
        drawn = draw_detections(frame.img, det, self.class_names)
        if frame.is_video:
            self._write_video_frame(frame, drawn)
        else:
            path = self.out_dir / self._output_name(frame.path, Path(frame.path).name)
            if not cv2.imwrite(str(path), drawn):
                raise DetcliError(f"cannot write image '{path}'")
            self.saved.append(path)

    def close(self) -> Path:
        """Finish open videos and write ``predictions.json`` (temp file + rename). Returns its path."""
        self._release_video()
        path = atomic_write_json(self.out_dir / "predictions.json", self.records, indent=None, allow_nan=False)
        return path

    def _records(self, frame: Frame, det: Detections) -> list[dict]:
        """COCO results of one frame, boxes and scores at full float32 precision (:func:`coco_boxes_scores`)."""
        xywh, scores = coco_boxes_scores(det)
        labels = det.labels.detach().cpu().tolist()
        return [
            {
                "image_id": frame.index + 1,
                "category_id": self.cat_ids[int(c)],
                "bbox": b,
                "score": s,
                "file_name": frame.path,
                "frame": frame.frame,
                "category": self.class_names[int(c)],
            }
            for b, s, c in zip(xywh, scores, labels)
        ]

    def _output_name(self, source_path: str, name: str) -> str:
        """``name``, or ``stem_2.ext``… when another source already took it (e.g. a recursive glob)."""
        if source_path in self._names:
            return self._names[source_path]
        taken = set(self._names.values())
        stem, ext = os.path.splitext(name)
        candidate, n = name, 1
        while candidate in taken or candidate == "predictions.json":
            n += 1
            candidate = f"{stem}_{n}{ext}"
        self._names[source_path] = candidate
        return candidate

    def _write_video_frame(self, frame: Frame, drawn: np.ndarray) -> None:
        if frame.path != self._video_path:
            self._release_video()
            self._open_video(frame, drawn)
        if self._video is not None:
            self._video.write(drawn)
        else:
            assert self._video_frames_dir is not None
            stem = self._video_frames_dir.name
            cv2.imwrite(str(self._video_frames_dir / f"{stem}_{frame.frame:06d}.jpg"), drawn)

    def _open_video(self, frame: Frame, drawn: np.ndarray) -> None:
        self._video_path = frame.path
        out_name = self._output_name(frame.path, Path(frame.path).stem + ".mp4")
        path = self.out_dir / out_name
        h, w = drawn.shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), frame.fps or 30.0, (w, h))
        if writer.isOpened():
            self._video = writer
            self.saved.append(path)
            return
        writer.release()
        self._video_frames_dir = self.out_dir / Path(out_name).stem
        self._video_frames_dir.mkdir(parents=True, exist_ok=True)
        self.saved.append(self._video_frames_dir)

    def _release_video(self) -> None:
        if self._video is not None:
            self._video.release()
        self._video = None
        self._video_frames_dir = None
        self._video_path = None


__all__ = ["PredictionWriter"]
