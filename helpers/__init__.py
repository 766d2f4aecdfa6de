"""Companion package of the course: `from helpers import start, P, finish, check, …`."""
from .checks import check, check_at_least, check_at_most, check_close, check_equal, cmp
from .device import device, gpu_only, has_cuda, requires_gpu
from .progress import progress_bar
from .session import MODULES, P, finish, gpu_results, profile, start
from .show import md_table, show

__all__ = [
    "MODULES", "P", "check", "check_at_least", "check_at_most", "check_close", "check_equal", "cmp",
    "device", "finish", "gpu_only", "gpu_results", "has_cuda", "md_table", "profile", "progress_bar", "requires_gpu", "show", "start",
]
