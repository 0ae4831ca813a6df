"""What the CPU is, as the device choices read it."""
import platform

import pytest

from mmdet_cdetr.ops import processor_info


def _with_cpuinfo(monkeypatch, fields):
    monkeypatch.setattr(
        processor_info, 'cpuinfo_fields',
        lambda keys: {k: fields[k]
                      for k in keys if k in fields})


@pytest.mark.parametrize('vendor, intel', [('GenuineIntel', True),
                                           ('AuthenticAMD', False)])
def test_vendor_is_read_from_cpuinfo(monkeypatch, vendor, intel):
    _with_cpuinfo(monkeypatch, {'vendor_id': vendor})
    assert processor_info.is_intel_cpu.__wrapped__() is intel


def test_vendor_falls_back_to_the_platform(monkeypatch):
    """Windows has no /proc/cpuinfo; it names the vendor instead."""
    _with_cpuinfo(monkeypatch, {})
    monkeypatch.setattr(platform, 'processor',
                        lambda: 'Intel64 Family 6 Model 143, GenuineIntel')
    assert processor_info.is_intel_cpu.__wrapped__()


@pytest.mark.parametrize(
    'flags, amx',
    [
        ('fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8', True),
        ('fpu avx512f avx512_bf16 amx_tile amx_int8', False),  # no bf16 tiles
        ('fpu avx512f avx512_bf16', False),
    ])
def test_amx_bf16_is_read_from_the_flags(monkeypatch, flags, amx):
    _with_cpuinfo(monkeypatch, {'flags': flags})
    assert processor_info.cpu_has_amx_bf16.__wrapped__() is amx


def test_no_cpuinfo_means_no_amx(monkeypatch):
    _with_cpuinfo(monkeypatch, {})
    assert not processor_info.cpu_has_amx_bf16.__wrapped__()
