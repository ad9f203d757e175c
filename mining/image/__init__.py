"""Image primitives: decoding, transformations, degradations, random masks."""
