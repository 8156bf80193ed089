"""``make demo``: a throwaway registry, sample images, a dry run, a clean, and proof."""
