"""Exact 1-D k-means (:func:`kmeans1d`): the torch path and dispatch in :mod:`.dp`, the compiled
CPU kernels (numba) in :mod:`.cpu`."""

from lcdsl.operators.kmeans1d.dp import Clusters, kmeans1d, kmeans1d_costs, prefix_sums

__all__ = ["kmeans1d", "kmeans1d_costs", "Clusters", "prefix_sums"]
