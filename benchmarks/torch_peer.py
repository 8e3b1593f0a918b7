"""The PyTorch peer of the encoder benchmark: ResNet-50 (torchvision layout) + Deep3DFaceRecon heads.

Written with torch.nn (no torchvision on these machines): the torchvision ResNet-50 ("v1.5",
stride in the 3x3 conv) followed by global average pooling and Deep3DFaceRecon's seven final 1x1
convolutions (80, 64, 80, 3, 27, 2, 1 -> 257 coefficients), i.e. `ReconNetWrapper`'s layout.
"""
from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
  def __init__(self, cin: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(4 * width)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=False),
                                     nn.BatchNorm2d(4 * width))
                       if stride != 1 or cin != 4 * width else None)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ReconResNet50(nn.Module):
  """images [B, 3, H, W] -> coefficients [B, 257]."""

  def __init__(self, outputs=(80, 64, 80, 3, 27, 2, 1)):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    layers, cin = [], 64
    for i, (w, d) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
      blocks = []
      for j in range(d):
        blocks.append(Bottleneck(cin, w, 2 if i > 0 and j == 0 else 1))
        cin = 4 * w
      layers.append(nn.Sequential(*blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.final_layers = nn.ModuleList([nn.Conv2d(cin, n, 1) for n in outputs])

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    x = x.mean(dim=(2, 3), keepdim=True)
    return torch.flatten(torch.cat([f(x) for f in self.final_layers], 1), 1)
