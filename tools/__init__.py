"""Release tooling (not installed with the package)."""
