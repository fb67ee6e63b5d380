"""Configuring the extension against a CUDA build of torch (PyPI's Linux
wheels) with the CPU kernels only, where torch's own CMake package would look
for a CUDA toolkit and fail without one (cmake/tacq_torch.cmake). A stand-in
torch package (what the build asks Python, and empty files where the libraries
lie) replaces the real one; only CMake's configure step runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = '''
__version__ = "2.14.1+cu130"
class version:
    cuda = "13.0"
class _C:
    _GLIBCXX_USE_CXX11_ABI = True
'''


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None, reason="needs cmake and ninja")
def test_cpu_kernels_configure_against_a_cuda_torch_without_its_cmake_package(tmp_path):
    torch_dir = tmp_path / "site" / "torch"
    (torch_dir / "include" / "torch" / "csrc" / "api" / "include").mkdir(parents=True)
    (torch_dir / "share" / "cmake").mkdir(parents=True)  # holds no TorchConfig.cmake: it must not be needed
    (torch_dir / "lib").mkdir()
    for lib in ("torch", "torch_cpu", "c10", "torch_python"):
        (torch_dir / "lib" / f"lib{lib}.so").touch()
    (torch_dir / "__init__.py").write_text(STAND_IN)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    build = tmp_path / "build"
    result = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DTACQ_CUDA=OFF",
                             f"-DPython_EXECUTABLE={sys.executable}"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"torch 2.14.1 built with CUDA 13.0, CPU kernels only: torch's headers and libraries from {torch_dir}" \
        in result.stdout
    build_rules = (build / "build.ninja").read_text()
    for lib in ("torch", "torch_cpu", "c10", "torch_python"):
        assert str(torch_dir / "lib" / f"lib{lib}.so") in build_rules
    assert f"-isystem {torch_dir}/include " in build_rules and "-D_GLIBCXX_USE_CXX11_ABI=1" in build_rules
