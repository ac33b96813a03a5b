"""A MobileNetV2-class network in plain torch (width 1.0, 224x224x3 input, 1000 classes).

Weights are random, but the BatchNorm layers get randomized affine parameters and running
statistics estimated on smooth random images, so activations stay well scaled through the
depth of the network and the logits differ from input to input, as a trained network's do.
"""

import torch
from torch import nn

# (expansion, output channels, repeats, first stride), as in the MobileNetV2 paper.
_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if relu else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        expand = _conv_bn(cin, hidden, 1) if expansion != 1 else []
        self.block = nn.Sequential(*expand, *_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                   *_conv_bn(hidden, cout, 1, relu=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        layers, cin = _conv_bn(3, 32, 3, 2), 32
        for expansion, cout, repeats, stride in _BLOCKS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.features = nn.Sequential(*layers, *_conv_bn(cin, 1280, 1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1))


def smooth_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Random 224x224x3 images with image-like spatial structure: upsampled coarse noise plus grain."""
    coarse = torch.randn(count, 3, 14, 14, generator=generator)
    images = nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False)
    return images + 0.1 * torch.randn(count, 3, 224, 224, generator=generator)


def mobilenet_v2(seed: int = 0) -> MobileNetV2:
    """The network in eval mode, with randomized BatchNorm parameters and estimated statistics."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MobileNetV2()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5, generator=generator)
            bn.bias.normal_(0.0, 0.1, generator=generator)
            bn.momentum = None  # running statistics become the plain average over the batches below
        model.train()
        for _ in range(4):
            model(smooth_images(16, generator))
    return model.eval()
