"""tacq_ext: Task-Circuit Quantization for PyTorch.

Importing the package loads the native extension, which registers the
``torch.ops.tacq.*`` custom ops; :mod:`tacq_ext.ops` holds their typed wrappers
and fake kernels, :mod:`tacq_ext.reference` slow pure-torch oracles of each.
"""

import torch  # noqa: F401  (loads libtorch before the extension that links it)

from . import _C
from . import ops, reference
from .config import TACQConfig
from .qlinear import QuantizedLinear, set_int8_activations
from .bf16_linear import Bf16GemvLinear, use_bf16_gemv
from .row_split import RowSplitLinear
from .offload import load_offloaded
from .pipeline import compute_saliency, quantize_model
from .serialization import load_quantized, save_quantized
from . import hf_quantizer  # noqa: F401  (registers quant_method "tacq" with transformers)

__version__ = "0.1.0"


def build_info() -> dict:
    """How the extension was built: ``torch_version`` it was compiled against,
    ``cuda`` (CUDA kernels compiled in), ``cpu_isa`` (vector ISA used now), and
    whether the CPU kernels use AVX-512 BF16 (``avx512_bf16``: bf16 mixed_gemv,
    bf16_gemv, saliency) and AVX-512 VNNI (``avx512_vnni``: mixed_gemv with
    ``x_int8``), each False where ``TACQ_CPU_ISA`` leaves it out (``avx512``:
    both; ``avx512_vnni``: BF16; ``avx2``, ``generic``: AVX-512 altogether)."""
    return dict(_C.build_info())


__all__ = ["ops", "reference", "build_info", "__version__", "TACQConfig", "QuantizedLinear", "RowSplitLinear",
           "Bf16GemvLinear", "set_int8_activations", "use_bf16_gemv",
           "load_offloaded", "compute_saliency", "quantize_model", "save_quantized", "load_quantized"]
