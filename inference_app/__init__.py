"""gpuscale's pod server: one model, one uvicorn worker, `slots` requests on the model at once."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpuscale")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
