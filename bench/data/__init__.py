"""Image data: sources (one uint8 tensor per split), seeded class-stratified subsets, evaluation sets."""
