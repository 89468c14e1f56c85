"""The converted network and the trajectory reproduce the official DiffPath implementation's vectors."""
import numpy as np
import pytest
import torch

from diffpath_core.features import DIFFPATH_STATISTICS, diffpath_statistics
from diffpath_core.statistics import path_statistics, to_numpy
from diffpath_core.trajectory import invert


def test_converted_network_matches_raw_output(reference_model, reference):
    with torch.no_grad():
        out = reference_model.unet(torch.from_numpy(reference["x0"]),
                                   torch.from_numpy(reference["raw_timesteps"])).sample
    np.testing.assert_allclose(out.numpy(), reference["raw_output"], atol=1e-4, rtol=0)


def test_schedule_matches_respaced_diffusion(reference_model, reference):
    s = reference_model.schedule(10)
    assert list(s.indices) == reference["ddim_timesteps"].tolist()
    np.testing.assert_allclose(s.alphas_cumprod, reference["alphas_cumprod"], rtol=1e-12)
    assert s.net_timesteps[1] == pytest.approx(400 * 1000 / 4000)


@pytest.mark.parametrize("clip,key", [(True, "eps"), (False, "eps_noclip")])
def test_inversion_eps_and_states(reference_model, reference, clip, key):
    traj = invert(reference_model, torch.from_numpy(reference["x0"]), k=10, clip=clip)
    np.testing.assert_allclose(traj.eps.numpy(), reference[key], atol=1e-4, rtol=0)
    if clip:
        np.testing.assert_allclose(traj.states_after.numpy(), reference["x_t"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(traj.x_final.numpy(), reference["x_T"], atol=1e-4, rtol=0)


def test_twelve_statistics(reference_model, reference):
    traj = invert(reference_model, torch.from_numpy(reference["x0"]), k=10, clip=True)
    stats = diffpath_statistics(to_numpy(path_statistics(traj)))
    assert set(stats) == set(DIFFPATH_STATISTICS)
    for name in DIFFPATH_STATISTICS:
        # eps_sum and deps_dt are signed sums that nearly cancel (deps_dt telescopes to K·Σ(ε_K−1 − ε_0)); their
        # float32 rounding is bounded against the size of the summands, Σ|x| (the reference's own *_abs)
        bound = 1e-4 * (reference[f"{name}_abs"] if name in ("eps_sum", "deps_dt") else np.abs(reference[name]))
        error = np.abs(stats[name] - reference[name])
        assert (error <= bound).all(), f"{name}: |ours − official| = {error} exceeds {bound}"


def test_score_error_identity(reference_model, reference):
    """r_k = ε_k − ε̃_k equals √(ᾱ/(1−ᾱ)) (x0 − x̂0_k), the form path_statistics uses."""
    traj = invert(reference_model, torch.from_numpy(reference["x0"]), k=10, clip=True)
    a = torch.tensor(traj.schedule.alphas_cumprod, dtype=torch.float64).view(1, -1, 1, 1, 1)
    x0, xk = traj.x0.double()[:, None], traj.x.double()
    eps_tilde = (xk - a.sqrt() * x0) / (1 - a).sqrt()
    direct = traj.eps.double() - eps_tilde
    via_x0 = (a / (1 - a)).sqrt() * (x0 - traj.x0_hat.double())
    torch.testing.assert_close(direct, via_x0, atol=2e-3, rtol=1e-3)


def test_export_writes_the_official_checkpoint_back(reference_model):
    """Converted, then exported: the official state dict again, name for name, shape for shape, value for value
    (the format rehearsal checkpoints of the paper profile are written in)."""
    from pathlib import Path

    from diffpath_core.improved_diffusion import PRESETS, export_state_dict

    with np.load(Path(__file__).parent / "data" / "reference" / "improved_diffusion_celeba32_small_state_dict.npz") as d:
        official = {k: d[k] for k in d.files}
    exported = export_state_dict(reference_model.unet, PRESETS["reference_small"])
    assert sorted(exported) == sorted(official)
    for key, value in official.items():
        assert tuple(exported[key].shape) == value.shape, key
        np.testing.assert_array_equal(exported[key].numpy(), value, err_msg=key)


@pytest.mark.parametrize("preset", ["celeba32", "imagenet64"])
def test_full_size_presets_load_a_checkpoint_saved_as_the_official_code_saves(preset, tmp_path):
    """The presets at their real size: random weights, saved with torch.save under improved-diffusion's names,
    loaded by the real loader and converter (torch.load(weights_only=True)) into the same network."""
    from diffpath_core.improved_diffusion import PRESETS, build_unet, export_state_dict
    from diffpath_core.models import load_model

    cfg = PRESETS[preset]
    torch.manual_seed(0)
    unet = build_unet(cfg)
    path = tmp_path / f"{preset}.pt"
    torch.save(export_state_dict(unet, cfg), path)
    model = load_model(str(path), device="cpu", config=preset)
    n = sum(p.numel() for p in model.unet.parameters())
    assert n == sum(p.numel() for p in unet.parameters()) and n > 50e6
    for name, value in unet.state_dict().items():
        assert torch.equal(model.unet.state_dict()[name], value), name
