"""The package imports, reports how it was built, and registers every op for
the CPU and the fake (meta) backends."""

import os
import subprocess
import sys

import pytest
import torch

import tacq_ext

OPS = ["saliency_accumulate", "quantize", "pack", "unpack", "dequantize", "mixed_gemv", "mixed_gemv_stored",
       "mixed_gemv_layer", "gather_columns", "bf16_gemv"]


def test_installed_version_is_the_package_version():
    """pyproject.toml takes the version from tacq_ext/__init__.py, its one source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("tacq_ext")
    except PackageNotFoundError:
        pytest.skip("tacq_ext is not installed (a PYTHONPATH build)")
    assert installed == tacq_ext.__version__


def test_build_info():
    info = tacq_ext.build_info()
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert isinstance(info["cuda"], bool)
    assert info["cpu_isa"] in ("generic", "avx2", "avx512")
    if torch.cuda.is_available():
        assert info["cuda"], "torch has CUDA but the extension was built without CUDA kernels"


def test_build_info_avx512_extensions(monkeypatch):
    """avx512_bf16 / avx512_vnni: the CPU's flags where AVX-512 is in use
    (checked against /proc/cpuinfo where there is one), False under a cap
    that leaves them out (avx512_vnni keeps VNNI only)."""
    info = tacq_ext.build_info()
    assert isinstance(info["avx512_bf16"], bool) and isinstance(info["avx512_vnni"], bool)
    if info["cpu_isa"] == "avx512" and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        assert info["avx512_bf16"] == ("avx512_bf16" in flags)
        assert info["avx512_vnni"] == ("avx512_vnni" in flags)
    monkeypatch.setenv("TACQ_CPU_ISA", "avx512_vnni")  # as Cascade Lake / Ice Lake: VNNI, no BF16
    vnni_only = tacq_ext.build_info()
    assert not vnni_only["avx512_bf16"] and vnni_only["avx512_vnni"] == info["avx512_vnni"]
    levels = ["generic", "avx2", "avx512"]
    for cap in ("avx512", "avx2"):  # as Skylake-X: AVX-512 without the extensions; AVX2
        monkeypatch.setenv("TACQ_CPU_ISA", cap)
        capped = tacq_ext.build_info()
        assert not capped["avx512_bf16"] and not capped["avx512_vnni"]
        assert capped["cpu_isa"] == levels[min(levels.index(cap), levels.index(info["cpu_isa"]))]


@pytest.mark.parametrize("name", OPS)
def test_op_registered_with_cpu_and_fake_kernels(name):
    op = getattr(torch.ops.tacq, name).default
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta")
    assert callable(getattr(tacq_ext.ops, name))


def test_cpu_isa_cap_from_environment():
    """TACQ_CPU_ISA=generic in the environment of a new process caps the ISA
    from the start; a later value (avx2) is read on the next call (one process:
    each start imports torch, seconds)."""
    code = ("import os, tacq_ext; print(tacq_ext.build_info()['cpu_isa']); "
            "os.environ['TACQ_CPU_ISA'] = 'avx2'; print(tacq_ext.build_info()['cpu_isa'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TACQ_CPU_ISA": "generic"}, check=True)
    first, second = out.stdout.split()
    assert first == "generic" and second in ("generic", "avx2")
