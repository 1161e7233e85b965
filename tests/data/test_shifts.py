import pytest
import torch

from autocompress.data.shifts import SHIFTS, Shift
from autocompress.errors import AutoCompressError


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_shifts_are_deterministic_uint8_and_grow_with_severity(name: str, digits) -> None:
    images = torch.randint(30, 220, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    changes = []
    for severity in (1, 3, 5):
        out = Shift(name, severity).apply(images, seed=4)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        assert torch.equal(out, Shift(name, severity).apply(images, seed=4))
        changes.append((out.float() - images.float()).abs().mean().item())
    assert changes[0] > 0 and changes[0] <= changes[1] <= changes[2]


@pytest.mark.parametrize(
    ("spec", "expected"), [("noise:3", "gaussian_noise:3"), ("blur:1", "gaussian_blur:1"), ("jpeg:5", "jpeg:5")]
)
def test_parse(spec: str, expected: str) -> None:
    assert str(Shift.parse(spec)) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("noise", "name:severity"),
        ("noise:x", "name:severity"),
        ("noise:6", "1 <= severity <= 5"),
        ("nosie:2", "Did you mean 'noise'"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(AutoCompressError, match=message):
        Shift.parse(spec)
