"""dcl_lib: the support library of the executable book on deep clustering."""
from ._alloc import keep_freed_memory

__version__ = "0.1.0"

keep_freed_memory()  # large batches reuse freed memory instead of page-faulting (see _alloc)
