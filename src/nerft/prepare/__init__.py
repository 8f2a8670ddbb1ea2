"""``nerft prepare``: read a dataset in any supported format, check it, write seeded train/dev/test splits.

``core``: the command and the library call (``prepare(PrepareConfig(...))``), splitting, labels, the atomic output
folder; ``stats``: stats.json/md and the per-label chart; ``trainer_formats``: the splits as other trainers'
datasets (LLaMA-Factory, ms-swift) and the reading of their predictions back (``nerft evaluate``).
"""

from .core import (
           PLOT_FILE,
           PrepareConfig,
           PrepareReport,
           check_output_folder,
           prepare,
           register,
           split_documents,
)

__all__ = ["PLOT_FILE", "PrepareConfig", "PrepareReport", "check_output_folder", "prepare", "register",
           "split_documents"]
