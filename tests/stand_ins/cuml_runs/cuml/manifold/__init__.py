"""Stand-in `cuml.manifold.UMAP` with cuML 26.x's exact signature (keyword-only).

Source of the signature: the cuML 26.08 API reference for `cuml.manifold.UMAP`.
"""
from __future__ import annotations

import inspect

import numpy as np

CALLS: list[dict] = []  # one {"init": {...keyword arguments as passed...}, "fit": {...}} per model
FAIL_FIT: BaseException | None = None  # raised by fit_transform when set

METRICS = {"l1", "cityblock", "taxicab", "manhattan", "euclidean", "l2", "sqeuclidean", "canberra", "minkowski",
           "chebyshev", "linf", "cosine", "correlation", "hellinger", "hamming", "jaccard"}
OUTPUT_TYPES = {None, "input", "array", "dataframe", "series", "df_obj", "numba", "cupy", "numpy", "cudf", "pandas"}


def _signature(*, n_neighbors=15, n_components=2, metric="euclidean", metric_kwds=None, n_epochs=None,
               learning_rate=1.0, min_dist=0.1, spread=1.0, set_op_mix_ratio=1.0, local_connectivity=1.0,
               repulsion_strength=1.0, negative_sample_rate=5, transform_queue_size=4.0, init="spectral",
               a=None, b=None, target_n_neighbors=-1, target_weight=0.5, target_metric="categorical",
               hash_input=False, random_state=None, force_serial_epochs=None, precomputed_knn=None,
               callback=None, build_algo="auto", build_kwds=None, device_ids=None, verbose=False,
               output_type=None):
    pass


class UMAP:
    def __init__(self, *args, **kwargs):
        bound = inspect.signature(_signature).bind(*args, **kwargs)  # TypeError on anything cuML does not take
        bound.apply_defaults()
        p = bound.arguments
        if p["metric"] not in METRICS:
            raise ValueError(f"Invalid value for metric: {p['metric']}")
        if p["init"] not in ("spectral", "random"):
            raise ValueError(f"Invalid initialization strategy: {p['init']}")
        if p["output_type"] not in OUTPUT_TYPES:
            raise ValueError(f"output_type {p['output_type']!r} is not valid")
        if not (isinstance(p["n_neighbors"], int) and p["n_neighbors"] >= 2):
            raise ValueError("n_neighbors must be an integer of 2 or more")
        if p["random_state"] is not None and not isinstance(p["random_state"], int):
            raise TypeError("random_state must be an int or None")
        self.params = p
        self.call = {"init": dict(kwargs)}
        CALLS.append(self.call)

    def fit_transform(self, X, y=None, *, convert_dtype=True, knn_graph=None, **kwargs):
        self.call["fit"] = {"shape": X.shape, "dtype": str(X.dtype), "contiguous": bool(X.flags.c_contiguous)}
        if FAIL_FIT is not None:
            raise FAIL_FIT
        projection = np.random.default_rng(self.params["random_state"] or 0).normal(
            size=(X.shape[1], self.params["n_components"]))
        return (np.asarray(X, np.float64) @ projection).astype(np.float32)
