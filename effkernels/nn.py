"""Modules built on the effkernels ops."""
