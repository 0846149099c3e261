"""Labels optional (issue 25): which labels a run keeps, the unlabelled images' term against exact enumeration,
the Pyro model's masked class site, and ``--labels N`` runs that resume bit for bit."""

import functools
import json
import math
import os
import signal

import pytest
import torch
from _brute_force import joint_states, random_net, single_thread  # noqa: F401
from pyro.infer import Importance, Predictive
from pyro.infer.importance import vectorized_importance_weights

from pyro_dcim import objectives
from pyro_dcim.cli import fit
from pyro_dcim.inference.energy import ChainEnergy
from pyro_dcim.objectives import discriminative_loss, reweighted_wake_sleep_loss
from pyro_dcim.semi_supervised import UNLABELLED, mixed_particles
from pyro_dcim.training import ConfigError, TrainConfig, TrainingInterrupted, train
from pyro_dcim.training.batches import epoch_order, epoch_permutation, select_labels, shard_indices
from pyro_dcim.training.checkpoint import load_checkpoint


def _quiet(*_):
    pass


def test_label_selection_is_balanced_deterministic_and_seeded():
    y = torch.randint(0, 10, (3000,), generator=torch.Generator().manual_seed(0))
    y[:600] = 3                                   # unbalanced classes leave the selection balanced
    for n in (10, 100, 105):
        idx = select_labels(y, n, seed=1)
        assert torch.equal(idx, select_labels(y, n, seed=1))
        assert len(set(idx.tolist())) == n and torch.equal(idx, idx.sort().values)
        counts = torch.bincount(y[idx], minlength=10)
        assert counts.min() == n // 10 and counts.max() <= n // 10 + 1
    assert not torch.equal(select_labels(y, 100, seed=1), select_labels(y, 100, seed=2))
    # the classes that get the 5 labels left over by 105 = 10 x 10 + 5 are drawn by the seed too
    assert len({tuple(torch.bincount(y[select_labels(y, 105, seed=s)]).tolist()) for s in range(6)}) > 1
    with pytest.raises(ConfigError, match="at least 10, or 0 for unsupervised"):
        select_labels(y, 5, seed=0)
    assert select_labels(y, 0, seed=0).numel() == 0
    with pytest.raises(ConfigError, match="class 0"):
        select_labels(y[y != 0], 20, seed=0, num_classes=10)


def test_epoch_order_keeps_the_labelled_share_in_every_batch():
    n, batch = 1000, 50
    labelled = torch.zeros(n, dtype=torch.bool)
    labelled[select_labels(torch.arange(n) % 10, 20, seed=0)] = True
    assert torch.equal(epoch_order(n, 3, 1, labelled, None, batch), epoch_permutation(n, 3, 1))
    assert torch.equal(epoch_order(n, 3, 1, labelled, 0.01, batch), epoch_permutation(n, 3, 1))  # 2% already
    order = epoch_order(n, 3, 1, labelled, 0.2, batch)
    assert torch.equal(order, epoch_order(n, 3, 1, labelled, 0.2, batch))
    assert not torch.equal(order, epoch_order(n, 3, 2, labelled, 0.2, batch))
    unlabelled = order[~labelled[order]]
    assert sorted(unlabelled.tolist()) == (~labelled).nonzero().squeeze(1).tolist()   # each one once
    assert all(int(labelled[b].sum()) == 10 for b in order.split(batch))
    # two ranks of 50 lay the order out in steps of 100, as one process of 100 does: their batches of a
    # step together are that process's batch, and each holds its half of the labelled images
    step_order = epoch_order(n, 3, 1, labelled, 0.2, 2 * batch)
    shards = [shard_indices(step_order, r, 2) for r in range(2)]
    for step in range(3):
        mine = [s[step * batch:(step + 1) * batch] for s in shards]
        union = sorted(torch.cat(mine).tolist())
        assert union == sorted(step_order[step * 2 * batch:(step + 1) * 2 * batch].tolist())
        assert [int(labelled[m].sum()) for m in mine] == [10, 10]


