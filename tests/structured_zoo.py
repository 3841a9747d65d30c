"""Small, self-defined test models for structured pruning (no torchvision): name → (factory, input)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if act else nn.Sequential(*layers)


class Head(nn.Sequential):
    def __init__(self, c: int, classes: int = 5) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 5)
    )


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )  # fmt: skip


def vgg11_bn() -> nn.Module:
    layers: list[nn.Module] = []
    cin = 3
    for v in (8, "M", 16, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    head = [nn.Flatten(), nn.Linear(32, 24), nn.ReLU(), nn.Dropout(), nn.Linear(24, 10)]
    return nn.Sequential(*layers, *head)


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(cin, cout, 3, stride), _cbr(cout, cout, 3, act=False))
        self.down = _cbr(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.down(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * 4
        self.body = nn.Sequential(_cbr(cin, mid, 1), _cbr(mid, mid, 3, stride), _cbr(mid, cout, 1, act=False))
        self.down = _cbr(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        out += self.down(x)  # in-place residual add
        return F.relu(out)


def _resnet(block: type, depths: tuple[int, ...], expansion: int) -> nn.Module:
    layers: list[nn.Module] = [_cbr(3, 8, 3), nn.MaxPool2d(2)]
    cin = 8
    for stage, (width, depth) in enumerate(zip((8, 16, 24, 32), depths, strict=True)):
        for i in range(depth):
            layers.append(block(cin, width, 2 if i == 0 and stage > 0 else 1))
            cin = width * expansion
    return nn.Sequential(*layers, Head(cin))


def resnet18() -> nn.Module:
    return _resnet(Basic, (2, 2, 2, 2), 1)


def resnet50() -> nn.Module:
    return _resnet(Bottleneck, (3, 4, 6, 3), 4)


class DenseBlock(nn.Module):
    def __init__(self, cin: int = 8, growth: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, cin, 3, padding=1)
        widths = [cin + i * growth for i in range(layers)]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, growth, 3, padding=1)) for w in widths
        )
        self.head = Head(cin + layers * growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(torch.cat(features, 1))


class Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 8)
        self.b1 = _cbr(8, 4, 1)
        self.b2 = nn.Sequential(_cbr(8, 4, 1), _cbr(4, 6, 3))
        self.b3 = nn.Sequential(_cbr(8, 2, 1), _cbr(2, 4, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(8, 4, 1))
        self.head = Head(18)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = _cbr(3, 8), nn.Sequential(nn.MaxPool2d(2), _cbr(8, 16))
        self.mid = nn.Sequential(nn.MaxPool2d(2), _cbr(16, 16))
        self.up2, self.dec2 = nn.ConvTranspose2d(16, 8, 2, stride=2), _cbr(24, 8)
        self.up1, self.dec1 = nn.ConvTranspose2d(8, 4, 2, stride=2), _cbr(12, 4)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([e2, self.up2(self.mid(e2))], 1))
        return self.out(self.dec1(torch.cat([e1, self.up1(d2)], 1)))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1) between a stem and a head: chunk, branch, cat, channel shuffle."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = _cbr(3, c)
        half = c // 2
        self.branch = nn.Sequential(
            _cbr(half, half, 1), _cbr(half, half, 3, groups=half, act=False), _cbr(half, half, 1)
        )
        self.head = nn.Sequential(_cbr(c, 8, 1), Head(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat([x1, self.branch(x2)], 1)
        b, c, h, w = out.shape
        out = out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.head(out)


class SEBlock(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem, self.conv = _cbr(3, c), nn.Sequential(_cbr(c, c, 3, groups=c), _cbr(c, c, 1))
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.stem(x))
        gate = torch.sigmoid(self.fc2(F.silu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head(x * gate)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return self.head(x + y.permute(0, 3, 1, 2))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _cbr(cin, mid, 1), _cbr(mid, mid, 3, stride, groups=mid), _cbr(mid, cout, 1, act=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


def mobilenet_v2() -> nn.Module:
    layers: list[nn.Module] = [_cbr(3, 8, 3, 2)]
    cin = 8
    for expand, cout, repeats, stride in ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 1, 1)):
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    return nn.Sequential(*layers, _cbr(cin, 32, 1), Head(32))


ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (mlp, (2, 3, 4, 4)),
    "lenet5": (lenet5, (2, 1, 28, 28)),
    "vgg11_bn": (vgg11_bn, (2, 3, 32, 32)),
    "resnet18": (resnet18, (2, 3, 32, 32)),
    "resnet50": (resnet50, (1, 3, 32, 32)),
    "densenet_block": (DenseBlock, (2, 3, 8, 8)),
    "inception_block": (Inception, (2, 3, 8, 8)),
    "unet": (UNet, (2, 3, 16, 16)),
    "shufflenet_unit": (ShuffleUnit, (2, 3, 8, 8)),
    "se_block": (SEBlock, (2, 3, 8, 8)),
    "convnext_block": (ConvNeXtBlock, (2, 3, 16, 16)),
    "mobilenet_v2": (mobilenet_v2, (2, 3, 32, 32)),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model with randomised BatchNorm statistics (so that nothing is trivially zero), and an input."""
    factory, shape = ZOO[name]
    model = factory()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval(), torch.randn(shape)


def _transformers():  # type: ignore[no-untyped-def]
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers

    return transformers


def hf_bert() -> nn.Module:
    tf = _transformers()
    config = tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=16)  # fmt: skip
    return tf.BertModel(config, add_pooling_layer=False)


def hf_gpt2() -> nn.Module:
    tf = _transformers()
    config = tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=16,
                           bos_token_id=0, eos_token_id=0)  # fmt: skip
    return tf.GPT2Model(config)


def hf_llama() -> nn.Module:
    tf = _transformers()
    config = tf.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    return tf.LlamaModel(config)


def hf_vit() -> nn.Module:
    tf = _transformers()
    config = tf.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=48)  # fmt: skip
    return tf.ViTModel(config, add_pooling_layer=False)


def hf_inputs(name: str) -> dict[str, torch.Tensor | bool]:
    """Keyword inputs of the HF zoo model ``name`` (random ids / pixels, fixed seed)."""
    generator = torch.Generator().manual_seed(0)
    if name == "hf_vit":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=generator)}
    inputs: dict[str, torch.Tensor | bool] = {"input_ids": torch.randint(0, 50, (2, 7), generator=generator)}
    if name == "hf_llama":
        inputs["use_cache"] = False
    return inputs


HF_ZOO: dict[str, Callable[[], nn.Module]] = {
    "hf_bert": hf_bert, "hf_gpt2": hf_gpt2, "hf_llama": hf_llama, "hf_vit": hf_vit,
}  # fmt: skip
