"""Storage backends: where regcleaner reads the registry's layout from."""
