"""YOLOv6 v3.0 variants as data (upstream configs/yolov6{n,s,m,l}.py, the P6 configs yolov6{n,s,m,l}6.py
configs/mbla and configs/yolov6_lite), plus the derived stage sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

# Base (l-sized) stage repeats and channels: backbone 5 stages, then neck 4 repeats / 6 channels.
BASE_REPEATS = (1, 6, 12, 18, 6, 12, 12, 12, 12)
BASE_CHANNELS = (64, 128, 256, 512, 1024, 256, 128, 128, 256, 256, 512)
STRIDES = (8, 16, 32)
# P6: backbone 6 stages (a stride-64 stage), neck 6 repeats / 6 channels, four head levels.
BASE_REPEATS_P6 = (1, 6, 12, 18, 6, 6, 12, 12, 12, 12, 12, 12)
BASE_CHANNELS_P6 = (64, 128, 256, 512, 768, 1024, 512, 256, 128, 256, 512, 1024)
STRIDES_P6 = (8, 16, 32, 64)
# MBLA (upstream configs/mbla): the CSP layout with MBLA stages and fewer base repeats
BASE_REPEATS_MBLA = (1, 4, 8, 8, 4, 8, 8, 8, 8)
LITE_HEAD_CHANNELS = 96  # YOLOv6-Lite's neck and head width, whatever the multiple
LITE_STEM_CHANNELS = 24  # and its stem's
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
    p6: bool = False  # a stride-64 stage and head level; upstream trains these at 1280
    mbla: bool = False  # MBLABlock stages instead of BepC3 (csp layouts)
    lite: bool = False  # YOLOv6-Lite: its own backbone, neck and head (model.lite); width_multiple only

    @property
    def repeats(self) -> tuple[int, ...]:
        base = BASE_REPEATS_P6 if self.p6 else BASE_REPEATS_MBLA if self.mbla else BASE_REPEATS
        return tuple(max(round(r * self.depth_multiple), 1) if r > 1 else r for r in base)

    @property
    def channels(self) -> tuple[int, ...]:
        base = BASE_CHANNELS_P6 if self.p6 else BASE_CHANNELS
        return tuple(math.ceil(c * self.width_multiple / 8) * 8 for c in base)

    @property
    def stem_channels(self) -> int:
        return LITE_STEM_CHANNELS if self.lite else self.channels[0]

    @property
    def head_channels(self) -> tuple[int, ...]:
        if self.lite:
            return (LITE_HEAD_CHANNELS,) * 4
        c = self.channels
        return (c[8], c[9], c[10], c[11]) if self.p6 else (c[6], c[8], c[10])

    @property
    def strides(self) -> tuple[int, ...]:
        return STRIDES_P6 if self.p6 or self.lite else STRIDES

    @property
    def input_size(self) -> int:
        """The input side upstream trains and evaluates the variant at (the default here)."""
        return 1280 if self.p6 else 320 if self.lite else 640

    @property
    def reg_max(self) -> int:
        return DFL_BINS if self.use_dfl else 0


VARIANTS = {
    "n": Variant("n", 0.33, 0.25, csp=False, block="repvgg", csp_e=None, use_dfl=False),
    "s": Variant("s", 0.33, 0.50, csp=False, block="repvgg", csp_e=None, use_dfl=False),
    "m": Variant("m", 0.60, 0.75, csp=True, block="repvgg", csp_e=2 / 3, use_dfl=True),
    "l": Variant("l", 1.00, 1.00, csp=True, block="conv_silu", csp_e=1 / 2, use_dfl=True),
    "n6": Variant("n6", 0.33, 0.25, csp=False, block="repvgg", csp_e=None, use_dfl=False, p6=True),
    "s6": Variant("s6", 0.33, 0.50, csp=False, block="repvgg", csp_e=None, use_dfl=False, p6=True),
    "m6": Variant("m6", 0.60, 0.75, csp=True, block="repvgg", csp_e=2 / 3, use_dfl=True, p6=True),
    "l6": Variant("l6", 1.00, 1.00, csp=True, block="conv_silu", csp_e=1 / 2, use_dfl=True, p6=True),
    **{f"{size}_mbla": Variant(f"{size}_mbla", depth, width, csp=True, block="conv_silu", csp_e=1 / 2, use_dfl=True,
                               mbla=True)
       for size, depth, width in (("s", 0.5, 0.5), ("m", 0.5, 0.75), ("l", 0.5, 1.0), ("x", 1.0, 1.0))},
    **{f"lite_{size}": Variant(f"lite_{size}", 1.0, width, csp=False, block="hardswish", csp_e=None, use_dfl=False,
                               lite=True)
       for size, width in (("s", 0.7), ("m", 1.1), ("l", 1.5))},
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown YOLOv6 size {name!r}; choose one of {', '.join(VARIANTS)}") from None
