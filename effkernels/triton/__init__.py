"""Triton kernels: the GPU kernels of the effkernels ops, one file per op."""
