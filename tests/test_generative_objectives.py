"""The likelihood-based objectives (tied reweighted wake-sleep, wake-sleep) and the ``--untie`` ablation,
checked against exact enumeration on tiny nets."""

import json
import math

import pytest
import torch
from _brute_force import random_batch, random_net, single_thread  # noqa: F401

from pyro_dcim import DCIM
from pyro_dcim.cli import fit
from pyro_dcim.inference import ais_log_likelihood, exact_log_likelihood
from pyro_dcim.inference.energy import ChainEnergy
from pyro_dcim.objectives import OBJECTIVES, get_objective, reweighted_wake_sleep_loss, sleep_dreams, wake_particles


def _batch(input_shape=(1, 8, 8), n=32, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    proto = torch.rand(classes, *input_shape, generator=g)
    x0 = torch.bernoulli((proto[y] + 0.2 * torch.rand(n, *input_shape, generator=g)).clamp(0, 1), generator=g)
    return x0, y


@pytest.mark.parametrize("name", ["rws", "wake-sleep", "generative"])
@pytest.mark.parametrize("spec, input_shape", [([(3, 2, 4), 16, 4], (1, 8, 8)), ([32, 16, 4], (64,))])
def test_each_new_objective_decreases_on_a_fixed_batch(name, spec, input_shape, single_thread):  # noqa: F811
    torch.manual_seed(1)
    net = DCIM.from_spec(spec, input_shape=input_shape)
    x0, y = _batch(input_shape)
    loss = get_objective(name)
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)

    def evaluate():  # the same particles and dreams each time
        with torch.no_grad():
            parts = loss(net, x0, y, particles=8, generator=torch.Generator().manual_seed(5))
        return parts.forward_nll + parts.reverse_nll_per_pixel

    before = evaluate()
    for _ in range(40):
        opt.zero_grad()
        loss(net, x0, y, particles=4).total.backward()
        opt.step()
    after = evaluate()
    assert after < 0.9 * before


def test_the_bound_lies_below_the_exact_likelihood_and_closes_with_particles(single_thread):  # noqa: F811
    net = random_net([3, 2, 3], (5,), seed=3, scale=1.5)
    x0, y = random_batch(net, 4, seed=1)
    exact = exact_log_likelihood(net, x0, y)
    reps, g = 400, torch.Generator().manual_seed(0)
    with torch.no_grad():
        bounds = torch.stack([-reweighted_wake_sleep_loss(net, x0[i:i + 1].expand(reps, -1), y[i:i + 1].expand(reps),
                                                          particles=3, generator=g, reduction="sum").reverse_nll_sum
                              for i in range(len(x0))])
        # reverse_nll_sum is a batch mean over the repeats: recover the per-repeat bounds
        per_rep = []
        for i in range(len(x0)):
            log_p, log_q = wake_particles(net, x0[i:i + 1].expand(reps, -1), y[i:i + 1].expand(reps), 3, g)
            per_rep.append((log_p - log_q).logsumexp(0) - math.log(3))
        per_rep = torch.stack(per_rep)                    # (images, reps)
        mean, se = per_rep.mean(1), per_rep.std(1) / math.sqrt(reps)
        assert (mean <= exact + 3 * se).all()
        assert (mean < exact - 1e-3).any()                # K = 3 leaves a gap: the test could fail
        assert torch.allclose(bounds, mean, atol=6 * se.max())
        # the weights themselves are unbiased for p(x^0 | y): their mean over many particles, within 3 s.e.
        log_p, log_q = wake_particles(net, x0, y, 50000, g)
        w = (log_p - log_q - exact).exp()                 # w / p(x^0 | y)
    assert ((w.mean(0) - 1).abs() <= 3 * w.std(0) / math.sqrt(len(w))).all()


def _all_bits(m):
    return ((torch.arange(1 << m)[:, None] >> torch.arange(m)) & 1).double()


def _exact_wake_theta(net, x0, y):
    """``∇ log p(x^0 | y)`` of the reverse chain, summing ``p(x^0, h | y)`` over every ``h`` (differentiably)."""
    m1, m2 = (int(torch.Size(net.shapes[k]).numel()) for k in (1, 2))
    h1, h2 = torch.meshgrid(torch.arange(1 << m1), torch.arange(1 << m2), indexing="ij")
    bits = {1: _all_bits(m1)[h1.flatten()][:, None].expand(-1, len(x0), -1),
            2: _all_bits(m2)[h2.flatten()][:, None].expand(-1, len(x0), -1)}
    t = ChainEnergy(net, x0, y).terms(bits, ("reverse", "reverse_end"))
    log_lik = (t["reverse"] + t["reverse_end"]).logsumexp(0)
    assert torch.allclose(log_lik, exact_log_likelihood(net, x0, y))
    return _grad(net, log_lik.sum())


def _grad(net, loss):
    net.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                      for p in net.parameters()])


