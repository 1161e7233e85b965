"""JPEG compression artefacts as batched tensor ops: YCbCr, 8×8 block DCT, quantization with the standard IJG
tables scaled for a quality, inverse DCT. Chroma is not subsampled. Written here because the libraries that encode
JPEG (PIL, torchvision.io) work image by image, which costs more than the model's forward pass on 2 cores."""

from __future__ import annotations

import math

import torch

LUMA = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)
CHROMA = torch.full((8, 8), 99.0)
CHROMA[:4, :4] = torch.tensor(
    [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], dtype=torch.float32
)


def _dct_matrix() -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float32)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m


def _table(base: torch.Tensor, quality: int) -> torch.Tensor:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return ((base * scale + 50) / 100).floor().clamp(1, 255)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress and decompress a batch of RGB images in [0, 1] (N×3×H×W, H and W multiples of 8)."""
    n, c, h, w = x.shape
    if c != 3 or h % 8 or w % 8:
        return x
    rgb = x * 255
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    ycc = torch.stack(
        [
            0.299 * r + 0.587 * g + 0.114 * b - 128,
            -0.168736 * r - 0.331264 * g + 0.5 * b,
            0.5 * r - 0.418688 * g - 0.081312 * b,
        ],
        1,
    )
    blocks = ycc.reshape(n, 3, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)
    d = _dct_matrix()
    coeffs = d @ blocks @ d.T
    tables = torch.stack([_table(LUMA, quality), _table(CHROMA, quality), _table(CHROMA, quality)])
    tables = tables.view(1, 3, 1, 1, 8, 8)
    restored = d.T @ ((coeffs / tables).round() * tables) @ d
    y, cb, cr = restored.permute(0, 1, 2, 4, 3, 5).reshape(n, 3, h, w).unbind(1)
    y = y + 128
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return out / 255
