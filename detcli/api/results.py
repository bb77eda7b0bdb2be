"""What :meth:`detcli.api.Model.predict` gives for each picture: its detections, the picture, and ways to use them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detcli.errors import DetcliError
from detcli.inference.frames import Frame
from detcli.structures import Detections


@dataclass(frozen=True)
class Result:
    """The detections of one image or video frame, in original-image pixels.

    Attributes:
        detections: boxes (K, 4) xyxy, scores (K,), labels (K,) as CPU tensors.
        source: the decoded picture (:class:`~detcli.inference.frames.Frame`: pixels, file, running index, video
            frame number and fps).
        class_names: the model's name of each class index.
        cat_ids: the model's category id of each class index (COCO's ids for the 80 COCO classes).
    """

    detections: Detections
    source: Frame
    class_names: list[str]
    cat_ids: list[int]

    @property
    def boxes(self) -> np.ndarray:
        """(K, 4) float32 xyxy boxes in original-image pixels."""
        return self.detections.boxes.detach().cpu().float().numpy().reshape(-1, 4)

    @property
    def scores(self) -> np.ndarray:
        """(K,) float32 scores."""
        return self.detections.scores.detach().cpu().float().numpy().reshape(-1)

    @property
    def labels(self) -> np.ndarray:
        """(K,) int64 class indices into :attr:`class_names`."""
        return self.detections.labels.detach().cpu().long().numpy().reshape(-1)

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        from detcli.plots.detections import class_name

        return [class_name(self.class_names, int(c)) for c in self.labels]

    @property
    def path(self) -> str:
        """The file the picture came from (``image<N>.jpg`` for an array or PIL image without one)."""
        return self.source.path

    @property
    def orig_img(self) -> np.ndarray:
        """(H, W, 3) uint8 BGR: the picture as read."""
        return self.source.img

    @property
    def frame(self) -> int | None:
        """The frame number inside a video; None for an image."""
        return self.source.frame

    @property
    def index(self) -> int:
        """Running number (from 0) of the picture in what ``predict`` was given."""
        return self.source.index

    def __len__(self) -> int:
        return int(self.detections.scores.numel())

    def plot(self) -> np.ndarray:
        """A copy of :attr:`orig_img` with the boxes and ``"name score"`` labels drawn, (H, W, 3) uint8 BGR."""
        from detcli.plots.detections import draw_detections

        return draw_detections(self.orig_img, self.detections, self.class_names)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`plot` to ``path`` (its extension picks the format: .jpg, .png, …); returns the path.

        Raises:
            DetcliError: the image cannot be written there (no such folder, unknown extension, not writable).
        """
        import cv2

        path = Path(path)
        try:
            ok = cv2.imwrite(str(path), self.plot())
        except cv2.error as e:
            raise DetcliError(f"cannot write image '{path}': {str(e).strip().splitlines()[-1]}") from None
        if not ok:
            raise DetcliError(f"cannot write image '{path}' (does its folder exist, is it writable, is "
                              f"'{path.suffix}' an image extension?)")
        return path

    def to_coco(self, image_id: int | None = None, cat_ids: list[int] | None = None) -> list[dict]:
        """COCO results (``COCO.loadRes`` reads a list of them): ``{"image_id", "category_id", "bbox": [x, y, w, h],
        "score"}`` per detection, boxes and scores at full float32 precision, as ``predictions.json`` holds them.

        Args:
            image_id: default :attr:`index` + 1 (the image id ``detcli predict`` writes).
            cat_ids: category id of each class index; default the model's (:attr:`cat_ids`).
        """
        from detcli.evaluation.coco_results import coco_boxes_scores

        ids = self.cat_ids if cat_ids is None else list(cat_ids)
        image_id = self.index + 1 if image_id is None else int(image_id)
        xywh, scores = coco_boxes_scores(self.detections)
        return [{"image_id": image_id, "category_id": ids[int(c)], "bbox": b, "score": s}
                for b, s, c in zip(xywh, scores, self.labels.tolist())]

    def __repr__(self) -> str:
        return f"Result({self.path!r}{'' if self.frame is None else f' frame {self.frame}'}: {len(self)} detection(s))"


__all__ = ["Result"]