def _exact(net, x0):
    """``log p(x^0, h | c)`` for every joint hidden state ``h`` and class, ``(H, batch, C)``, from the chain's
    own terms (not the code under test), and from it ``log p(x^0)`` and ``p(c | x^0)`` (uniform ``p(c)``)."""
    bits = {k: b.flatten(1)[:, None].expand(-1, len(x0), -1) for k, b in joint_states(net).items()}
    per_class = []
    for c in range(net.num_classes):
        t = ChainEnergy(net, x0, torch.full((len(x0),), c)).terms(bits, ("reverse", "reverse_end"))
        per_class.append(t["reverse"] + t["reverse_end"])
    log_joint = torch.stack(per_class, -1) - math.log(net.num_classes)
    return log_joint.logsumexp((0, 2)), torch.softmax(log_joint.logsumexp(0), -1), log_joint


@pytest.fixture
def tiny():
    net = random_net([4, 3, 2], (6,), seed=2, scale=1.0)
    x0 = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    return net, x0


def test_unlabelled_bound_against_exact_enumeration(tiny, single_thread):  # noqa: F811
    """``log (1/K) Σ_s w_s`` is a stochastic lower bound on log p(x^0), for the class summed and sampled; the
    weights are unbiased for p(x^0); summing is the Rao-Blackwellised sampling, so its bound is the tighter."""
    net, x0 = tiny
    exact, posterior, _ = _exact(net, x0)
    reps, k, g = 3000, 3, torch.Generator().manual_seed(0)
    unlabelled = torch.full((len(x0) * reps,), UNLABELLED)
    means = {}
    with torch.no_grad():
        for estimate in ("sum", "sample"):
            log_w = mixed_particles(net, x0.repeat(reps, 1), unlabelled, k, estimate, g).log_w     # (K, reps * B)
            bound = (log_w.logsumexp(0) - math.log(k)).view(reps, -1)
            mean, se = bound.mean(0), bound.std(0) / math.sqrt(reps)
            assert (mean <= exact + 3 * se).all() and (mean < exact - 0.01).any(), estimate
            w = (log_w.view(k * reps, -1) - exact).exp()                                          # w / p(x^0)
            assert ((w.mean(0) - 1).abs() <= 4 * w.std(0) / math.sqrt(len(w))).all(), estimate
            means[estimate] = (mean, se)
            many = mixed_particles(net, x0, unlabelled[:len(x0)], 40000, estimate, g)
            assert torch.allclose(many.posterior, posterior, atol=0.02), estimate
            assert torch.allclose(many.log_w.logsumexp(0) - math.log(40000), exact, atol=0.02), estimate
    (s, s_se), (d, d_se) = means["sum"], means["sample"]
    assert (s >= d - 3 * torch.sqrt(s_se ** 2 + d_se ** 2)).all() and (s - d).mean() > 0
    # the objective reports that bound: -log (1/K) Σ w, batch mean
    draws = dict(particles=k, reduction="sum", unlabelled="sum")
    parts = reweighted_wake_sleep_loss(net, x0, unlabelled[:4], generator=torch.Generator().manual_seed(5), **draws)
    again = mixed_particles(net, x0, unlabelled[:4], k, "sum", torch.Generator().manual_seed(5))
    assert torch.allclose(parts.reverse_nll_sum, -(again.log_w.logsumexp(0) - math.log(k)).mean())


def _grad(net, loss):
    net.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                      for p in net.parameters()])


def test_unlabelled_wake_theta_gradient_matches_the_exact_gradient(tiny, single_thread):  # noqa: F811
    """``Σ_s w̃_s ∇ log p(x^0, h_s)`` (class summed) is ``∇ log p(x^0)`` up to the O(1/K) self-normalisation bias."""
    net, x0 = tiny
    exact = _grad(net, _exact(net, x0)[0].sum())
    unlabelled, g = torch.full((len(x0),), UNLABELLED), torch.Generator().manual_seed(3)
    draws = []
    for _ in range(40):
        m = mixed_particles(net, x0, unlabelled, 2000, "sum", g)
        draws.append(_grad(net, (torch.softmax(m.log_w, 0) * m.log_p).sum()))
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert ((mean - exact).abs() <= 3 * se + 1e-3).float().mean() >= 0.95
    assert exact.abs().max() > 0.1


