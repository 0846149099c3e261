"""The Gibbs kernel: invariance of the exact posterior, accuracy, colouring, ArviZ diagnostics."""

import numpy as np
import pytest
import torch
from _brute_force import brute_force, joint_states, random_batch, random_net, single_thread, state_index
from scipy.stats import chi2

from pyro_dcim.chain import Chain
from pyro_dcim.inference import (
    DCIMGibbs,
    diagnostics,
    exact_marginals,
    exact_posterior,
    gibbs_posterior,
    mean_field_marginals,
)
from pyro_dcim.inference.blanket import LayerBlanket
from pyro_dcim.pyro_models import hidden_site

pytestmark = pytest.mark.usefixtures(single_thread.__name__)

DENSE = ([3, 3, 3], (4,))
CONV = ([(2, 1, 2, 0), (2, 1, 1, 0), 3, 2], (1, 3, 3))   # x1: 2x2x2 (conv), x2: 1x1x1, x3: 3


def _chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's test of counts against probabilities; states expected < 5 times are pooled."""
    expected = probs * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    stat = ((obs - exp) ** 2 / exp)[keep].sum().item()
    return float(chi2.sf(stat, int(keep.sum()) - 1))


@pytest.mark.parametrize("spec,units,direction", [
    (DENSE, "01", "forward"), (DENSE, "pm1", "reverse"), (CONV, "01", "forward"), (CONV, "01", "reverse"),
    (CONV, "pm1", "forward"),
], ids=lambda v: v if isinstance(v, str) else "dense" if v == DENSE else "conv")
def test_one_sweep_keeps_the_exact_posterior(spec, units, direction):
    """Draw N joint states from the enumerated posterior, apply one sweep, test the histogram."""
    net = random_net(*spec, units, seed=7, scale=1.5 if units == "01" else 0.8)
    x0, y = random_batch(net, 2, seed=3)
    ref = brute_force(net, x0, y, direction, posterior=True)
    states, post = joint_states(net), ref["weights"]                      # post: (J, B)
    n = 20000
    torch.manual_seed(0)
    idx = torch.multinomial(post.T, n, replacement=True).T                 # (N, B)
    start = {hidden_site(k): v[idx] for k, v in states.items()}
    kernel = DCIMGibbs(net, x0, y, num_chains=n, direction=direction)
    kernel.initial_params = start
    kernel.setup(warmup_steps=0)
    out = kernel.sample(kernel.initial_params)
    new = state_index(net, {k: out[hidden_site(k)] for k in states})
    assert (new != idx).double().mean() > 0.1                             # the sweep does move
    for b in range(2):
        counts = torch.bincount(new[:, b], minlength=len(post)).double()
        assert _chi_square_p(counts, post[:, b]) > 1e-4
        # total variation no larger than that of the exact draws it started from (sampling noise)
        before = torch.bincount(idx[:, b], minlength=len(post)).double()
        tv_after, tv_before = ((t / n - post[:, b]).abs().sum() / 2 for t in (counts, before))
        assert tv_after < 1.25 * tv_before + 0.005
    # the test has power: independent units with the right marginals are rejected
    wrong = torch.ones(len(post), 2, dtype=torch.float64)
    for k, v in states.items():
        p = ref["hidden"][k - 1].flatten(1).T                             # (m_k, B)
        bits = v.flatten(1)[:, :, None]                                   # (J, m_k, 1)
        wrong = wrong * (bits * p + (1 - bits) * (1 - p)).prod(1)
    counts = torch.bincount(torch.multinomial(wrong[:, 0], n, replacement=True), minlength=len(post)).double()
    assert _chi_square_p(counts, post[:, 0]) < 1e-4


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_conv_colouring_partitions_the_layer(direction):
    net = random_net([(3, 1, 2), (2, 2, 3), 4, 2], (1, 6, 6))              # x1: 2x6x6, x2: 3x3x3
    chain = Chain(net, direction)
    k = 1 if direction == "forward" else 2
    blanket = LayerBlanket(chain, k)
    colours = blanket.colours()
    # x1 is the input of W^2 (window 2); x2 is its output, stride 2: ceil(2 / 2) = 1
    period = 2 if direction == "forward" else 1
    c, h, w = net.shapes[k]
    assert blanket.period == period and len(colours) == c * period ** 2
    units = torch.cat([col.units for col in colours]).sort().values
    assert torch.equal(units, torch.arange(c * h * w))                     # every unit exactly once
    for col in colours:                                                    # each child has one owner
        assert col.children.unique().numel() == col.children.numel()
        assert col.owner.max() < col.units.numel()


NETS = [(DENSE, "01", 0, "forward"), (([4, 3, 3], (6,)), "01", 1, "forward"), (DENSE, "01", 2, "reverse"),
        (DENSE, "pm1", 3, "forward"), (CONV, "01", 4, "forward"), (CONV, "01", 5, "reverse")]


