"""An emulated CUDA device for CPU-only tests of device and dtype placement.

``emulated_cuda()`` enters torch's ``FakeTensorMode``: tensors created on, or moved to, ``"cuda"`` carry that
device without allocating (no CUDA build or driver needed), and every op that mixes a CUDA tensor with a
non-scalar CPU tensor raises ``FakeTensorDeviceMismatchError`` — the error a real GPU raises. Meta kernels do not
check dtypes, so a dispatch mode on top raises ``DtypeMismatchError`` where a real kernel (matmul, convolution,
attention) would raise "expected m1 and m2 to have the same dtype". That mode also runs host work for real: an op
whose operands are all real CPU tensors and that creates nothing on the device computes real values (scheduler
bookkeeping, tokenisation, CPU generators), exactly as the host of a GPU machine does. Forward passes only: device
tensors have no values, so nothing may read one back (``.item()``, ``nonzero``) and no backward can run.

What real CUDA does that the emulation has to be told (an H200 is emulated): autocast sees CUDA as available,
bf16 is supported, and ``pin_memory`` (a host allocation that places nothing) returns its tensor.

Build modules *before* entering (real CPU tensors), move them inside: that is how the real code places them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake, unset_fake_temporarily
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops whose real CUDA kernels require every floating-point operand in one dtype.
SAME_DTYPE_OPS = {
    aten.mm.default,
    aten.addmm.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten.convolution.default,
    aten._scaled_dot_product_flash_attention.default,
    aten._scaled_dot_product_efficient_attention.default,
    aten._scaled_dot_product_cudnn_attention.default,
    aten._scaled_dot_product_flash_attention_for_cpu.default,
    aten._scaled_dot_product_attention_math.default,
}


class DtypeMismatchError(RuntimeError):
    """A kernel got floating-point operands of different dtypes (a real kernel refuses them)."""


def _is_device_op(func, args, kwargs) -> bool:
    """Whether an op touches the emulated device: a fake operand, or a device argument that is not the host."""
    if any(is_fake(a) for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)):
        return True
    device = kwargs.get("device")
    return device is not None and torch.device(device).type != "cpu"


class HostOrDevice(TorchDispatchMode):
    """Host ops (only real CPU tensors, nothing created on the device) run for real, as on a GPU machine: the
    scheduler's bookkeeping, tokenisation, CPU generators. Device ops go to the fake mode below, with a dtype check
    on the kernels that need one dtype (meta kernels do not check it)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not _is_device_op(func, args, kwargs):
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        if func in SAME_DTYPE_OPS:
            operands = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.is_floating_point()]
            dtypes = {t.dtype for t in operands}
            if len(dtypes) > 1:
                raise DtypeMismatchError(f"{func}: operands of dtypes {sorted(map(str, dtypes))}")
        return func(*args, **kwargs)


def _autocast_init_seeing_cuda(original):
    def init(self, *args, **kwargs):
        with mock.patch("torch.cuda.is_available", return_value=True):
            original(self, *args, **kwargs)

    return init


@contextlib.contextmanager
def emulated_cuda() -> Iterator[FakeTensorMode]:
    """Run the body on an emulated CUDA device (see the module docstring)."""
    autocast = torch.amp.autocast_mode.autocast
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("torch.cuda.is_bf16_supported", return_value=True))
        stack.enter_context(mock.patch.object(autocast, "__init__", _autocast_init_seeing_cuda(autocast.__init__)))
        stack.enter_context(mock.patch.object(torch.Tensor, "pin_memory", lambda self, *a, **k: self))
        fake = stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        stack.enter_context(HostOrDevice())
        yield fake
