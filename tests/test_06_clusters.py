"""Step 06's parts without a UMAP run: cluster names, c-TF-IDF terms, sampled HDBSCAN, PCA, the
unit square, the backend choice and the tag edges."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from common import clusters, layout, network_layout
from common.cli import UserError
from common.columns import row_id


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_concept_that_sets_a_cluster_apart_names_it_not_the_one_all_images_share():
    rng = np.random.default_rng(0)
    concepts = ["city", "river", "church", "tram"]
    cv = unit(rng.normal(size=(4, 64)))
    # every image is mostly "city"; each cluster leans a little towards its own concept
    x = np.concatenate([unit(2.0 * cv[0] + 0.6 * cv[k] + rng.normal(scale=0.05, size=(30, 64))) for k in (1, 2, 3)])
    labels = np.repeat([0, 1, 2], 30)
    names = clusters.name_clusters(labels, x, [None] * 90, concepts, cv, top_concepts_n=2, top_terms_n=0)
    assert [n.concepts[0][0] for n in names] == ["river", "church", "tram"]
    assert all(n.concepts[0][1] > 0.7 for n in names)
    # raw similarity to the centroid would have said "city" for all three
    assert all(np.argmax(cv @ unit(x[labels == k].mean(axis=0))) == 0 for k in range(3))


def test_ctfidf_keeps_words_over_represented_in_a_cluster_and_drops_city_and_stop_words():
    captions = (["The Madrid harbour with boats at dusk"] * 5 + ["Madrid gothic cathedral and the boats"] * 5
                + ["Madrid gothic cathedral by night"] * 5 + [None, ""])
    labels = np.array([0] * 5 + [1] * 10 + [-1] * 2)
    terms = clusters.ctfidf_terms(captions, labels, k=2, top=5)
    words0, words1 = [t for t, _ in terms[0]], [t for t, _ in terms[1]]
    # "boats": in all of cluster 0's captions but half of cluster 1's, so over-represented in 0 only,
    # and less distinctive there than the words found nowhere else
    assert set(words0[:2]) == {"dusk", "harbour"} and words0[2:] == ["boats"]
    assert set(words1) == {"gothic", "cathedral", "night"}
    assert "madrid" not in words0 + words1 and "the" not in words0 + words1 and "with" not in words0
    # a word in every caption stays out even where captions are short (its share of words is larger there)
    short = clusters.ctfidf_terms(["Madrid river"] * 4 + ["Madrid at the big gothic old cathedral"] * 4,
                                  np.repeat([0, 1], 4), k=2, top=3)
    assert [t for t, _ in short[0]] == ["river"]
    assert "boats" not in words1  # in cluster 1 less often than in the collection
    assert all(score > 0 for t in terms for _, score in t)


def test_ctfidf_sparse_and_dense_paths_agree():
    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(40)])
    counts = rng.integers(0, 6, size=(5, 40)).astype(float)
    sizes = np.array([5, 6, 7, 5, 9])
    import scipy.sparse as sp

    dense = clusters._ctfidf_dense(counts, sizes, vocab, top=4, min_captions=2)
    sparse = clusters._ctfidf_sparse(sp.csr_matrix(counts), sizes, vocab, top=4, min_captions=2)
    assert any(dense)
    assert [[t for t, _ in row] for row in dense] == [[t for t, _ in row] for row in sparse]
    np.testing.assert_allclose([s for row in dense for _, s in row], [s for row in sparse for _, s in row])


def test_hdbscan_on_a_sample_still_labels_every_point():
    rng = np.random.default_rng(2)
    centres = np.array([[0, 0], [5, 0], [0, 5], [5, 5]])
    truth = np.repeat(np.arange(4), 1_000)
    xy = centres[truth] + rng.normal(scale=0.3, size=(4_000, 2))
    labels = clusters.hdbscan_clusters(xy, clusters.HdbscanParams(sample=400, min_cluster_size=200))
    assert len(labels) == 4_000
    assert adjusted_rand_score(truth, labels) >= 0.9
    # ids are by decreasing size
    sizes = np.bincount(labels[labels >= 0])
    assert list(sizes) == sorted(sizes, reverse=True)


def test_pca_reduce_matches_scikit_learn_up_to_sign_in_chunks(monkeypatch):
    monkeypatch.setattr(layout, "PCA_CHUNK", 64)  # several chunks on a small matrix
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(500, 20)) * np.linspace(5, 0.1, 20)).astype(np.float16)
    ours, kept = layout.pca_reduce(x, 4)
    ref = PCA(n_components=4).fit(x.astype(np.float64))
    theirs = ref.transform(x.astype(np.float64))
    for j in range(4):
        assert min(np.abs(ours[:, j] - theirs[:, j]).max(), np.abs(ours[:, j] + theirs[:, j]).max()) < 1e-3
    assert kept == pytest.approx(ref.explained_variance_ratio_.sum(), abs=1e-6)
    np.testing.assert_array_equal(ours, layout.pca_reduce(x, 4)[0])


def test_unit_square_keeps_the_maps_shape_and_centres_unplaced_points():
    xy = np.array([[10.0, 5.0], [14.0, 5.0], [12.0, 7.0], [np.nan, np.nan]])
    out = layout.to_unit_square(xy)
    np.testing.assert_allclose(out[:3], [[0, 0.25], [1, 0.25], [0.5, 0.75]])
    np.testing.assert_allclose(out[3], [0.5, 0.5])


def test_auto_backend_picks_cuml_only_when_it_is_usable():
    assert layout.choose_backend("auto", lambda: (True, "cuML with 1 CUDA GPU(s)")) == ("cuml", "cuML with 1 CUDA GPU(s)")
    backend, why = layout.choose_backend("auto", lambda: (False, "cuML is installed but no CUDA GPU is visible"))
    assert backend == "umap" and why == "cuML is installed but no CUDA GPU is visible, so umap-learn runs on the CPU"
    assert layout.choose_backend("umap", lambda: (True, "x"))[0] == "umap"


def test_backend_cuml_with_cuml_but_no_gpu_names_the_reason():
    with pytest.raises(UserError, match="^--backend cuml needs cuML and an NVIDIA GPU, but cuML is installed but "
                                        "no CUDA GPU is visible: pip install"):
        layout.choose_backend("cuml", lambda: (False, "cuML is installed but no CUDA GPU is visible"))


def test_cuml_that_does_not_import_is_reported_not_installed(monkeypatch):
    real = layout.importlib.util.find_spec
    monkeypatch.setattr(layout.importlib.util, "find_spec", lambda name: None if name == "cuml" else real(name))
    assert layout.cuml_status() == (False, "cuML is not installed")


def test_tag_edges_are_counted_by_reason_and_urls_are_hashed_to_ids(tmp_path):
    ids = [row_id(f"http://img.test/{i}.jpg") for i in range(3)]
    path = tmp_path / "tags.csv"
    path.write_text("Source,Target,Weight\n"
                    f"{ids[0]},bridge,0.9\n{ids[0]},bridge,0.4\n"        # listed twice: one edge, max weight
                    "http://img.test/1.jpg,river,0.5\n"                    # a URL, not an id
                    f"{ids[2]},tram,\n"                                    # no weight: counts as 1
                    f"{ids[2]}, ,0.5\n{ids[1]},night,-1\nabcdefabcdefabcd,bridge,0.3\n")
    edges, dropped = network_layout.read_edges(path, ids)
    assert edges.values.tolist() == [[0, "bridge", 0.9], [1, "river", 0.5], [2, "tram", 1.0]]
    assert dropped == {"edge_no_tag": 1, "edge_weight_not_positive": 1, "edge_image_not_on_map": 1,
                       "edge_duplicate": 1}
    net = network_layout.build_network(edges, 3, dropped)
    assert net.tags == ["bridge", "river", "tram"]
    assert (net.adjacency != net.adjacency.T).nnz == 0 and net.adjacency[0, 3] == 0.9
    assert net.image_degree.tolist() == [1, 1, 1] and net.tag_weight.tolist() == [0.9, 0.5, 1.0]


def test_tags_csv_without_the_gephi_columns_is_a_user_error(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("url,concept,confidence\nhttp://a/b.jpg,tree,0.5\n")
    with pytest.raises(UserError, match="lacks column\\(s\\) Source, Target, Weight"):
        network_layout.read_edges(path, [])
