"""Embedding speed: t-SNE and UMAP implementations on N feature vectors, printed as Markdown.

    .venv/bin/python benchmarks/embedding.py [--sizes 2000 10000 20000] [--methods ...] [--quick]

Data: a seeded mixture of 10 Gaussian clusters in ``--dims`` (default 2048, Inception's width)
dimensions, N points, reduced by the project's PCA (``evaluation.study.embedding.reduce_pca``, 50
components) once per N; the PCA time is reported on its own row and is not in the method times.
Every method then embeds the same 50-d array. Each implementation runs with its own library's
default iteration counts, as the project calls them:

- ``sklearn``: scikit-learn ``TSNE(method="barnes_hut")`` defaults: ``max_iter=1000`` (250 of them
  early exaggeration), PCA init, learning rate "auto". Its Barnes-Hut gradient uses all OpenMP
  threads (``n_jobs`` only sets the neighbour search). This is the baseline.
- ``opentsne``: ``openTSNE.TSNE`` defaults: 250 early-exaggeration + 500 iterations, PCA init,
  learning rate "auto", gradient method "auto" (Barnes-Hut below 10 000 points, FFT-interpolated
  from 10 000), ``n_jobs=1`` (its default); ``opentsne-2``: the same with ``n_jobs=2``.
- ``opentsne-fft``: openTSNE with FFT gradients forced (``negative_gradient_method="fft"``),
  ``n_jobs=2``; printed only below 10 000 points, where "auto" would pick Barnes-Hut.
- ``umap``: umap-learn ``UMAP(random_state=seed, n_jobs=1)`` defaults: 15 neighbours,
  ``min_dist=0.1``, spectral init, 500 epochs up to 10 000 points, 200 above. Seeded umap-learn runs
  single-threaded. Its warm rows come after two warm-up fits in the same process, on 500 points and
  on 4096 (umap-learn switches from exact neighbours to numba-compiled pynndescent at 4096 points),
  so numba is compiled for both paths; the warm-up times are printed too.

Cold rows: for each implementation, a fresh Python process imports the library and fits the
smallest N once; the time covers import and first fit (for umap-learn, numba compilation).
Quality column: the fraction of each point's 10 nearest neighbours in 2-D that share its cluster
(1.0 = clusters perfectly separated), so that a faster method is not simply a worse one; the PCA
row gives the same figure in the 50-d input, the best a 2-D map could hope to keep.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # the script only, before torch loads; importing it changes nothing
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)  # benchmarks/ first on sys.path would not find the project's packages

import numpy as np

from evaluation.study.embedding import reduce_pca

METHODS = ("sklearn", "opentsne", "opentsne-2", "opentsne-fft", "umap")
LABELS = {
    "sklearn": "scikit-learn TSNE barnes_hut (1000 it)",
    "opentsne": "openTSNE default, n_jobs=1 (750 it)",
    "opentsne-2": "openTSNE default, n_jobs=2 (750 it)",
    "opentsne-fft": "openTSNE FFT forced, n_jobs=2 (750 it)",
    "umap": "umap-learn, seeded (1 thread)",
}
CLUSTERS = 10
PCA_DIMS = 50
SEED = 0
UMAP_APPROX_FROM = 4096
"""umap-learn uses exact neighbours below this many points and pynndescent from it on."""


def make_data(n: int, dims: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """n points from CLUSTERS seeded Gaussian clusters in dims dimensions, and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (CLUSTERS, dims)) * 0.15
    labels = rng.integers(0, CLUSTERS, n)
    return (centres[labels] + rng.normal(0.0, 1.0, (n, dims))).astype(np.float32), labels


def run_method(method: str, reduced: np.ndarray) -> np.ndarray:
    """Fit one implementation on the reduced features with the library's defaults."""
    if method == "sklearn":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, method="barnes_hut", random_state=SEED).fit_transform(reduced)
    if method.startswith("opentsne"):
        import openTSNE

        kwargs = {"n_jobs": 1 if method == "opentsne" else 2}
        if method == "opentsne-fft":
            kwargs["negative_gradient_method"] = "fft"
        return np.asarray(openTSNE.TSNE(random_state=SEED, **kwargs).fit(reduced))
    if method == "umap":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            import umap
        return umap.UMAP(n_components=2, random_state=SEED, n_jobs=1).fit_transform(reduced)
    raise ValueError(f"method {method!r}; allowed: {', '.join(METHODS)}")


