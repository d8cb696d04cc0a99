"""crossrec_lit: cross-domain recommendation with PyTorch Lightning.

Nothing here reads data or loads a model at import time.
"""

from crossrec_lit.errors import CrossRecError
from crossrec_lit.runtime import set_num_threads

__version__ = "0.1.0"

__all__ = ["CrossRecError", "__version__", "set_num_threads"]
