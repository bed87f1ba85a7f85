"""gpuscale: GPU inference services that scale by queue depth."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpuscale")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
