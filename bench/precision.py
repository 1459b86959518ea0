"""Numerical precision: what a run computes in, and the float32 guard every loss and metric uses.

A model may run under bf16 autocast on CUDA (``train.amp``, default on); every loss term and every
metric computes in float32 whatever autocast is active.  That is not a nicety: SSIM's variance is
``E[x^2] - E[x]^2``, and autocast runs pytorch-msssim's Gaussian filter (``F.conv2d``) in bf16, whose
8-bit mantissa cancels catastrophically there (SSIM of eight different 96 px pairs came out as the
same 0.96484375, and the 96 px MS-SSIM term was 141% off).  :func:`float32` switches autocast off
for the device the tensors live on, :func:`fp32` (a decorator as well) for every device type; callers
cast their inputs with ``.float()``.
"""
from __future__ import annotations

import contextlib

import torch

FP32 = "fp32"


def effective(device: torch.device, amp: bool) -> str:
    """The precision a run's training step computes its forward pass in on ``device``: bf16 autocast on
    CUDA when ``train.amp`` is on (``bench.train.loop.runtime.autocast``), float32 everywhere else.  Stored in
    env.json, the checkpoint and each table's protocol."""
    return f"bf16 autocast ({device.type})" if device.type == "cuda" and amp else FP32


def float32(device: torch.device | str):
    """Context: autocast off for ``device``'s type, so ops on its tensors run in their own dtype."""
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type=device_type, enabled=False)


AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")


class fp32(contextlib.ContextDecorator):   # lower case: it reads as a decorator
    """Autocast off for every device type that has it, as a context or a function decorator: a
    metric decorated with it computes in its inputs' dtype whatever autocast its caller is under."""

    def _recreate_cm(self):     # a fresh context per decorated call: calls may nest
        return type(self)()

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        for device_type in AUTOCAST_DEVICE_TYPES:
            self._stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)
