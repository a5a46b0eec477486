"""A 3D residual CNN for super-resolution on the output grid (RCAN-style body, mDCSRN-style input).

The network never sees a low-resolution grid: the caller re-grids the low-resolution scan to the
output grid (:func:`volsr.networks.input_grid.regrid_input`: a cubic B-spline, or zero-filled Fourier
interpolation for a network trained on reduced k-space matrices), so any per-axis, non-integer factor
is handled, and the network predicts only the residual the up-sampling cannot::

    x (B, C [+ G], X, Y, Z)  -- the spline-interpolated scan, intensities normalised, optionally
                                followed by G = 9 grid-encoding channels: where each voxel sits
                                inside the acquired voxel (:mod:`volsr.geometry.grid_encoding`)
    h = head(x)                         (B, F, X, Y, Z)   3x3x3 conv
    h = h + coarse(h)                   (B, F, X, Y, Z)   optional context branch (B blocks of 2F
                                                           features at half resolution)
    h = h + tail(blocks(h))             (B, F, X, Y, Z)   N residual blocks, each
                                                           conv-act-conv(-channel attention) + skip
    y = x[:, :C] + out(h)               (B, C, X, Y, Z)   3x3x3 conv to the residual

Receptive field: ``2 * (2 N + 3) + 1`` voxels per axis (2 N + 3 convolutions of size 3), plus
``2 * (4 B + 1)`` with the context branch (:attr:`ResidualSR3D.receptive_field`).
Cost: about ``2 * 27 * F * F * (2 N + 1)`` FLOPs per output voxel (multiply-adds counted as two),
plus ``2 * 27 * (2F)^2 * 2 B / 8`` for the branch; see :func:`flops_per_voxel`, which measures it
with ``torch.utils.flop_counter``. The shipped ``volsr_cnn3d`` (F 32, N 6, B 6, grid encoding):
1.75 M parameters, 1078 kFLOP per output voxel, receptive field 81 voxels (with N 4 and B 4:
1.19 M, 746 kFLOP, 57 voxels).

Presets (:data:`PRESETS`), measured with :func:`flops_per_voxel` and ``count_parameters``:

=========  ========  ======  ===========  ==============  ===============  =========
preset     features  blocks  attention    parameters      kFLOP / voxel    RF (vox)
=========  ========  ======  ===========  ==============  ===============  =========
light      16        2       no           35.5 k          71               15
base       24        4       yes          143 k           283              23
large      32        8       yes          477 k           944              39
=========  ========  ======  ===========  ==============  ===============  =========

Papers: Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention Networks"
(RCAN, ECCV 2018); Chen et al., "Efficient and accurate MRI super-resolution using a generative
adversarial network and 3D multi-level densely connected network" (mDCSRN, MICCAI 2018).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.blocks import ChannelSELayer
from torch import nn

from volsr.networks.input_grid import INPUT_INTERPOLATIONS

__all__ = ["ResidualSRConfig", "ResidualSR3D", "PRESETS", "flops_per_voxel", "count_parameters"]


@dataclass
class ResidualSRConfig:
    """Arguments of :class:`ResidualSR3D` (MONAI names); stored in every checkpoint."""

    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 1
    features: int = 24
    num_blocks: int = 4
    attention: bool = True
    reduction: int = 4
    negative_slope: float = 0.1
    #: extra input channels after the image ones: the grid encoding of
    #: :mod:`volsr.geometry.grid_encoding` (``GRID_CHANNELS``), or 0 for the image alone
    grid_channels: int = 0
    #: residual blocks of the half-resolution context branch (:class:`CoarseBranch`); 0: none
    coarse_blocks: int = 0
    #: features of the context branch (0: twice ``features``)
    coarse_features: int = 0
    #: the up-sampling the input is made with and the network refines
    #: (:func:`volsr.networks.input_grid.regrid_input`): ``"cubic"`` B-spline or ``"fourier"``
    #: (zero-filled k-space, for reduced acquisition matrices)
    input_interpolation: str = "cubic"


PRESETS: dict[str, ResidualSRConfig] = {
    "light": ResidualSRConfig(features=16, num_blocks=2, attention=False),
    "base": ResidualSRConfig(features=24, num_blocks=4, attention=True),
    "large": ResidualSRConfig(features=32, num_blocks=8, attention=True),
}


def _conv(cfg: ResidualSRConfig, cin: int, cout: int) -> nn.Module:
    conv = nn.Conv3d if cfg.spatial_dims == 3 else nn.Conv2d
    return conv(cin, cout, kernel_size=3, padding=1)


def _exporting() -> bool:
    """True while ``torch.export`` (the ONNX exporter) or ``torch.jit.trace`` records the network: both
    record one size; a scripted network keeps the branch."""
    if torch.jit.is_scripting():
        return False
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


class SqueezeExcitation3D(ChannelSELayer):
    """MONAI's ``ChannelSELayer`` (same parameters and weights) with a faster pooling and an in-place
    option.

    Hand-written because on CPU, ``adaptive_avg_pool3d`` of a bfloat16 channels-last tensor first
    copies it all to float32 (15 % of the base network's time on a 96^3 window in ``torch.profiler``);
    the mean as a matrix product with a ones vector reads the tensor once (9x faster, same values).
    ``inplace=True`` re-weights ``x`` itself (inference only: no other activation-sized buffer).
    """

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        voxels = x[0, 0].numel()
        rows = x.movedim(1, -1).reshape(b, voxels, c)  # a view for channels-last tensors
        if rows.dtype == torch.float16:  # a sum over voxels passes float16's 65504: reduce in float32
            pooled = rows.mean(dim=1, dtype=torch.float32)
        else:
            ones = torch.ones(b, 1, voxels, dtype=rows.dtype, device=rows.device)
            pooled = torch.matmul(ones, rows).view(b, c) / voxels
        weights = self.fc(pooled).view([b, c] + [1] * (x.dim() - 2))
        return x.mul_(weights) if inplace else x * weights


class ResidualBlock(nn.Module):
    """conv-act-conv, optionally re-weighted by squeeze-and-excitation channel attention, plus skip."""

    def __init__(self, cfg: ResidualSRConfig, features: int | None = None) -> None:
        super().__init__()
        f = features or cfg.features
        self.conv1 = _conv(cfg, f, f)
        self.act = nn.LeakyReLU(cfg.negative_slope, inplace=True)
        self.conv2 = _conv(cfg, f, f)
        self.attention = SqueezeExcitation3D(cfg.spatial_dims, f, r=cfg.reduction) if cfg.attention else None

    def start_as_identity(self) -> None:
        """Zero the second conv: the residual is 0, so a block added to a trained network (by
        :func:`volsr.networks.checkpoint.load_grown_weights`) leaves its function as it was; the first conv
        stays random so training can move both."""
        nn.init.zeros_(self.conv2.weight)
        if self.conv2.bias is not None:
            nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Without autograd (inference) the residual's own buffer takes the re-weighting and the sum:
        no fresh activation-sized buffer, and ``h`` is left intact (block 0's is the long skip)."""
        r = self.conv2(self.act(self.conv1(h)))
        no_grad = not torch.is_grad_enabled()
        if self.attention is not None:
            r = self.attention(r, inplace=no_grad)  # r is ours: re-weight it in place
        return r.add_(h) if no_grad else h + r


class CoarseBranch(nn.Module):
    """Context at half resolution, added to the head's features: a strided 2x2x2 conv to
    ``coarse_features``, residual blocks, a transposed 2x2x2 conv back.

    Why: at x4 through-plane the network needs several acquired slices of context; at half
    resolution a block costs an eighth of the voxels, so twice the features and twice the reach
    cost a quarter of a full-resolution block. The transposed conv starts at zero, so a network
    grown to have this branch (:func:`volsr.networks.checkpoint.load_grown_weights`) starts as the one it
    grew from. Odd sizes are padded by replication and cropped back.
    """

    def __init__(self, cfg: ResidualSRConfig) -> None:
        super().__init__()
        f, g = cfg.features, cfg.coarse_features or 2 * cfg.features
        three_d = cfg.spatial_dims == 3
        conv, up = (nn.Conv3d, nn.ConvTranspose3d) if three_d else (nn.Conv2d, nn.ConvTranspose2d)
        self.down = conv(f, g, kernel_size=2, stride=2)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg, g) for _ in range(cfg.coarse_blocks)])
        self.up = up(g, f, kernel_size=2, stride=2)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # written for TorchScript (explicit loops, no unpacking): shapes stay dynamic in an export
        pad: list[int] = []
        odd = False
        for d in range(h.dim() - 1, 1, -1):  # F.pad lists the last axis first
            pad += [0, h.shape[d] % 2]
            odd = odd or h.shape[d] % 2 == 1
        # an export traces one size: pad always (by 0 on even axes) so the graph takes both parities
        c = nn.functional.pad(h, pad, mode="replicate") if odd or _exporting() else h
        c = self.up(self.blocks(self.down(c)))
        for d in range(2, h.dim()):
            c = c.narrow(d, 0, h.shape[d])
        return c


