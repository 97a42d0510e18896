"""Argument checks shared by the Python entry points: a bad value raises a TypeError or ValueError
that names the argument, before any work starts."""
import numbers
import operator

import numpy as np
import torch


def check_int(name: str, value, low: int, why: str = "") -> None:
    """`value` must be an int (not a bool) >= `low`; `why`, if given, says why in the error."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be >= {low}{reason}, got {value}")


def check_tensor(name: str, value) -> None:
    """`value` must be a torch.Tensor (checked first where the rest of the checks run in the op)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}")


def integer(value):
    """value as a Python int when it is an integer of any kind but a bool (int, NumPy integer,
    one-element integer tensor), SymInts as they are; anything else unchanged, for the caller's
    check to refuse by name."""
    if isinstance(value, (int, torch.SymInt)):  # bools too: returned as they are
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def as_python(value):
    """An array or tensor as the (nested) list or number it holds, so that the Python checks read
    it; any other value as it is."""
    return value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value
