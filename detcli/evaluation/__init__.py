"""COCO evaluation: running a detector over a dataset, COCOeval, curves, confusion matrix, duplicate detections."""