class ResidualSR3D(nn.Module):
    """Residual SR generator on the output grid; see the module docstring for the data flow.

    Scriptable (``torch.jit.script``) and exportable to ONNX with dynamic spatial sizes, odd ones
    included (``python -m monai.bundle ckpt_export`` and ``onnx_export``; the bundle README has the
    commands).
    """

    __jit_unused_properties__ = ["receptive_field"]  # reads the config dataclass, which TorchScript cannot

    def __init__(self, config: ResidualSRConfig | None = None, **kwargs) -> None:
        super().__init__()
        cfg = config or ResidualSRConfig(**kwargs)
        if cfg.input_interpolation not in INPUT_INTERPOLATIONS:
            raise ValueError(
                f"input_interpolation must be one of {INPUT_INTERPOLATIONS}, got {cfg.input_interpolation!r}"
            )
        self.config = cfg
        self.in_channels = cfg.in_channels  # a plain int: TorchScript reads no dataclass
        f = cfg.features
        self.head = _conv(cfg, cfg.in_channels + cfg.grid_channels, f)
        self.coarse = CoarseBranch(cfg) if cfg.coarse_blocks else None
        self.blocks = nn.Sequential(*[ResidualBlock(cfg) for _ in range(cfg.num_blocks)])
        self.tail = _conv(cfg, f, f)
        self.out = _conv(cfg, f, cfg.out_channels)
        # start as the identity map (residual 0): training begins at the spline baseline
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @classmethod
    def from_preset(cls, name: str) -> ResidualSR3D:
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(PRESETS[name])

    def arguments(self) -> dict:
        """The constructor arguments, for checkpoints."""
        return asdict(self.config)

    @property
    def receptive_field(self) -> int:
        """Voxels per axis that can change one output voxel: ``2 N + 3`` convolutions of size 3 each
        side; the context branch adds ``4 B + 1`` (2 B half-resolution convolutions and the 2x2x2
        down/up pair)."""
        half = 2 * self.config.num_blocks + 3
        if self.config.coarse_blocks:
            half += 4 * self.config.coarse_blocks + 1
        return 2 * half + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels + grid_channels, *S)``, the image channels first."""
        # Without autograd, activations are updated in place: on CPU a fresh activation-sized buffer
        # is page-faulted in (a bf16 24 x 96^3 multiply: 107 ms into a new tensor, 10 ms in place).
        # Same numbers either way (tests/test_residual_sr.py).
        inplace = not torch.is_grad_enabled()
        h = self.head(x)  # (B, F, *S)
        if self.coarse is not None:
            c = self.coarse(h)
            h = h.add_(c) if inplace else h + c  # (B, F, *S): half-resolution context
        t = self.tail(self.blocks(h))  # the blocks leave h intact for the long skip
        t = t.add_(h) if inplace else t + h  # (B, F, *S)
        return x[:, : self.in_channels] + self.out(t)  # (B, C, *S): spline input + residual


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_voxel(model: nn.Module, size: int = 8) -> float:
    """Forward FLOPs per output voxel, measured by ``torch.utils.flop_counter`` on a small cube."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = getattr(model, "config", None)
    channels = getattr(cfg, "in_channels", 1) + getattr(cfg, "grid_channels", 0)
    x = torch.zeros(1, channels, size, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / size**3
