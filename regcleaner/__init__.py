"""regcleaner: delete the manifests that no tag can reach, through the registry's own API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