def test_labelled_rows_of_a_mixed_batch_train_as_before(tiny, single_thread):  # noqa: F811
    """All rows labelled, the mixed path draws the same particles and gives the same loss and gradient; an
    unlabelled row's class term is the cross-entropy against the posterior, scaled by its weight."""
    net, x0 = tiny
    y = torch.tensor([0, 1, 1, 0])

    def loss(labels, **kw):
        return reweighted_wake_sleep_loss(net, x0, labels, particles=4, reduction="sum",
                                          generator=torch.Generator().manual_seed(7), **kw)

    old, new = loss(y), loss(y, unlabelled="sum")
    assert torch.allclose(old.total, new.total) and torch.allclose(old.reverse_nll_sum, new.reverse_nll_sum)
    assert torch.allclose(_grad(net, loss(y).total), _grad(net, loss(y, unlabelled="sum").total))
    part = torch.tensor([0, UNLABELLED, 1, UNLABELLED])
    totals = [loss(part, unlabelled="sum", unlabelled_class_weight=w).total for w in (0.0, 1.0, 2.0)]
    assert torch.allclose(totals[2] - totals[0], 2 * (totals[1] - totals[0]))
    assert (totals[1] - totals[0]) > 0
    # the discriminative baseline: the labelled rows' cross-entropy, summed over the batch size
    d = discriminative_loss(net, x0, part, unlabelled="sum", report_reverse=False)
    ce = torch.nn.functional.cross_entropy(net(x0)[[0, 2]], y[[0, 2]], reduction="sum") / 4
    assert torch.allclose(d.total, ce)


def test_the_class_threshold_keeps_only_the_rows_the_generator_is_sure_of(tiny, single_thread):  # noqa: F811
    """``unlabelled_class_threshold``: an unlabelled row's class term counts only where ``max_c π_c`` reaches it."""
    net, x0 = tiny
    part = torch.tensor([0, UNLABELLED, UNLABELLED, UNLABELLED])

    def total(**kw):
        return reweighted_wake_sleep_loss(net, x0, part, particles=4, reduction="sum", unlabelled="sum",
                                          generator=torch.Generator().manual_seed(7), **kw).total

    posterior = mixed_particles(net, x0, part, 4, "sum", torch.Generator().manual_seed(7)).posterior
    top = posterior[1:].max(-1).values
    cut = float(top.median())                                   # some unlabelled rows above it, some below
    assert (top >= cut).any() and (top < cut).any()
    logq = torch.log_softmax(net(x0), -1)
    per_row = -(posterior * logq).sum(-1).detach()
    sure = torch.cat([torch.tensor([False]), top >= cut])
    base = total(unlabelled_class_weight=0.0)
    assert torch.allclose(total(unlabelled_class_weight=1.0, unlabelled_class_threshold=0.0),
                          base + per_row[1:].sum() / 4)
    assert torch.allclose(total(unlabelled_class_weight=1.0, unlabelled_class_threshold=cut),
                          base + per_row[sure].sum() / 4)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        total(unlabelled_class_weight=1.0, unlabelled_class_threshold=1.0)


def test_pyro_model_observes_labelled_rows_and_infers_the_others(tiny, single_thread):  # noqa: F811
    """``generative_model`` + ``forward_chain_guide`` (obs_mask): Pyro's importance sampling gives
    log p(x^0, y) of a labelled row plus log p(x^0) of an unlabelled one, the labelled class unchanged and the
    unlabelled class's posterior; Predictive and Importance run on the same pair."""
    net, x0 = tiny
    x0 = x0[:2]
    part = torch.tensor([1, UNLABELLED])
    _, posterior, log_joint = _exact(net, x0)
    per_image = log_joint.logsumexp(0)                                        # (B, C): log p(x^0, c)
    truth = (per_image[0, 1] + per_image[1].logsumexp(0)).detach()
    with torch.no_grad():
        log_w, model_trace, _ = vectorized_importance_weights(net.generative_model, net.forward_chain_guide, x0,
                                                              part, num_samples=100000, max_plate_nesting=1)
    w = torch.softmax(log_w, 0)
    estimate = log_w.logsumexp(0) - math.log(len(log_w))
    assert abs(float(estimate - truth)) < 5 * math.sqrt(float((w ** 2).sum()))   # delta-method scale of the error
    classes = model_trace.nodes["class"]["value"]
    assert (classes[:, 0] == 1).all()
    inferred = torch.stack([(w * (classes[:, 1] == c)).sum() for c in range(net.num_classes)])
    assert torch.allclose(inferred, posterior[1], atol=0.03)
    imp = Importance(net.generative_model, guide=net.forward_chain_guide, num_samples=30).run(x0, part)
    assert all(tr.nodes["class"]["value"][0] == 1 for tr in imp.exec_traces)
    pred = Predictive(net.generative_model, guide=net.forward_chain_guide, num_samples=7)(x0, part)
    assert pred["class"].shape == (7, 2) and (pred["class"][:, 0] == 1).all()
    assert "class_unobserved" in pred and "x1" in pred


