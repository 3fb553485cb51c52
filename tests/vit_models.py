"""Small transformers for the layout and attention tests: random weights, heads re-initialised
where their library zero-initialises them (so the logits differ between classes)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer


def _random_head(linear: nn.Linear, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.2)
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator) * 0.1)


def build_small_vit(num_classes: int = 5) -> VisionTransformer:
    """torchvision's VisionTransformer: 32x32 input, 8x8 patches (a 4x4 grid), 2 blocks."""
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                              hidden_dim=32, mlp_dim=64, num_classes=num_classes)
    _random_head(model.heads.head, 1)
    return model


def build_one_block_vit(num_classes: int = 5) -> VisionTransformer:
    """Two blocks are enough for rollout by hand; this one has a 2x2 grid and 2 blocks."""
    torch.manual_seed(3)
    model = VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2,
                              hidden_dim=8, mlp_dim=16, num_classes=num_classes)
    _random_head(model.heads.head, 4)
    return model


class ChannelsLastAmbiguous(nn.Module):
    """conv -> [7, 7, 7] permuted to channels last -> LayerNorm(7) -> pool -> linear: the
    permuted output cannot say where its channels are."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 7, 3, padding=1)
        self.to_last = Permute((0, 2, 3, 1))
        self.norm = nn.LayerNorm(7)
        self.fc = nn.Linear(7, num_classes)

    def forward(self, x):
        return self.fc(self.norm(self.to_last(self.conv(x))).mean(dim=(1, 2)))


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def build_ambiguous(num_classes: int = 4) -> ChannelsLastAmbiguous:
    return ChannelsLastAmbiguous(num_classes)


def build_small_swin(num_classes: int = 5) -> nn.Module:
    """torchvision's SwinTransformer at 64x64: 4x4 patches, stages of 16x16 and 8x8 tokens."""
    from torchvision.models.swin_transformer import SwinTransformer
    torch.manual_seed(5)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[1, 2],
                            window_size=[4, 4], num_classes=num_classes)
    _random_head(model.head, 6)
    return model
