"""The 2D map: UMAP on the embeddings (cuML on a GPU, umap-learn otherwise), an optional PCA
first, or ForceAtlas2 on the bipartite image-tag network; coordinates normalised to 0..1.

Memory on the umap-learn path: the vectors arrive as one float32 array (3 GB at 1M x 768) that
umap-learn uses as is; it copies it once more inside `fit` and builds its neighbour graph with
`low_memory=True`. `--pca N` first projects the vectors, a chunk at a time, onto their top N
principal axes (covariance accumulated in float64, never a centred copy of the data), so UMAP
then sees an (n, N) array: at N=64 that is 256 MB at 1M rows, instead of gigabytes.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from common.cli import UserError

BACKENDS = ("auto", "cuml", "umap")
PCA_CHUNK = 65_536
CUML_HINT = "pip install -r requirements-gpu.txt on a machine with an NVIDIA GPU, or use --backend umap"


# ---------------------------------------------------------------------------- backend choice
# cuML 26.x UMAP's metrics (cuml.manifold.UMAP docstring); umap-learn knows these and more
CUML_METRICS = frozenset({"l1", "cityblock", "taxicab", "manhattan", "euclidean", "l2", "sqeuclidean", "canberra",
                          "minkowski", "chebyshev", "linf", "cosine", "correlation", "hellinger", "hamming",
                          "jaccard"})


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def cuml_status() -> tuple[bool, str]:
    """(usable, why): cuML is usable when `cuml.manifold` really imports (a wheel built for another
    CUDA or driver fails here, loading its libraries) and one tiny kernel runs on a visible GPU."""
    if importlib.util.find_spec("cuml") is None:
        return False, "cuML is not installed"
    try:
        from cuml.manifold import UMAP  # noqa: F401 - the import that loads libcuml and its CUDA libraries
        import cupy

        devices = cupy.cuda.runtime.getDeviceCount()
        if devices >= 1:
            float(cupy.arange(4, dtype=cupy.float32).sum())  # a kernel launch and a copy back: CUDA really works
    except Exception as e:  # noqa: BLE001 - whatever breaks here means "cuML cannot run here"
        return False, f"cuML is installed but cannot run here ({_first_line(e)})"
    if devices < 1:
        return False, "cuML is installed but no CUDA GPU is visible"
    return True, f"cuML with {devices} CUDA GPU(s)"


def choose_backend(asked: str, status=cuml_status, metric: str | None = None) -> tuple[str, str]:
    """(backend, reason) for --backend auto|cuml|umap. cuml that cannot run, or with a metric cuML
    lacks, is a user error; auto then takes umap-learn and says why."""
    assert asked in BACKENDS, f"unknown backend {asked!r}"
    if asked == "umap":
        return "umap", "asked for with --backend umap"
    lacks = metric is not None and metric not in CUML_METRICS
    if asked == "cuml" and lacks:
        raise UserError(f"--metric {metric} is not one cuML's UMAP supports ({', '.join(sorted(CUML_METRICS))}): "
                        "pick one of these, or use --backend umap")
    usable, why = status()
    if asked == "cuml":
        if not usable:
            raise UserError(f"--backend cuml needs cuML and an NVIDIA GPU, but {why}: {CUML_HINT}")
        return "cuml", why
    if usable and lacks:
        return "umap", f"cuML does not support --metric {metric}, so umap-learn runs on the CPU"
    if usable:
        return "cuml", why
    return "umap", f"{why}, so umap-learn runs on the CPU"


# ---------------------------------------------------------------------------- PCA
def pca_reduce(x: np.ndarray, n_components: int) -> tuple[np.ndarray, float]:
    """(n, n_components) float32 projection and the variance share it keeps; memory O(dim^2 + output)."""
    n, dim = x.shape
    mean = np.zeros(dim, np.float64)
    cov = np.zeros((dim, dim), np.float64)
    for start in tqdm(range(0, n, PCA_CHUNK), desc="PCA covariance", unit="chunk", leave=False):
        chunk = np.asarray(x[start:start + PCA_CHUNK], dtype=np.float64)
        mean += chunk.sum(axis=0)
        cov += chunk.T @ chunk
    mean /= n
    cov = cov / n - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:n_components]
    axes = vectors[:, order]
    # eigenvectors have an arbitrary sign; fix it so the same input always gives the same map
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])] < 0, -1.0, 1.0)
    out = np.empty((n, n_components), np.float32)
    for start in range(0, n, PCA_CHUNK):
        chunk = np.asarray(x[start:start + PCA_CHUNK], dtype=np.float64)
        out[start:start + PCA_CHUNK] = (chunk - mean) @ axes
    kept = float(values[order].sum() / max(values.sum(), 1e-30))
    return out, kept


# ---------------------------------------------------------------------------- UMAP
INITS = ("auto", "spectral", "pca", "random")
SPECTRAL_MAX_ROWS = 200_000  # --init auto: spectral up to here, PCA past it


@dataclass(frozen=True)
class UmapParams:
    neighbors: int = 25
    dist: float = 0.1
    metric: str = "cosine"
    seed: int | None = 42
    init: str = "auto"


def choose_init(asked: str, n: int, backend: str = "umap") -> str:
    """The starting layout UMAP gets. umap-learn's spectral start keeps sqrt(n) Lanczos vectors of
    n floats (ARPACK's ncv): 0.7 GB at 200k images but 8 GB at 1M, more than the rest of the step
    together, so `auto` starts large maps from the data's first two principal axes (umap-learn's
    "pca"), which the optimisation then refines just as well. cuML starts spectral (on the GPU)
    or, when asked, random."""
    assert asked in INITS, f"unknown init {asked!r}"
    if backend == "cuml":
        return "random" if asked == "random" else "spectral"
    if asked != "auto":
        return asked
    return "spectral" if n <= SPECTRAL_MAX_ROWS else "pca"


def umap_layout(x: np.ndarray, p: UmapParams, backend: str) -> tuple[np.ndarray, str]:
    """((n, 2) float64 coordinates, the backend that made them); tiny inputs get a fixed layout
    rather than a UMAP error. A cuML fit that fails (out of GPU memory, a CUDA error) is redone
    by umap-learn with a warning: the run is never lost to the GPU."""
    n = x.shape[0]
    if n < 3:
        return np.column_stack([np.arange(n, dtype=np.float64), np.zeros(n)]), backend
    neighbors = min(p.neighbors, n - 1)
    if backend == "cuml":
        try:
            return _cuml_umap(x, p, neighbors), "cuml"
        except (MemoryError, RuntimeError) as e:  # cupy/RMM out-of-memory is a MemoryError, CUDA errors RuntimeErrors
            print(f"WARNING: cuML's UMAP failed ({_first_line(e)}); umap-learn makes the map on the CPU instead",
                  file=sys.stderr)
    import umap  # heavy (numba): imported only when a map is made

    # a fixed seed makes umap-learn single-threaded anyway; saying so avoids its warning
    n_jobs = 1 if p.seed is not None else -1
    model = umap.UMAP(n_neighbors=neighbors, min_dist=p.dist, metric=p.metric, random_state=p.seed,
                      n_jobs=n_jobs, low_memory=True, n_components=2, verbose=False, init=choose_init(p.init, n))
    return np.asarray(model.fit_transform(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64), "umap"


def _cuml_umap(x: np.ndarray, p: UmapParams, neighbors: int) -> np.ndarray:
    from cuml.manifold import UMAP  # only on a GPU machine with requirements-gpu.txt

    model = UMAP(n_neighbors=neighbors, min_dist=p.dist, metric=p.metric, n_components=2,
                 init=choose_init(p.init, x.shape[0], "cuml"), random_state=p.seed, output_type="numpy")
    return np.asarray(model.fit_transform(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)


# ---------------------------------------------------------------------------- normalising
def to_unit_square(xy: np.ndarray) -> np.ndarray:
    """Scale both axes by the same factor into 0..1 and centre the shorter one: the map's shape
    (distances, angles) is kept; it is never stretched to fill the square."""
    xy = np.asarray(xy, dtype=np.float64)
    if not len(xy):
        return xy.reshape(0, 2)
    finite = np.isfinite(xy).all(axis=1)
    if not finite.any():
        return np.full_like(xy, 0.5)
    lo, hi = xy[finite].min(axis=0), xy[finite].max(axis=0)
    span = float((hi - lo).max())
    if span == 0.0:
        return np.full_like(xy, 0.5)
    out = (xy - lo) / span
    out += (1.0 - (hi - lo) / span) / 2.0
    # umap-learn leaves points it could not connect at NaN; they go to the centre, never lost
    out[~finite] = 0.5
    return np.clip(out, 0.0, 1.0)