def knn_agreement(coords: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's k nearest 2-D neighbours that share its cluster label."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords, return_distance=False)[:, 1:]
    return float((labels[index] == labels[:, None]).mean())


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def cold(method: str, n: int, dims: int) -> float:
    """Seconds for a fresh process to import the library and fit n points once (data made untimed)."""
    code = (f"import sys, time, json; sys.path.insert(0, {str(REPO)!r}); "
            f"sys.path.insert(0, {str(REPO / 'benchmarks')!r});"
            f"import embedding as b; x = b.reduce_pca(b.make_data({n}, {dims})[0], b.PCA_DIMS, b.SEED);"
            f"t = time.perf_counter(); b.run_method({method!r}, x); print(json.dumps(time.perf_counter() - t))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def applies(method: str, n: int) -> bool:
    return not (method == "opentsne-fft" and n >= 10_000)  # "auto" already picks FFT there


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 20000], help="values of N")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="implementations to time; sklearn is the baseline for the ratio column")
    parser.add_argument("--dims", type=int, default=2048, help="feature dimension before PCA")
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 2000 only")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process (cold) rows")
    args = parser.parse_args()
    sizes = [2000] if args.quick else args.sizes
    if min(sizes) < 500:
        parser.error(f"--sizes {sizes}; allowed: integers >= 500")

    load = os.getloadavg()
    print(f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, CPU only; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
          f"load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
    print(f"- Software: Python {platform.python_version()}, numpy {np.__version__}, scikit-learn "
          f"{version('scikit-learn')}, openTSNE {version('openTSNE')}, umap-learn {version('umap-learn')}, "
          f"numba {version('numba')}")
    print(f"- Date (UTC): {datetime.now(UTC):%Y-%m-%d %H:%M:%S}")
    print(f"- Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- Data: {CLUSTERS} seeded Gaussian clusters in {args.dims} dims -> `reduce_pca` to {PCA_DIMS} dims; "
          f"seed {SEED}; library default iteration counts (see `--help`)\n", flush=True)

    print("| N | implementation | seconds | baseline / this | 10-NN same cluster |")
    print("|---:|---|---:|---:|---:|", flush=True)
    if not args.no_cold:
        for method in args.methods:
            seconds = cold(method, min(sizes), args.dims)
            print(f"| {min(sizes)} | cold, fresh process: {LABELS[method]} | {seconds:.1f} | | |", flush=True)
    if "umap" in args.methods:
        # umap-learn compiles one path for < 4096 points (exact neighbours) and another, pynndescent's,
        # above; warm both up so the warm rows time the work, and show what the compilation costs.
        for n, path in ((500, "exact-neighbour path"), (UMAP_APPROX_FROM, "pynndescent path")):
            seconds, _ = timed(run_method, "umap", reduce_pca(make_data(n, args.dims)[0], PCA_DIMS, SEED))
            print(f"| {n} | umap-learn warm-up: first call on its {path} in this process (numba) | {seconds:.1f} | | |",
                  flush=True)
    for n in sizes:
        features, labels = make_data(n, args.dims)
        pca_s, reduced = timed(reduce_pca, features, PCA_DIMS, SEED)
        print(f"| {n} | PCA {args.dims} -> {PCA_DIMS} dims (`reduce_pca`); last column in 50-d, for reference | "
              f"{pca_s:.1f} | | {knn_agreement(reduced, labels):.3f} |", flush=True)
        baseline = None
        for method in args.methods:
            if not applies(method, n):
                continue
            seconds, coords = timed(run_method, method, reduced)
            baseline = seconds if method == "sklearn" else baseline
            ratio = "1.00 (baseline)" if method == "sklearn" else (f"{baseline / seconds:.2f}x" if baseline else "")
            warm = " (warm)" if method == "umap" else ""
            print(f"| {n} | {LABELS[method]}{warm} | {seconds:.1f} | {ratio} | {knn_agreement(coords, labels):.3f} |",
                  flush=True)
    load = os.getloadavg()
    print(f"\n- Load average at end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")


if __name__ == "__main__":
    main()
