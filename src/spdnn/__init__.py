"""spdnn: partition sparse DNNs row-wise over K processes and train/infer them under MPI."""

__version__ = "0.1.0"
