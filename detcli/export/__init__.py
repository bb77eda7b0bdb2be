"""Deployable graphs of a detector (TorchScript, ONNX) built on the detector contract (``detcli.models.base``)."""
