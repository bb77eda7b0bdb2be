"""Inspection of label assignment: ``detcli inspect-anchors`` (statistics and pictures)."""
