"""One extraction value for every caller; detectors score statistics without a model and read their parameters
when used; removed names stay removed."""
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
    # the cells ride in the path pass (statistics.RIDERS): kept in their own entry though nobody asked yet
    assert names == sorted(f"images-{ex.entry_key(identity, r)}" for r in ("path", "fresh", "cells"))


def test_a_rider_is_kept_from_the_pass_that_ran_and_read_later_without_a_pass(tiny_model, tiny_images, tmp_path,
                                                                               monkeypatch):
    """SpatialPath after DiffPathV2 on the same images: the cells were kept when the path pass ran, so asking for
    them runs no trajectory, and they equal cells computed on their own (no cache)."""
    ex = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False)
    computed = []
    compute = Extraction._compute
    monkeypatch.setattr(Extraction, "_compute",
                        lambda self, *a: computed.append(tuple(a[3])) or compute(self, *a))
    ex.statistics(tiny_images, "path")
    assert computed == [("path", "cells")]
    cells = ex.statistics(tiny_images, "cells")
    assert computed == [("path", "cells")], "the cells were read from the cache, no second pass"
    alone = Extraction(tiny_model, k=2, progress=False).statistics(tiny_images, "cells")
    np.testing.assert_array_equal(cells["cell_sums"], alone["cell_sums"])
    ex.statistics(tiny_images, "fresh")  # another pass: no rider of its own
    assert computed[-1] == ("fresh",)


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


def test_removed_names_are_gone_and_a_bare_model_is_refused_by_name(tiny_model):
    """0.3's aliases were dropped in 0.4 (never released): importing them fails, a model where an Extraction
    belongs is refused with a message naming the fix."""
    import importlib

    from diffpath_core import features
    from diffpath_core.evaluate import Evaluation
    from diffpath_core.validation import select_formulation

    for gone in ("diffpath_core.data", "diffpath_core.paper_datasets", "diffpath_core.download"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(gone)
    assert not hasattr(features, "ssim_map") and not hasattr(features, "V2Formulation")
    ex = Extraction(tiny_model, k=2, progress=False)
    assert Evaluation(ex).extraction is ex
    for call in (lambda: Evaluation(tiny_model), lambda: select_formulation(tiny_model, None)):
        with pytest.raises(TypeError, match=r"takes an Extraction \(Extraction\(model"):
            call()


# ----------------------------------------------------------------------------- parameters read when used

def test_set_params_and_attributes_take_effect(tiny_model, tiny_images):
    """scikit-learn's semantics: a parameter changed after first use is read at the next fit / score."""
    det = DiffPathV2(tiny_model, k=2, progress=False)
    k2 = det.features(tiny_images)
    det.set_params(k=3)
    k3 = det.features(tiny_images)
    np.testing.assert_array_equal(k3, DiffPathV2(tiny_model, k=3, progress=False).features(tiny_images))
    assert not np.allclose(k2, k3), "K = 3 features differ from K = 2 ones"
    det.k = 2  # a plain attribute change works the same way
    np.testing.assert_array_equal(det.features(tiny_images), k2)
    with pytest.raises(ValueError, match="has no parameter"):
        det.set_params(steps=4)
    with pytest.raises(ValueError, match="'1d' or '6d'"):
        DiffPath(tiny_model, k=2).set_params(variant="2d")
    assert det.set_params(form=PaperForm(weight="none")) is det and det.get_params()["form"].weight == "none"


def test_a_fitted_detector_whose_settings_changed_must_be_refitted(tiny_model, tiny_images):
    det = DiffPathV2(tiny_model, k=2, progress=False).fit(tiny_images)
    before = det.score_samples(tiny_images)
    det.set_params(batch_size=5, progress=True)
    # no refit needed: other batches change float32 rounding only
    np.testing.assert_allclose(det.score_samples(tiny_images), before, rtol=1e-4)
    det.set_params(k=3)
    with pytest.raises(RuntimeError, match=r"fitted with other settings.*k 2 → 3.*fit\(id_train_images\) again"):
        det.score_samples(tiny_images)
    det.set_params(k=2, form=PaperForm(weight="none"))
    with pytest.raises(RuntimeError, match="form"):
        det.score_samples(tiny_images)
    stats = Extraction(tiny_model, k=2, progress=False).statistics(tiny_images)
    with pytest.raises(RuntimeError, match="form"):
        det.score_statistics(stats)
    det.fit(tiny_images)  # refitted: scores again, with the new form
    expected = DiffPathV2(tiny_model, k=2, form=PaperForm(weight="none"), batch_size=5, progress=False)
    expected.fit(tiny_images)
    np.testing.assert_array_equal(det.score_samples(tiny_images), expected.score_samples(tiny_images))
