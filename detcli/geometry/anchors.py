"""RetinaNet anchors, laid out as in MMDetection 3.x (``AnchorGenerator``).

Facts this file follows on purpose (MMDetection ``task_modules/prior_generators/anchor_generator.py``):

* sizes are exact floats: ``base_size · octave_base_scale · 2^(i / scales_per_octave)``, no rounding
  (torchvision truncates them to integers);
* ratio = h / w, so h = size·√r and w = size/√r;
* the A = |ratios|·|scales| anchors of one location are ordered ratio-outer, scale-inner
  ("scale_major"): (r0, s0), (r0, s1), (r0, s2), (r1, s0), …;
* centre offset 0: the anchors of grid cell (x, y) are centred at (x·stride, y·stride);
* a level is laid out location-major: index = (y·W + x)·A + a, levels concatenated from P3 to P7.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class AnchorGenerator:
    """Multi-level anchor boxes on feature-map grids.

    Args:
        strides: stride of each level in input pixels (square strides).
        ratios: aspect ratios h / w.
        octave_base_scale: anchor size of scale 0 in units of the stride.
        scales_per_octave: scales per octave; scale i is ``octave_base_scale · 2^(i / scales_per_octave)``.
        center_offset: anchor centre in units of the stride inside its grid cell (0 as in MMDetection).
        base_sizes: per-level base size (defaults to the strides).
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        octave_base_scale: float = 4,
        scales_per_octave: int = 3,
        center_offset: float = 0.0,
        base_sizes: Sequence[float] | None = None,
    ) -> None:
        if not 0.0 <= center_offset <= 1.0:
            raise ValueError(f"center_offset must be in [0, 1], got {center_offset}")
        self.strides = tuple(int(s) for s in strides)
        self.base_sizes = tuple(self.strides if base_sizes is None else base_sizes)
        if len(self.base_sizes) != len(self.strides):
            raise ValueError("base_sizes and strides must have the same length")
        self.center_offset = float(center_offset)
        # float64 scales then float32, the precision MMDetection's tensors end up with.
        self.scales = torch.tensor(
            [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)],
            dtype=torch.float64,
        ).float()
        self.ratios = torch.tensor(list(ratios), dtype=torch.float32)
        self.base_anchors = [self._base_anchors(size) for size in self.base_sizes]

    @property
    def num_base_anchors(self) -> int:
        """A, the number of anchors per grid location (same on every level)."""
        return self.ratios.numel() * self.scales.numel()

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def _base_anchors(self, base_size: float) -> Tensor:
        """(A, 4) xyxy anchors of one level centred at ``center_offset · base_size``; ratio-outer order."""
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        ws = (base_size * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
        hs = (base_size * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        cx = self.center_offset * base_size
        cy = self.center_offset * base_size
        return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)

    def grid_anchors(
        self,
        featmap_sizes: Sequence[tuple[int, int]],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Anchors of every level.

        Args:
            featmap_sizes: (H_l, W_l) of each level.
        Returns:
            One (H_l·W_l·A, 4) xyxy tensor per level, index ((y·W_l + x)·A + a).
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature maps, got {len(featmap_sizes)}")
        out = []
        for base, stride, (h, w) in zip(self.base_anchors, self.strides, featmap_sizes):
            shift_x = torch.arange(w, device=device).to(dtype) * stride
            shift_y = torch.arange(h, device=device).to(dtype) * stride
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((base.to(device=device, dtype=dtype)[None] + shifts).reshape(-1, 4))
        return out

    def valid_flags(
        self,
        featmap_sizes: Sequence[tuple[int, int]],
        pad_shapes: Tensor | Sequence[tuple[int, int]],
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Which anchors lie on grid cells covered by each image's own padded area.

        As MMDetection (``AnchorGenerator.valid_flags``): on a level of stride s the cells with
        x < ceil(pad_w / s) and y < ceil(pad_h / s) are valid, where ``pad_shape`` is the image's
        *own* padded shape ``ceil(img_shape / size_divisor) · size_divisor`` (``DetDataPreprocessor``),
        not the batch's. Anchors are not additionally filtered by the image border
        (``allowed_border=-1``).

        Args:
            featmap_sizes: (H_l, W_l) of each level.
            pad_shapes: (B, 2) per-image padded (h, w).
        Returns:
            (B, N) bool, N = Σ_l H_l·W_l·A, same order as ``torch.cat(grid_anchors(...))``.
        """
        pad = torch.as_tensor(pad_shapes, dtype=torch.float64).reshape(-1, 2)
        flags = []
        for stride, (h, w) in zip(self.strides, featmap_sizes):
            valid_h = torch.ceil(pad[:, 0] / stride).clamp(max=h).to(device)
            valid_w = torch.ceil(pad[:, 1] / stride).clamp(max=w).to(device)
            ys = torch.arange(h, device=device, dtype=torch.float64)
            xs = torch.arange(w, device=device, dtype=torch.float64)
            cell = (ys[None, :, None] < valid_h[:, None, None]) & (xs[None, None, :] < valid_w[:, None, None])
            flags.append(cell.reshape(len(pad), h * w, 1).expand(-1, -1, self.num_base_anchors).reshape(len(pad), -1))
        return torch.cat(flags, dim=1)


def overlap_candidates(
    generator: AnchorGenerator, featmap_sizes: Sequence[tuple[int, int]], boxes: Tensor,
    pad_shape: Sequence[int] | None = None,
) -> Tensor:
    """Indices of the anchors that may overlap at least one of ``boxes`` (a superset of those with IoU > 0),
    optionally only those valid for an image of padded shape ``pad_shape`` (as :meth:`AnchorGenerator.valid_flags`).

    Anchor (level l, cell (y, x), a) spans ``x·s + base_a`` with base anchors centred at ``center_offset · s``.
    It can only overlap box ``g`` when its cell's x lies in ``((x1_g − max_a x2_a) / s, (x2_g − min_a x1_a) / s)``
    (same for y), a rectangle of cells per box and level; the union of the rectangles (widened by one cell
    against rounding) gives the cells, and every anchor of a cell is a candidate. The work is (G, H_l + W_l) and
    (H_l, W_l) per level, never (G, N) or even (N,).

    Args:
        generator: the anchors' generator.
        featmap_sizes: (H_l, W_l) of each level.
        boxes: (G, 4) ``xyxy``.
        pad_shape: (h, w) of the image's own padded area; None = every cell.

    Returns:
        (M,) int64 indices into the anchors of ``torch.cat(generator.grid_anchors(featmap_sizes))``, ascending.
    """
    device = boxes.device
    a = generator.num_base_anchors
    out, offset = [], 0
    b = boxes.float()
    for base, stride, (h, w) in zip(generator.base_anchors, generator.strides, featmap_sizes):
        base = base.to(device=device, dtype=torch.float32)
        x_lo = torch.floor((b[:, 0] - base[:, 2].max()) / stride) - 1  # (G,)
        x_hi = torch.ceil((b[:, 2] - base[:, 0].min()) / stride) + 1
        y_lo = torch.floor((b[:, 1] - base[:, 3].max()) / stride) - 1
        y_hi = torch.ceil((b[:, 3] - base[:, 1].min()) / stride) + 1
        xs = torch.arange(w, device=device, dtype=torch.float32)
        ys = torch.arange(h, device=device, dtype=torch.float32)
        in_x = ((xs[None] >= x_lo[:, None]) & (xs[None] <= x_hi[:, None])).float()  # (G, W)
        in_y = ((ys[None] >= y_lo[:, None]) & (ys[None] <= y_hi[:, None])).float()  # (G, H)
        cells = (in_y.t() @ in_x) > 0  # (H, W): some box's rectangle covers the cell
        if pad_shape is not None:
            cells[math.ceil(pad_shape[0] / stride):, :] = False
            cells[:, math.ceil(pad_shape[1] / stride):] = False
        cell_idx = torch.nonzero(cells.flatten()).flatten()
        out.append(offset + (cell_idx[:, None] * a + torch.arange(a, device=device)).flatten())
        offset += h * w * a
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=device)


def padded_shape(img_shape: Sequence[int], size_divisor: int) -> tuple[int, int]:
    """(h, w) rounded up to a multiple of ``size_divisor``: an image's own ``pad_shape`` in MMDetection."""
    h, w = img_shape
    return (int(math.ceil(h / size_divisor)) * size_divisor, int(math.ceil(w / size_divisor)) * size_divisor)
