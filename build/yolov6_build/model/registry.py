"""YOLOv6 v3.0 variants as data (upstream configs/yolov6{n,s,m,l}.py), plus the derived stage sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

# Base (l-sized) stage repeats and channels: backbone 5 stages, then neck 4 repeats / 6 channels.
BASE_REPEATS = (1, 6, 12, 18, 6, 12, 12, 12, 12)
BASE_CHANNELS = (64, 128, 256, 512, 1024, 256, 128, 128, 256, 256, 512)
STRIDES = (8, 16, 32)
DFL_BINS = 16  # reg_max used by DFL heads (and the size of the always-present projection)
HEAD_VARIANTS = ("plain", "distill")


@dataclass(frozen=True)
class Variant:
    """One model size. ``block`` is the basic block: 'repvgg' (RepVGGBlock) or 'conv_silu' (ConvBNSiLU)."""

    name: str
    depth_multiple: float
    width_multiple: float
    csp: bool  # CSPBepBackbone + CSPRepBiFPANNeck (m/l) instead of EfficientRep + RepBiFPANNeck (n/s)
    block: str
    csp_e: float | None
    use_dfl: bool

    @property
    def repeats(self) -> tuple[int, ...]:
        return tuple(max(round(r * self.depth_multiple), 1) if r > 1 else r for r in BASE_REPEATS)

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(math.ceil(c * self.width_multiple / 8) * 8 for c in BASE_CHANNELS)

    @property
    def head_channels(self) -> tuple[int, int, int]:
        c = self.channels
        return c[6], c[8], c[10]

    @property
    def reg_max(self) -> int:
        return DFL_BINS if self.use_dfl else 0


VARIANTS = {
    "n": Variant("n", 0.33, 0.25, csp=False, block="repvgg", csp_e=None, use_dfl=False),
    "s": Variant("s", 0.33, 0.50, csp=False, block="repvgg", csp_e=None, use_dfl=False),
    "m": Variant("m", 0.60, 0.75, csp=True, block="repvgg", csp_e=2 / 3, use_dfl=True),
    "l": Variant("l", 1.00, 1.00, csp=True, block="conv_silu", csp_e=1 / 2, use_dfl=True),
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown YOLOv6 size {name!r}; choose one of {', '.join(VARIANTS)}") from None
