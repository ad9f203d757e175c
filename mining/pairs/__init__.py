"""Pair mining: spherical K-means, the similarity band's union-find, series groups, geometric checks, presets, the pair classifier."""
