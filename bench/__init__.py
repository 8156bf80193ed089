"""The benchmark: synthetic registries at scale, measured against the delete floor."""
