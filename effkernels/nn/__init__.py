"""Drop-in modules built on the effkernels ops."""
from .local_ffn import LocalFFN
from .lowfreq_crop import LowFreqCrop

__all__ = ["LocalFFN", "LowFreqCrop"]
