"""Export what pruning gained: compressed sparse files, size reports, ONNX / torch.export, sparse CPU layers.

Optional dependencies (``pip install prunekit[onnx]``): onnx, onnxscript, onnxruntime — needed only by
:func:`export_onnx` and :func:`run_onnx`.
"""

from .encodings import ENCODINGS, Codec, Encoded, NotApplicableError, decode, encode
from .fileformat import (
    ArchitectureMismatchError,
    CompressedFileError,
    CorruptFileError,
    FormatVersionError,
    load_compressed,
    read_compressed,
    read_manifest,
    save_compressed,
)
from .huggingface import pruning_summary, save_pretrained
from .onnx_export import OnnxExport, export_onnx, run_onnx
from .size import SizeReport, TensorSize, binary_entropy, entropy_bound_bits, size_report
from .sparse_linear import SparseLinear, best_kernel, measure_kernels, sparsify_linears
from .torch_export import export_program

__all__ = [
    "ENCODINGS",
    "ArchitectureMismatchError",
    "Codec",
    "CompressedFileError",
    "CorruptFileError",
    "Encoded",
    "FormatVersionError",
    "NotApplicableError",
    "OnnxExport",
    "SizeReport",
    "SparseLinear",
    "TensorSize",
    "best_kernel",
    "binary_entropy",
    "decode",
    "encode",
    "entropy_bound_bits",
    "export_onnx",
    "export_program",
    "load_compressed",
    "measure_kernels",
    "pruning_summary",
    "read_compressed",
    "read_manifest",
    "run_onnx",
    "save_compressed",
    "save_pretrained",
    "size_report",
    "sparsify_linears",
]
