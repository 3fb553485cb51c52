"""The built-in demo model: a small CNN that classifies the synthetic shapes of `shapes.py`.

Its head is exactly what CAM (Zhou et al. 2016, arXiv:1512.04150) needs:
logits = W . GAP(last conv feature map) + b, with nothing but a ReLU in between, so CAM,
Grad-CAM and their variants all apply to `DEMO_DEFAULT_LAYER` without approximation.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from torch import Tensor, nn

# Per-channel statistics of generated training images (pixels in [0, 1]), as logged by
# train_demo.py; the generator draws colours uniformly, hence the values near 0.5.
DEMO_MEAN = (0.498, 0.497, 0.501)
DEMO_STD = (0.241, 0.242, 0.245)
DEMO_INPUT_SIZE = 64
DEMO_NUM_CLASSES = 8
DEMO_DEFAULT_LAYER = "features.block4.relu"  # 16x16 for a 64x64 input; feeds `pool` directly
DEMO_ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_WEIGHTS_PATH = DEMO_ASSETS_DIR / "demo.safetensors"
DEMO_LABELS_PATH = DEMO_ASSETS_DIR / "demo_labels.txt"

# (in_channels, out_channels, downsample?, dilation) per block: 64 -> 32 -> 16 -> 16 -> 16
# pixels. The last two blocks stay at 16x16 (a CAM 4 pixels per cell) and grow the receptive
# field with dilation instead: 10 (block2) -> 26 -> 58 pixels, so a cell at the centre of the
# largest (48-pixel) object sees all of it and can hold that object's evidence itself.
_BLOCKS = ((3, 16, True, 1), (16, 32, True, 1), (32, 64, False, 2), (64, 128, False, 4))


def _conv_block(in_channels: int, out_channels: int, downsample: bool,
                dilation: int) -> nn.Sequential:
    layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, kernel_size=3,
                                        padding=dilation, dilation=dilation, bias=False))
    if downsample:
        # Pool straight after the conv: BN and ReLU then touch 4x fewer values, which is most
        # of the CPU training time at 64x64.
        layers["pool"] = nn.MaxPool2d(kernel_size=2)
    layers["bn"] = nn.BatchNorm2d(out_channels)  # the conv needs no bias: BN's shift replaces it
    layers["relu"] = nn.ReLU()  # a module, not F.relu, so guided backprop can hook it
    return nn.Sequential(layers)


class DemoNet(nn.Module):
    def __init__(self, num_classes: int = DEMO_NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            (f"block{index}", _conv_block(*spec)) for index, spec in enumerate(_BLOCKS, 1)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(_BLOCKS[-1][1], num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.features(images))))


def build_demo_model(num_classes: int = DEMO_NUM_CLASSES) -> DemoNet:
    """An untrained DemoNet; load `DEMO_WEIGHTS_PATH` into it for the trained one."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return DemoNet(num_classes)
