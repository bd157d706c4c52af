"""Whether the C decode kernel can run here, without torch: the library, its ABI, the activations it computes.

`bigcode models info` asks this before any model is loaded; `cpu_decode` (which needs torch) builds on it.
"""

from __future__ import annotations

import ctypes

from bigcode_cli import choices
from bigcode_cli.kernels.build import kernel_problem, load_kernel

KERNEL = "decode_step"
ABI_VERSION = 7  # bigcode_decode_abi() of a library whose structs and entry points match cpu_decode's
# the function behind each kind of bigcode_cli.choices.ACTIVATIONS -> its code in decode_step.c's `activate`
_FUNCTION_CODES = {"gelu_tanh": 0, "gelu": 1, "relu": 2, "silu": 3, "tanh": 4}
# activation_function names -> the kernel's activation codes (every name the model knows, through its function)
ACTIVATIONS = {name: _FUNCTION_CODES[function] for name, function in choices.ACTIVATIONS.items()
               if function in _FUNCTION_CODES}


def _abi_problem(lib: ctypes.CDLL) -> str | None:
    try:
        version = lib.bigcode_decode_abi()
    except AttributeError:  # an older or foreign library
        return "the compiled library has no bigcode_decode_abi: it is not this version's decode kernel"
    if version != ABI_VERSION:
        return f"the compiled library speaks ABI {version}, this version of bigcode-cli needs {ABI_VERSION}"
    return None


def decode_library() -> ctypes.CDLL | None:
    """The compiled decode kernel if it can be built and speaks our ABI, else None (`library_problem` says why)."""
    lib = load_kernel(KERNEL)
    return lib if lib is not None and _abi_problem(lib) is None else None


def library_problem() -> str | None:
    """Why `decode_library()` is None, or None when it is not."""
    lib = load_kernel(KERNEL)
    if lib is None:
        return kernel_problem(KERNEL) or "the decode kernel could not be built"
    return _abi_problem(lib)


def activation_problem(name: str) -> str | None:
    """Why the kernel cannot compute a model's activation function, or None when it can."""
    if name in ACTIVATIONS:
        return None
    return f"the kernel does not compute activation {name!r}"


def cpu_decode_summary(activation: str) -> str:
    """What would run a model's decode steps on a CPU here: "C kernel" or "PyTorch (reason)"."""
    problem = activation_problem(activation) or library_problem()
    return "C kernel" if problem is None else f"PyTorch ({problem})"


def amx_tiles() -> bool:
    """Whether the decode kernel multiplies bf16 weights on AMX tiles in this process (an Intel Xeon with
    AMX whose kernel hands the tiles out, and BIGCODE_AMX not 0): decided once, for the process's life."""
    lib = decode_library()
    return lib is not None and bool(lib.bigcode_amx_tiles())


def amx_int8() -> bool:
    """Whether the decode kernel multiplies 8-bit weights by steps of several tokens on AMX tiles in this
    process (a CPU with AMX-INT8, tiles handed out, BIGCODE_AMX not 0)."""
    lib = decode_library()
    return lib is not None and bool(lib.bigcode_amx_int8())


def amx_int8_products() -> int:
    """How many runs of 8-bit products on AMX tiles this process has made so far (0 where it makes none)."""
    import ctypes

    lib = decode_library()
    if lib is None:
        return 0
    lib.bigcode_amx_int8_products.restype = ctypes.c_long
    return int(lib.bigcode_amx_int8_products())


def amx_attention() -> bool:
    """Whether the decode kernel's multi-query attention over bf16 caches forms its products on AMX tiles in
    this process (heads a multiple of 32 wide; as amx_tiles)."""
    lib = decode_library()
    return lib is not None and bool(lib.bigcode_amx_attention())