def test_gibbs_within_4_stderr_of_exact_posterior():
    """Large weights (mean field visibly wrong); |gibbs − exact| <= 4 MCSE + 1/ESS for >= 95%."""
    torch.manual_seed(0)
    hits, mf_errors = [], []
    for spec, units, seed, direction in NETS:
        net = random_net(*spec, units, seed=seed, scale=2.0 if units == "01" else 0.8)
        x0, y = random_batch(net, 4, seed=seed)
        exact = exact_posterior(net, x0, y, direction=direction)
        est, _ = gibbs_posterior(net, x0, y, num_samples=800, warmup_steps=100, num_chains=4, direction=direction)
        tol = 4 * est.stderr.flat() + 1 / est.ess[:, None]
        hits.append(((est.flat() - exact.flat()).abs() <= tol).flatten())
        mf_errors.append((mean_field_marginals(net, x0).flat() - exact_marginals(net, x0).flat()).abs().max())
    assert torch.cat(hits).double().mean() >= 0.95
    assert max(mf_errors) > 0.1


def test_arviz_summary_of_a_converged_run(tmp_path):
    net = random_net(*DENSE, "01", seed=11, scale=0.7)
    x0, y = random_batch(net, 2, seed=1)
    torch.manual_seed(1)
    est, idata = gibbs_posterior(net, x0, y, num_samples=400, warmup_steps=50, num_chains=4)
    post = idata.posterior
    assert set(post.data_vars) == {"x1", "x2"} and post.sizes["chain"] == 4 and post.sizes["draw"] == 400
    assert post["x1"].dims == ("chain", "draw", "image", "x1_unit") and post.sizes["image"] == 2
    table = diagnostics.summary(idata)
    assert len(table) == 2 * (3 + 3) and {"r_hat", "ess_bulk", "ess_tail", "mcse_mean"} <= set(table.columns)
    assert table.index[0] == "x1[0, 0]"
    assert table["r_hat"].max() < 1.05 and (table["ess_bulk"] > 100).all() and table["ess_tail"].notna().all()
    bits_mean = torch.as_tensor(np.array(post["x1"].values)).mean((0, 1))
    summary_mean = torch.as_tensor(np.array(table["mean"].values[:6])).reshape(2, 3)
    assert torch.allclose(summary_mean, bits_mean.double(), atol=1e-9)
    report = diagnostics.per_image_report(idata, est.extra["seconds"])
    assert list(report.columns) == ["r_hat_max", "ess_bulk_min", "ess_tail_min", "mcse_mean_max", "seconds_per_ess"]
    assert (report["r_hat_max"] < 1.05).all() and (report["seconds_per_ess"] > 0).all()
    assert torch.isfinite(est.ess).all() and (est.ess > 100).all()
    assert torch.isfinite(est.extra["seconds_per_ess"]).all()
    png = diagnostics.plot_trace_rank(idata, tmp_path / "trace.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_rejects_what_it_cannot_do():
    net = random_net([3], (4,))
    x0, y = random_batch(net, 2)
    with pytest.raises(ValueError, match="no hidden layers"):
        DCIMGibbs(net, x0, y)
    with pytest.raises(ValueError, match="init must be one of"):
        DCIMGibbs(random_net(*DENSE), x0, y, init="zeros")


def test_pyro_convention_run_with_data_and_arviz_from_pyro(capsys):
    """The kernel is built from the net and gets its data through MCMC.run(x0, y), as Pyro's kernels
    do; the batched chains are MCMC's and ArviZ's chain dimension, and the old form still works."""
    import warnings

    from pyro.infer import MCMC

    net = random_net(*DENSE, seed=1)
    x0, y = random_batch(net, 2)
    torch.manual_seed(0)
    mcmc = MCMC(DCIMGibbs(net, num_chains=4), num_samples=30, warmup_steps=5, disable_progbar=True)
    mcmc.run(x0, y)
    grouped = mcmc.get_samples(group_by_chain=True)
    assert grouped["x1"].shape == (4, 30, 2, 3) and grouped["x2"].shape == (4, 30, 2, 3)
    assert mcmc.get_samples()["x1"].shape == (120, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
        idata = az.from_pyro(mcmc, log_likelihood=False)
    assert idata.posterior.sizes["chain"] == 4 and idata.posterior.sizes["draw"] == 30
    assert np.array_equal(idata.posterior["x1"].values, grouped["x1"].numpy())
    mcmc.summary()
    printed = capsys.readouterr().out
    assert "r_hat" in printed and "x1[1,2]" in printed          # one row per unit, R-hat across the 4 chains
    old = DCIMGibbs(net, x0, y, num_chains=2)                     # data in the constructor: run() with none
    mcmc = MCMC(old, num_samples=5, warmup_steps=1, disable_progbar=True)
    mcmc.run()
    assert mcmc.get_samples(group_by_chain=True)["x1"].shape == (2, 5, 2, 3)
    with pytest.raises(ValueError, match=r"run\(x0, y\)"):
        MCMC(DCIMGibbs(net, num_chains=2), num_samples=2, disable_progbar=True).run()
