"""Scalar sigmoid and softplus, for losses computed by hand."""
from __future__ import annotations

import math


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
