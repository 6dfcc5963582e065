"""Analytics: catchment areas, k-anonymous and noisy taste reports, segments, suggestions."""
