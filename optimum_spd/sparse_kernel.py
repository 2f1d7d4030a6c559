"""The native CSR kernel (``csrc/csr_spmm.c``): compiled on first use with the system C compiler, called by ctypes.

Why not a torch extension: compiling one pulls in torch's headers (a minute per build, and a C++ toolchain that
matches torch's ABI); this kernel is plain C with no torch dependency, builds in under a second, and is cached per
source, compiler flags and CPU, so a cache shared between machines never hands one CPU code built for another.
The OpenMP runtime it links is the one torch has already loaded (same ``libgomp.so.1`` soname), so both share one
thread pool.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "csr_spmm.c"
COMPILE_FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC", "-shared")
LANES = 16  # tokens per vector in the kernel (its LANES): the scratch holds tokens padded to a multiple of it
CACHE_ENV = "OPTIMUM_SPD_KERNEL_CACHE"  # where built kernels are kept (default: ~/.cache/optimum_spd/kernels)


class KernelUnavailableError(RuntimeError):
    """The native kernel cannot be built here (no C compiler, or the build failed)."""


def _cpu_signature() -> str:
    """What the compiled code depends on: the machine, and on Linux the CPU model and feature flags."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            parts += sorted({line for line in handle if line.startswith(("model name", "flags"))})
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _compiler() -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise KernelUnavailableError(
            "kernel='native' needs a C compiler (cc, gcc or clang on PATH, or $CC) to build its CSR kernel once; "
            "install one, or use kernel='torch' (torch's own CSR product)."
        )
    return compiler


def build_kernel(cache_dir: str | os.PathLike | None = None) -> Path:
    """Compile the kernel into the cache (once per source, compiler, flags and CPU) and return the library's path."""
    compiler = _compiler()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, compiler.encode(), " ".join(COMPILE_FLAGS).encode(), _cpu_signature().encode()])
    )
    folder = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "optimum_spd" / "kernels")
    library = folder / f"csr_spmm-{key.hexdigest()[:16]}.so"
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed into place: concurrent first uses never load a half-written file.
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        partial = Path(scratch) / library.name
        try:
            completed = subprocess.run(
                [compiler, *COMPILE_FLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True
            )
        except OSError as error:  # e.g. $CC names no program
            raise KernelUnavailableError(
                f"cannot run the C compiler {compiler!r} ({error}); use kernel='torch'."
            ) from None
        if completed.returncode != 0:
            raise KernelUnavailableError(
                f"building the native CSR kernel with {compiler} failed:\n{completed.stderr[-2000:]}\n"
                "Use kernel='torch' instead."
            )
        os.replace(partial, library)
    return library


@lru_cache(maxsize=1)
def load_kernel() -> ctypes.CDLL:
    """The compiled kernel, built on first use; raises :class:`KernelUnavailableError` when it cannot be."""
    library = ctypes.CDLL(str(build_kernel()))
    pointer, i64, threads = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for name in ("spd_spmm_f32", "spd_spmm_i8"):
        function = getattr(library, name)
        function.argtypes = [i64, i64, i64, *[pointer] * 8, threads]
        function.restype = None
    library.spd_spmm_lanes.restype = ctypes.c_int
    if library.spd_spmm_lanes() != LANES:
        raise KernelUnavailableError(
            f"{SOURCE.name} pads tokens to {library.spd_spmm_lanes()}, this module to {LANES}."
        )
    return library


_scratch = threading.local()  # per thread: the transposed activations, reused across calls (grown when too small)


def _scratch_buffer(numel: int) -> torch.Tensor:
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = _scratch.buffer = torch.empty(numel, dtype=torch.float32)
    return buffer


@torch.library.custom_op("optimum_spd::csr_matmul", mutates_args=())
def csr_matmul(
    hidden: torch.Tensor,
    row_ptr: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``hidden @ W.T + bias`` for ``W`` in CSR: int32 ``row_ptr``, uint16 ``col``, and fp32 ``values`` or int8
    ``values`` with a per-row fp32 ``scale``. ``hidden``: (tokens, in_features) fp32 on the CPU, without autograd.
    Returns (tokens, out_features).

    A torch custom op (``torch.ops.optimum_spd.csr_matmul``), not a plain Python function, so that
    ``torch.compile`` captures a model of :class:`~optimum_spd.NativeCSRLinear` layers as one graph (the kernel an
    opaque node in it) instead of breaking it at every linear: the compiled graph fuses what lies between the
    linears (attention, layer norms, GELU), most of the remaining time at short inputs."""
    library = load_kernel()
    hidden = hidden.contiguous()
    tokens, in_features = hidden.shape
    rows = row_ptr.numel() - 1
    out = hidden.new_empty(tokens, rows)
    # A fresh scratch of a few hundred KB per call would go through mmap and page faults every time.
    scratch = _scratch_buffer(in_features * (-(-tokens // LANES) * LANES))
    function = library.spd_spmm_i8 if values.dtype == torch.int8 else library.spd_spmm_f32
    function(
        rows,
        tokens,
        in_features,
        row_ptr.data_ptr(),
        col.data_ptr(),
        values.data_ptr(),
        None if scale is None else scale.data_ptr(),
        hidden.data_ptr(),
        None if bias is None else bias.data_ptr(),
        out.data_ptr(),
        scratch.data_ptr(),
        torch.get_num_threads(),
    )
    return out


@csr_matmul.register_fake
def _csr_matmul_shape(hidden, row_ptr, col, values, scale=None, bias=None) -> torch.Tensor:
    """What ``torch.compile`` traces with: the output's shape and dtype, no computation."""
    return hidden.new_empty(hidden.shape[0], row_ptr.shape[0] - 1)
