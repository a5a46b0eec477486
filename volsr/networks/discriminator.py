"""A small 3D patch discriminator for SR GANs: MONAI's ``PatchDiscriminator``, spectrally normalised.

MONAI's :class:`monai.networks.nets.PatchDiscriminator` (Pix2PixHD) returns a list of every layer's
output with the logits last; :class:`PatchDiscriminator3D` returns them as ``(logits, features)`` so
the adversarial loss and the feature-matching loss read what they use::

    x (B, C, P, P, P)                   -- an HR patch, or the generator's SR patch (normalised)
    f0 = initial_conv(x)                (B, F, P/2, P/2, P/2)        4^3 conv, stride 2, LeakyReLU
    f1 = layer 0(f0)                    (B, 2F, P/4, P/4, P/4)       stride 2
    ...                                                               ``num_layers_d`` layers, the
    fL = layer L-1(...)                 (B, 2^L F, q - 1, ...)       last one with stride 1
    logits = final_conv(fL)             (B, 1, q - 2, q - 2, q - 2)   one score per receptive field

where ``q = P / 2^L``. With the defaults (``channels=16``, ``num_layers_d=2``) a 32^3 patch gives
6^3 scores, each seeing a 34^3-voxel neighbourhood; 16^3 is the smallest patch that still gives one
score (2^3). :meth:`PatchDiscriminator3D.output_shape` computes it.

Spectral normalisation (Miyato et al., "Spectral Normalization for Generative Adversarial Networks",
ICLR 2018) of every convolution keeps the discriminator 1-Lipschitz per layer, which stabilises
training without batch statistics: batch norm with 2-4 patches per batch, evaluated separately on
real and fake batches, is noisy. With ``spectral_norm=True`` (default) no feature normalisation is
used and every convolution has a bias; ``spectral_norm=False, norm="BATCH"`` is MONAI's original.

Papers: Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (pix2pix,
CVPR 2017); Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with Conditional
GANs" (pix2pixHD, CVPR 2018), whose feature-matching loss the GAN trainer uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

__all__ = ["PatchDiscriminatorConfig", "PatchDiscriminator3D"]


@dataclass
class PatchDiscriminatorConfig:
    """Arguments of :class:`PatchDiscriminator3D` (MONAI names); stored in every checkpoint.

    Attributes:
        spatial_dims: 3 (2 works for slices).
        in_channels: channels of the judged image.
        channels: features of the first layer, doubled by every further layer.
        num_layers_d: strided feature layers after the first convolution (MONAI's ``num_layers_d``).
        kernel_size: convolution size of every layer.
        negative_slope: of the LeakyReLU after each feature layer.
        spectral_norm: spectrally normalise every convolution (then ``norm`` is ignored).
        norm: MONAI norm name of the feature layers when ``spectral_norm`` is off (e.g. ``"BATCH"``,
            ``"INSTANCE"``), or ``None``.
    """

    spatial_dims: int = 3
    in_channels: int = 1
    channels: int = 16
    num_layers_d: int = 2
    kernel_size: int = 4
    negative_slope: float = 0.2
    spectral_norm: bool = True
    norm: str | None = None


class SpectralNormFloat32(_SpectralNorm):
    """PyTorch's spectral normalisation (same buffers and state dict), computed in float32 under autocast.

    Why: it is a normalisation, which autocast otherwise keeps in float32; inside a bfloat16 region the
    power iteration's products would run in bfloat16, and every logit of the discriminator is divided
    by the largest singular value it estimates.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight.float())


class PatchDiscriminator3D(nn.Module):
    """Patch discriminator returning ``(logits, features)``; see the module docstring for shapes.

    Args:
        config: a :class:`PatchDiscriminatorConfig`; or its fields as keyword arguments.

    Example:
        >>> d = PatchDiscriminator3D(channels=8)
        >>> logits, features = d(torch.zeros(2, 1, 32, 32, 32))
        >>> tuple(logits.shape), [tuple(f.shape[1:2]) for f in features]
        ((2, 1, 6, 6, 6), [(8,), (16,), (32,)])
    """

    def __init__(self, config: PatchDiscriminatorConfig | None = None, **kwargs) -> None:
        super().__init__()
        cfg = config or PatchDiscriminatorConfig(**kwargs)
        for name in ("spatial_dims", "in_channels", "channels", "num_layers_d", "kernel_size"):
            value = getattr(cfg, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if cfg.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {cfg.spatial_dims!r}")
        self.config = cfg
        norm = None if cfg.spectral_norm else cfg.norm
        self.net = PatchDiscriminator(
            spatial_dims=cfg.spatial_dims,
            channels=cfg.channels,
            in_channels=cfg.in_channels,
            out_channels=1,
            num_layers_d=cfg.num_layers_d,
            kernel_size=cfg.kernel_size,
            activation=("LEAKYRELU", {"negative_slope": cfg.negative_slope}),
            norm=norm,  # type: ignore[arg-type]  # MONAI's Convolution accepts None: no norm layer
            bias=norm is None,  # a bias is redundant only before a normalisation layer
        )
        if cfg.spectral_norm:
            for module in self.net.modules():
                if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                    parametrize.register_parametrization(module, "weight", SpectralNormFloat32(module.weight))

    def arguments(self) -> dict:
        """The constructor arguments, for checkpoints."""
        return asdict(self.config)

    def output_shape(self, patch: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial shape of the logits for an input of spatial shape ``patch`` (no forward pass)."""
        k = self.config.kernel_size
        shape = list(patch)
        strides = [2] * self.config.num_layers_d + [1]  # initial conv, then the feature layers
        for s in strides:
            shape = [(n + 2 - k) // s + 1 for n in shape]  # padding 1
        pad = (k - 1) // 2
        return tuple(n + 2 * pad - k + 1 for n in shape)  # final conv, stride 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score ``x`` (B, C, *S) patch-wise.

        Returns:
            ``logits`` (B, 1, *S') before any activation, and ``features``: the outputs of the
            ``num_layers_d + 1`` feature layers, (B, F * 2^l, *S_l) each, for feature matching.
        """
        outputs = self.net(x)  # [f0 (B, F, S/2), f1 (B, 2F, S/4), ..., logits (B, 1, S')]
        return outputs[-1], outputs[:-1]
