"""medfoundry: multi-task biomedical foundation models, transfer benchmarks and registration."""

from .errors import ConfigError as ConfigError
from .errors import DataError as DataError
from .errors import MedfoundryError as MedfoundryError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "MedfoundryError", "__version__"]
