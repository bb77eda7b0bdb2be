"""Pictures a run leaves behind (matplotlib, Agg canvas, imported only when a picture is drawn).

* :mod:`.figure` — a figure on an Agg canvas, saved atomically as PNG or JPEG;
* :mod:`.results` — ``results.png``: loss and metric curves per epoch from ``results.csv``;
* :mod:`.validation` — ``PR_curve.png``, ``F1_curve.png``, ``P_curve.png``, ``R_curve.png`` and
  ``confusion_matrix.png`` (+ ``.json``) of an evaluation;
* :mod:`.labels` — ``labels.jpg``: label statistics of a dataset split;
* :mod:`.batches` — ``train_batch0.jpg`` …: augmented training images with their boxes (OpenCV);
* :mod:`.palette` — the colour of each class, one for every picture (boxes, labels.jpg, curves);
* :mod:`.text` — text on BGR pictures in any script (DejaVu Sans through PIL; OpenCV draws ASCII only);
* :mod:`.training` — what the trainer calls, where a failing plot warns once and never stops a run.
"""