SEMI = dict(arch="32-16-10", objective="generative", labels=20, labelled_share=0.2, train_size=600, val_size=200,
            epochs=2, batch_size=25, particles=2, binarize="dynamic", augment="shift", lr=1e-2, figures=False)


def test_labels_run_resumes_bit_for_bit_and_records_its_labels(tmp_path, monkeypatch, single_thread):  # noqa: F811
    # 20 labelled + 580 unlabelled: 29 batches of 5 labelled and 20 unlabelled images per epoch
    full = train(TrainConfig(**SEMI, out=str(tmp_path / "full")), log=_quiet)
    part = TrainConfig(**SEMI, out=str(tmp_path / "part"))
    calls = {"n": 0}
    real = objectives.OBJECTIVES["generative"]

    @functools.wraps(real)
    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 29 + 1 + 10:  # 29 steps, 1 validation batch, 10 steps of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setitem(objectives.OBJECTIVES, "generative", interrupted)
        with pytest.raises(TrainingInterrupted):
            train(part, log=_quiet)
    assert load_checkpoint(tmp_path / "part")["position"] == {"epoch": 1, "step": 10}
    resumed = train(part, resume=True, log=_quiet)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in full.history]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history] == strip
    a, b = (load_checkpoint(tmp_path / name)["model"]["state_dict"] for name in ("full", "part"))
    assert all(torch.equal(a[name], b[name]) for name in a)
    config = json.loads((tmp_path / "full" / "config.json").read_text())["config"]
    assert config["labels"] == 20 and config["labelled_share"] == 0.2 and config["unlabelled_class"] == "sum"
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["n_labelled"] == 20 and summary["labelled_per_class"] == [2] * 10


def test_labels_on_the_command_line(tmp_path, capsys):
    def cfg(*argv):
        return fit.config_from_args(fit.build_parser().parse_args(list(argv)))[0]

    assert cfg().labels is None and cfg("--labels", "all").labels is None and cfg("--labels", "100").labels == 100
    common = ["--arch", "16-10", "--train-size", "200", "--val-size", "50", "--epochs", "1", "--no-figures"]
    for argv, words in [(["--labels", "5", "--objective", "generative"], "0 for unsupervised"),
                        (["--labels", "0", "--objective", "discriminative"], "nothing to learn from"),
                        (["--labels", "20", "--objective", "generative", "--classes", "12"], "--labels 0"),
                        (["--labels", "20", "--objective", "bidirectional"], "can learn without labels"),
                        (["--labels", "20", "--labelled-share", "1"], "must be < 1"),
                        (["--labels", "5000", "--objective", "generative"], "more than the 200")]:
        assert fit.main([*common, *argv, "--out", str(tmp_path / "r")]) == 2, argv
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    # the supervised-only baseline is one flag away
    assert fit.main([*common, "--labels", "20", "--objective", "discriminative", "--out", str(tmp_path / "d")]) == 0


def test_two_gloo_ranks_with_labels_equal_one_process_on_the_combined_batch(tmp_path):
    """The labelled share survives sharding: 2 ranks of 16 equal one process of 32 (the discriminative
    baseline, whose loss has no random draws), the unlabelled rows left out in both."""
    from test_distributed import _fit

    args = ["--arch", "(3,2,4) 12 10", "--train-size", "256", "--val-size", "64", "--epochs", "2", "--augment",
            "none", "--device", "cpu", "--no-figures", "--objective", "discriminative", "--lr", "0.01",
            "--labels", "20", "--labelled-share", "0.25"]
    _fit([*args, "--batch-size", "16", "--out", str(tmp_path / "ddp")], nproc=2)
    _fit([*args, "--batch-size", "32", "--out", str(tmp_path / "one")])
    ddp, one = (load_checkpoint(tmp_path / name)["model"]["state_dict"] for name in ("ddp", "one"))
    for name, value in one.items():
        assert torch.allclose(ddp[name], value, atol=1e-5), name
