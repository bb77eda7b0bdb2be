"""Which library scores COCO bbox detections: faster-coco-eval when it is installed, else pycocotools.

faster-coco-eval (MiXaiLL76/faster_coco_eval) runs pycocotools' ``evaluate``/``accumulate`` in C++ behind the
same interface: ``params``, ``stats`` (12 numbers for bbox), ``eval['precision']`` [T, R, K, A, M] and
``eval['recall']`` [T, K, A, M]. On every set checked (``tests/unit/test_coco_backend.py``,
``benchmarks/speed/coco_eval_speed.py``) its 12 stats equal pycocotools' bit for bit. ``eval['precision']`` may differ
in the last bit: pycocotools divides by ``tp + fp + eps``, so its perfect precision is 1 − 2⁻⁵², faster-coco-eval's
is 1.0.

The environment variable ``DETCLI_COCO_EVAL`` (``pycocotools`` or ``faster-coco-eval``) picks one explicitly.
"""
from __future__ import annotations

import copy
import os
from importlib import metadata
from typing import Any

from pycocotools.coco import COCO

from detcli.errors import DetcliError

ENV = "DETCLI_COCO_EVAL"
FASTER = "faster-coco-eval"
PYCOCOTOOLS = "pycocotools"
BACKENDS = (FASTER, PYCOCOTOOLS)


def faster_installed() -> bool:
    """True when ``faster_coco_eval`` imports (its C++ extension included)."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def backend_name(requested: str | None = None) -> str:
    """The backend to use: ``requested``, else ``$DETCLI_COCO_EVAL``, else faster-coco-eval when installed.

    Raises:
        DetcliError: an unknown name, or faster-coco-eval asked for but not installed.
    """
    source = "backend"
    if requested is None and os.environ.get(ENV, "").strip():
        requested, source = os.environ[ENV].strip(), ENV
    if requested is None:
        return FASTER if faster_installed() else PYCOCOTOOLS
    name = requested.lower().replace("_", "-")
    if name not in BACKENDS:
        raise DetcliError(f"{source} {requested!r}: the COCO evaluation backend is one of {', '.join(BACKENDS)}")
    if name == FASTER and not faster_installed():
        raise DetcliError(f"{source} {requested!r}: faster-coco-eval is not installed (pip install faster-coco-eval)")
    return name


def backend_version(name: str) -> str:
    """``"faster-coco-eval 1.8.0"``: the backend's distribution and version, for logs."""
    try:
        return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return name


def bbox_cocoeval(coco_gt: COCO, results: list[dict[str, Any]], backend: str | None = None) -> Any:
    """A bbox COCOeval of ``results`` against ``coco_gt``, built by the backend; not evaluated yet.

    Args:
        coco_gt: the ground truth as a pycocotools ``COCO`` (what the datasets hold); faster-coco-eval indexes
            the same ``dataset`` dict in its own ``COCO`` (annotations are shared, not copied).
        results: COCO results (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``); both backends
            add ``id``/``area``/``iscrowd`` to these dicts in place, so pass a copy you do not need. May be
            empty (pycocotools' ``loadRes`` fails on an empty list; an empty results object is made instead).
        backend: a name of :data:`BACKENDS`; None: :func:`backend_name`.

    Returns:
        the COCOeval object; call ``evaluate()``, ``accumulate()``, ``summarize()`` (they print to stdout).
    """
    name = backend_name(backend)
    print(f"COCO bbox evaluation by {backend_version(name)}")
    if name == FASTER:
        import faster_coco_eval

        gt = faster_coco_eval.COCO()
        gt.dataset = coco_gt.dataset
        gt.createIndex()
        dt = gt.loadRes(results)  # an empty list gives an empty, evaluable results object
        return faster_coco_eval.COCOeval_faster(gt, dt, iouType="bbox", print_function=print)
    from pycocotools.cocoeval import COCOeval

    dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
    return COCOeval(coco_gt, dt, iouType="bbox")


def _empty_results(coco_gt: COCO) -> COCO:
    """A pycocotools results object with no detections (``COCO.loadRes`` fails on an empty list)."""
    res = COCO()
    res.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    res.createIndex()
    return res


__all__ = ["BACKENDS", "ENV", "backend_name", "backend_version", "bbox_cocoeval", "faster_installed"]
