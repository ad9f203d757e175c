"""Style: style features, fixed points of a restyler, style sets, classical stylisation."""
