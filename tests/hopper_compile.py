"""Compile the fast path's Triton kernels to Triton IR for a Hopper GPU (sm_90), without one: the front end that
Triton's CPU interpreter skips (it runs the kernel bodies as numpy, where an integer argument is an array), so a
body that only compiles for some arguments fails here, not on a lent GPU. Every integer argument is compiled both
as a runtime int32 and as the constant 1 (Triton specialises an argument equal to 1 into a constant, e.g. one row).

Run by ``tests/test_kernels.py`` in a process of its own (the interpreter, chosen by ``conftest.py``, replaces the
kernels' JIT functions); prints one line per kernel configuration that fails and exits 1 if any did.
"""

from __future__ import annotations

import itertools
import sys

from triton._C.libtriton import ir
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource

from sdlaws.measure import kernels, projection

TARGET = GPUTarget("cuda", 90, 32)
BF16 = "*bf16"


def ttir(fn, pointers: dict[str, str], floats: tuple[str, ...], constexprs: dict, ints_one: bool):
    """Triton IR of ``fn`` (a ``triton.jit`` function) for :data:`TARGET`: ``pointers`` name -> pointer type,
    ``floats`` the fp32 scalars, ``constexprs`` the compile-time values; every other argument an int32, or the
    constant 1 with ``ints_one``."""
    backend = CUDABackend(TARGET)
    signature, constants = {}, dict(constexprs)
    for name in fn.arg_names:
        if name in pointers:
            signature[name] = pointers[name]
        elif name in floats:
            signature[name] = "fp32"
        elif name in constexprs:
            signature[name] = "constexpr"
        elif ints_one:
            signature[name], constants[name] = "constexpr", 1
        else:
            signature[name] = "i32"
    src = ASTSource(fn, signature, {(fn.arg_names.index(k),): v for k, v in constants.items()})
    options = backend.parse_options({"num_warps": 4, "num_stages": 3})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    return src.make_ir(TARGET, options, backend.get_codegen_implementation(options), backend.get_module_map(),
                       context)


def cases():
    """(name, fn, pointers, floats, constexprs) of every kernel configuration the fast path launches."""
    linear_ptrs = dict(x=BF16, w=BF16, bias=BF16, out=BF16, part="*fp32", count="*i32")
    for split, swiglu, bias, even in itertools.product((1, 4), (False, True), (False, True), (False, True)):
        if swiglu and (split > 1 or bias):
            continue  # refused by projection.linear
        yield (f"linear split={split} swiglu={swiglu} bias={bias} even={even}", projection._linear_kernel,
               linear_ptrs, (), dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, EVEN=even, SWIGLU=swiglu, BIAS=bias,
                                     IEEE=False, SPLIT=split))
    attention_ptrs = dict(q=BF16, k=BF16, v=BF16, mask=BF16, bounds="*i32", out=BF16, part_m="*fp32",
                          part_l="*fp32", part_acc="*fp32", count="*i32")
    for splits, block_m, block_s, zero_dead in itertools.product((1, 4), (16, 64), (32, 64), (True, False)):
        yield (f"attention splits={splits} block_m={block_m} block_s={block_s} zero_dead={zero_dead}",
               kernels._attention_kernel, attention_ptrs, ("scale", "masked"),
               dict(DIM=128, D_P2=128, BLOCK_M=block_m, BLOCK_S=block_s, SPLITS=splits, IEEE=False,
                    ZERO_DEAD=zero_dead))
    yield ("rope_write", kernels._rope_write_kernel,
           dict(qkv=BF16, cos=BF16, sin=BF16, slots="*i64", q_out=BF16, k_cache=BF16, v_cache=BF16), (),
           dict(HEADS=32, HALF=64, HALF_P2=64, BLOCK_H=8))
    yield ("silu_mul", projection._silu_mul_kernel, dict(gate_up=BF16, out=BF16), (), dict(BLOCK=1024))
    yield ("add_rms_norm", projection._add_rms_norm_kernel,
           dict(x=BF16, delta=BF16, weight=BF16, res_out=BF16, out=BF16), ("eps",), dict(BLOCK=4096))
    yield ("live_bounds", kernels._bounds_kernel, dict(mask=BF16, bounds="*i32"), ("masked",), dict(BLOCK=512))


def main() -> int:
    failed = total = 0
    for (name, fn, pointers, floats, constexprs), ints_one in itertools.product(cases(), (False, True)):
        total += 1
        try:
            ttir(fn, pointers, floats, constexprs, ints_one)
        except Exception as exc:  # noqa: BLE001 - report every failing configuration, then fail
            failed += 1
            print(f"{name} (integer arguments {'1' if ints_one else 'int32'}): {str(exc).strip().splitlines()[-1]}")
    print(f"{total - failed} of {total} kernel configurations compile for sm_90")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