def test_wake_theta_gradient_matches_the_exact_gradient_in_expectation(single_thread):  # noqa: F811
    # self-normalised weights are biased O(1/K): with many particles the bias is far below the noise
    net = random_net([3, 2, 3], (5,), seed=4, scale=1.0)
    x0, y = random_batch(net, 2, seed=2)
    exact = _exact_wake_theta(net, x0, y)
    g = torch.Generator().manual_seed(1)
    draws = []
    for _ in range(60):
        log_p, log_q = wake_particles(net, x0, y, 2000, g)
        w = torch.softmax((log_p - log_q).detach(), 0)
        draws.append(_grad(net, (w * log_p).sum()))
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert ((mean - exact).abs() <= 3 * se + 1e-3).float().mean() >= 0.95
    assert exact.abs().max() > 0.1                        # a gradient that is not trivially zero


def test_sleep_gradient_is_unbiased(single_thread):  # noqa: F811
    """Sleep-φ: ``E_{(y,h,x)~p} ∇ log q(h, y | x)``, against the exact sum over every ``(y, h, x^0)``."""
    net = random_net([2, 2, 3], (3,), seed=5, scale=1.0)
    xs, h1, h2 = _all_bits(3), _all_bits(2), _all_bits(2)
    X, Y, H1, H2 = torch.meshgrid(torch.arange(8), torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    X, Y, H1, H2 = X.flatten(), Y.flatten(), H1.flatten(), H2.flatten()
    energy = ChainEnergy(net, xs[X], Y)
    t = energy.terms({1: h1[H1][None], 2: h2[H2][None]})
    log_joint = (t["reverse"] + t["reverse_end"]).detach() + math.log(1 / 3)    # p(y) p(h, x | y)
    assert torch.isclose(log_joint.logsumexp(-1), torch.zeros((), dtype=torch.float64), atol=1e-9).all()
    exact = _grad(net, -(log_joint.exp() * (t["forward"] + t["forward_end"])).sum())
    g = torch.Generator().manual_seed(2)
    draws = []
    for _ in range(40):
        dx, dy, dh = sleep_dreams(net, 4000, generator=g)
        d = ChainEnergy(net, dx, dy).terms(dh, ("forward", "forward_end"))
        draws.append(_grad(net, -(d["forward"] + d["forward_end"]).mean()))
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert ((mean - exact).abs() <= 3 * se + 1e-6).float().mean() >= 0.95
    assert exact.abs().max() > 0.05


def test_dreams_come_from_the_reverse_model(single_thread):  # noqa: F811
    net = random_net([3, 2, 3], (4,), seed=6, scale=1.5)
    prior = torch.tensor([0.6, 0.3, 0.1])
    n = 30000
    x0, y, h = sleep_dreams(net, n, class_prior=prior, generator=torch.Generator().manual_seed(3))
    freq = torch.bincount(y, minlength=3).double() / n
    assert ((freq - prior).abs() <= 4 * (prior * (1 - prior) / n).sqrt()).all()
    # each class's pixel frequencies match the reverse model's exact marginal p(x^0_j = 1 | y)
    states = _all_bits(4)
    for c in range(3):
        log_lik = exact_log_likelihood(net, states, torch.full((16,), c))
        exact = (log_lik.exp()[:, None] * states).sum(0)
        got = x0[y == c].mean(0)
        se = (exact * (1 - exact) / (y == c).sum()).sqrt()
        assert ((got - exact).abs() <= 4 * se + 1e-9).all()
    assert set(h) == {1, 2} and h[1].shape == (1, n, 3)


def test_untie_doubles_exactly_the_weights_and_every_reverse_reader_uses_the_copy(single_thread):  # noqa: F811
    tied = random_net([3, 2, 3], (5,), seed=7)
    untied = random_net([3, 2, 3], (5,), seed=7).untie()
    names = dict(tied.named_parameters())
    extra = {k: v for k, v in untied.named_parameters() if k not in names}
    assert set(extra) == {f"layers.{i}.reverse_weight" for i in range(3)}
    assert all(extra[f"layers.{i}.reverse_weight"].shape == tied.layers[i].weight.shape for i in range(3))
    assert not untied.tied and tied.tied
    x0, y = random_batch(tied, 3, seed=4)
    # equal copies: the same model in both directions
    assert torch.equal(exact_log_likelihood(tied, x0, y), exact_log_likelihood(untied, x0, y))
    with torch.no_grad():
        for layer in untied.layers:
            layer.reverse_weight.normal_(0, 1.5)
    assert torch.equal(untied(x0), tied(x0))                       # the forward chain keeps W
    assert not torch.allclose(untied.reverse_mean_field(y).logits, tied.reverse_mean_field(y).logits)
    exact = exact_log_likelihood(untied, x0, y)
    assert not torch.allclose(exact, exact_log_likelihood(tied, x0, y))
    # AIS's Gibbs sweeps leave the untied reverse posterior invariant: its estimate stays a tight lower bound
    torch.manual_seed(0)
    ais = ais_log_likelihood(untied, x0, y, num_steps=200, num_chains=64)
    assert ((ais.estimate - exact) <= 3 * ais.stderr + 1e-6).all()
    assert ((exact - ais.estimate) <= 3 * ais.stderr + 0.05).all()


def test_untied_run_reproduces_the_tied_run_on_forward_terms(tmp_path, single_thread):  # noqa: F811
    common = ["--arch", "32-16-10", "--train-size", "300", "--val-size", "100", "--epochs", "1", "--batch-size", "50",
              "--objective", "discriminative", "--no-figures", "--augment", "none"]
    assert fit.main([*common, "--out", str(tmp_path / "tied")]) == 0
    assert fit.main([*common, "--untie", "--out", str(tmp_path / "untied")]) == 0
    from pyro_dcim.training.checkpoint import load_model

    a, b = load_model(tmp_path / "tied"), load_model(tmp_path / "untied")
    assert a.tied and not b.tied
    for name, p in a.named_parameters():
        assert torch.equal(p, dict(b.named_parameters())[name]), name
    for layer, init in zip(b.layers, a.layers):   # the reverse copies got no gradient: still the initial weights
        assert not torch.equal(layer.reverse_weight, init.weight)


def test_fit_generative_runs_end_to_end_on_the_bundled_subset(tmp_path, single_thread):  # noqa: F811
    out = tmp_path / "gen"
    argv = ["--objective", "generative", "--arch", "64-32-10", "--train-size", "400", "--val-size", "200",
            "--epochs", "2", "--batch-size", "50", "--particles", "3", "--binarize", "dynamic", "--no-figures",
            "--out", str(out)]
    assert fit.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["objective"] == "generative" and config["particles"] == 3
    # the generative defaults: untied, nats per image (wake-phi 0.01 is the objective's own)
    assert config["untie"] is True and config["reverse_reduction"] == "sum" and config["reverse_weight"] == 1.0
    from pyro_dcim.training.checkpoint import load_model
    assert not load_model(out).tied
    assert OBJECTIVES["generative"].defaults["wake_phi_weight"] == 0.01
    assert 0 < summary["val_reverse_nll_sum"] < 784 * math.log(2) * 2 and summary["val_acc"] > 0.3
    assert set(OBJECTIVES) >= {"rws", "wake-sleep", "generative"}


def test_sample_prints_the_independent_classifier_figure(tmp_path, capsys, single_thread):  # noqa: F811
    from pyro_dcim.classifier import PlainCNN, save_classifier
    from pyro_dcim.cli import draw
    from pyro_dcim.training.checkpoint import model_state, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "net.pt", {"model": model_state(DCIM.from_spec("16-10", (1, 28, 28)))})
    save_classifier(PlainCNN(), tmp_path / "cnn.pt", 0.5)
    assert draw.main([str(tmp_path / "net.pt"), "--mode", "ancestral", "--per-class", "2",
                        "--classifier", str(tmp_path / "cnn.pt"), "--out", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "class consistency" in out and "independent classifier (MNIST test accuracy 0.5000)" in out


def test_generator_comparison_script_end_to_end(tmp_path, single_thread):  # noqa: F811
    import subprocess
    import sys
    from pathlib import Path

    from pyro_dcim.classifier import PlainCNN, save_classifier

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "rws"
    assert fit.main(["--objective", "rws", "--arch", "32-16-10", "--train-size", "300", "--val-size", "100",
                     "--epochs", "1", "--batch-size", "50", "--particles", "2", "--binarize", "dynamic",
                     "--no-figures", "--out", str(run)]) == 0
    save_classifier(PlainCNN(), tmp_path / "cnn.pt", 0.5)
    cmd = [sys.executable, str(root / "analysis" / "generator_comparison.py"), "--runs", str(run), "--images", "2",
           "--marginal-images", "1", "--steps", "3", "--chains", "2", "--per-class", "3", "--memorise", "10",
           "--classifier", str(tmp_path / "cnn.pt"), "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "generator_comparison.md").read_text()
    assert "rws (K=2, w=1 sum, wake-φ 1)" in table     # rws's own defaults: nats per image
    record = json.loads((tmp_path / "out" / "runs" / "generator-rws.json").read_text())["comparison"]
    assert record["ais_nll_cond"] > 0 and 0 <= record["ancestral_indep"] <= 1 and record["nearest_train_ratio"] > 0
    assert (tmp_path / "out" / "generator_comparison_rws_sample-layer.png").is_file()
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)   # the record is reused
    assert again.returncode == 0 and "evaluating" not in again.stdout
    # --images 0 --marginal-images 0: no AIS (the paper's CNN on a CPU), the columns a dash, the text says so
    no_ais = [*cmd[:4], "--images", "0", "--marginal-images", "0", *cmd[8:-1], str(tmp_path / "no-ais")]
    done = subprocess.run(no_ais, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    row = json.loads((tmp_path / "no-ais" / "runs" / "generator-rws.json").read_text())["comparison"]
    assert row["ais_nll_cond"] is None and row["ais_nll_marg"] is None and 0 <= row["ancestral_own"] <= 1
    table = (tmp_path / "no-ais" / "generator_comparison.md").read_text()
    assert "AIS: not run" in table and "| – | – | – | – |" in table
