"""ResNet18 baseline in plain torch (torchvision's layout, no torchvision needed).

Source: He et al. (ResNet), as used for the baselines of ``003_d079139a1795bfd3.txt`` (Table 1)
and the DiagSet classifiers of ``004_ca56ba36b15215b1.txt``. Adaptive average pooling makes it
input-size agnostic; the head has ``num_classes`` logits (e.g. 7 for DiagSet's N, A, R1-R5; 1 for
a sigmoid tumour score).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe.models.registry import register_model

__all__ = ["ResNet18"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; 1x1 stride-s projection shortcut when the shape changes."""

    #: (conv, batch norm) pairs that inference folds into one conv (:func:`wsipipe.models.fold_batchnorm`).
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on (B, C, h, w)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


@register_model("resnet18")
class ResNet18(nn.Module):
    """ResNet18: stem, 4 stages of 2 basic blocks (64/128/256/512), GAP, linear head.

    Parameters
    ----------
    num_classes : int
        Logits out (B, num_classes).
    small_input : bool
        True replaces the 7x7/2 stem + max-pool by a 3x3/1 conv (keeps resolution on 96 px tiles).
    width : int
        Channels of the first stage (64 in the original).
    """

    def __init__(self, num_classes: int = 1, small_input: bool = False, width: int = 64) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        chans = [width, width * 2, width * 4, width * 8]
        stages: list[nn.Module] = []
        in_ch = width
        for i, ch in enumerate(chans):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_ch, ch, stride), BasicBlock(ch, ch, 1)))
            in_ch = ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_ch, self.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def cam_layers(self) -> dict[str, nn.Module]:
        """Grad-CAM target layers: ``"layer3"`` and ``"layer4"`` (the last two stages)."""
        return {"layer3": self.layer3, "layer4": self.layer4}

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) for images (B, 3, H, W)."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
