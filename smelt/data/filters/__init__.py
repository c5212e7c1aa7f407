"""Document filters: heuristic (Gopher, C4, FineWeb, URL), model-based (perplexity, quality classifier,
toxicity) and simple length bounds. Each returns a drop reason or None."""
