"""One extraction value for every caller; detectors score statistics without a model; old names still work."""
import dataclasses

import numpy as np
import pytest

from diffpath_core import DiffPath, DiffPathV2, Extraction, PaperForm
from diffpath_core.detectors import KDEDetector


def test_key_follows_what_changes_the_numbers(tiny_model, tmp_path):
    ex = Extraction(tiny_model, k=3)
    for same in (dict(batch_size=7), dict(cache_dir=tmp_path), dict(progress=False)):
        assert dataclasses.replace(ex, **same).key() == ex.key(), same
    for other in (dict(k=4), dict(clip=False), dict(precision="bf16"), dict(chunk_size=8)):
        assert dataclasses.replace(ex, **other).key() != ex.key(), other
    assert ex.key("fresh") != ex.key("path")
    assert dataclasses.replace(ex, noise_seed=1).key() == ex.key(), "the seed belongs to the fresh reading only"
    assert dataclasses.replace(ex, noise_seed=1).key("fresh") != ex.key("fresh")
    with pytest.raises(ValueError, match="precision"):
        Extraction(tiny_model, precision="fp64")


def test_statistics_land_in_the_entry_the_key_names(tiny_model, tiny_images, tmp_path):
    ex = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False)
    stats = ex.statistics(tiny_images, ("path", "fresh"))
    assert "eps_s2" in stats and "fresh_err_s2" in stats
    from diffpath_core.extraction import tensor_identity

    names = sorted(p.name for p in tmp_path.iterdir())
    identity = tensor_identity(tiny_images)
    assert names == sorted(f"images-{ex.entry_key(identity, r)}" for r in ("path", "fresh"))


def test_constructors_do_no_work_and_scoring_needs_no_model(tiny_model, tiny_images):
    det = DiffPathV2("no_such_model", k=3, density="compact")  # not loaded: nothing happens yet
    assert det.get_params()["model"] == "no_such_model" and det.get_params()["k"] == 3
    stats = Extraction(tiny_model, k=2, progress=False).statistics(tiny_images)
    scores = det.fit_statistics(stats).score_statistics(stats)
    assert scores.shape == (len(tiny_images),) and np.isfinite(scores).all()
    with pytest.raises(Exception, match="no_such_model"):
        det.fit(tiny_images)  # images need the model: now it is loaded, and the name is refused


def test_token_is_derived_from_the_scoring_parameters():
    base = DiffPathV2(k=3).token()
    assert DiffPathV2(k=5, batch_size=3, cache_dir="x", progress=False).token() == base, "extraction is not scoring"
    assert DiffPathV2(form=PaperForm(weight="none")).token() != base
    assert DiffPathV2(density="reference").token() != base
    assert DiffPathV2(detector=KDEDetector()).token() != base
    assert DiffPath(variant="1d").token() != DiffPath(variant="6d").token()


def test_a_detector_takes_a_whole_extraction(tiny_model, tiny_images):
    ex = Extraction(tiny_model, k=2, progress=False)
    det = DiffPathV2(ex)
    np.testing.assert_array_equal(det.features(tiny_images), DiffPathV2(tiny_model, k=2, progress=False)
                                  .features(tiny_images))
    with pytest.raises(TypeError, match="also k"):
        DiffPathV2(ex, k=5).features(tiny_images)


def test_deprecated_names_warn_and_give_the_same(tiny_model, tiny_images):
    with pytest.warns(DeprecationWarning):
        import importlib

        import diffpath_core.data as data
        importlib.reload(data)
    from diffpath_core.datasets import load_dataset

    assert data.load_dataset is load_dataset
    from diffpath_core import features, statistics
    from diffpath_core.extraction import extract_path_statistics

    with pytest.warns(DeprecationWarning):
        assert features.ssim_map is statistics.ssim_map
    with pytest.warns(DeprecationWarning):
        old = extract_path_statistics(tiny_model, tiny_images, k=2, progress=False)
    new = Extraction(tiny_model, k=2, progress=False).statistics(tiny_images)
    for key in new:
        np.testing.assert_array_equal(old[key], new[key], err_msg=key)


def test_evaluation_takes_an_extraction_or_warns_for_a_model(tiny_model):
    from diffpath_core.evaluate import Evaluation

    ex = Extraction(tiny_model, k=2, progress=False)
    assert Evaluation(ex).extraction is ex
    with pytest.warns(DeprecationWarning):
        old = Evaluation(tiny_model, k=2, progress=False)
    assert old.extraction.key() == ex.key()
    with pytest.raises(TypeError, match="also k"):
        Evaluation(ex, k=3)
