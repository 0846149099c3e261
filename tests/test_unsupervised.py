"""``fit --labels 0``: unsupervised generative learning, the class layer a mixture of ``--classes`` components."""

import json
import math

import torch

from pyro_dcim.training import TrainConfig, evaluate, load_splits, train
from pyro_dcim.training.batches import epoch_order, epoch_permutation
from pyro_dcim.training.checkpoint import load_model
from pyro_dcim.training.metrics import cluster_accuracy

UNSUP = dict(arch="32-16-10", objective="generative", labels=0, train_size=500, val_size=200, epochs=2,
             batch_size=25, particles=2, binarize="dynamic", augment="none", lr=1e-2, figures=False)


def _quiet(*_):
    pass


def test_cluster_accuracy_is_invariant_to_renaming_the_components():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    assert cluster_accuracy(labels, labels) == 1.0
    renamed = torch.tensor([5, 1, 2, 0, 3, 4])[labels]          # any injective renaming, even to 6 components
    assert cluster_accuracy(renamed, labels) == 1.0
    # one component for two classes: only one of them can be matched
    merged = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2])
    assert cluster_accuracy(merged, labels) == 6 / 8
    # the map is one-to-one: two components each mostly class 0 cannot both count as class 0
    split = torch.tensor([0, 1, 2, 2, 3, 3, 3, 4])
    assert cluster_accuracy(split, torch.zeros(8, dtype=torch.long)) == 3 / 8     # the largest one, component 3
    assert math.isnan(cluster_accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))


def test_without_labels_every_image_is_unlabelled_once_per_epoch():
    none = torch.zeros(300, dtype=torch.bool)
    assert torch.equal(epoch_order(300, 0, 2, none, 0.1, 25), epoch_permutation(300, 0, 2))


def test_an_unsupervised_run_trains_the_mixture_and_reports_cluster_accuracy(tmp_path):
    result = train(TrainConfig(**UNSUP, out=str(tmp_path / "run")), log=_quiet)
    cfg = TrainConfig(**UNSUP)
    assert cfg.unlabelled_class_weight == 1.0          # the classifier's only teacher is the generator
    assert all(math.isnan(row["train_acc"]) for row in result.history)
    assert 0.1 <= result.history[-1]["val_acc"] <= 1.0
    # the run's validation accuracy is the cluster accuracy of the forward model's components
    splits = load_splits(cfg, torch.device("cpu"))
    net = load_model(result.run_dir)
    with torch.no_grad():
        predicted = net(splits.val_x).argmax(-1)
    assert evaluate(net, cfg, splits.val_x, splits.val_y).acc == cluster_accuracy(predicted, splits.val_y)
    # evaluation scores -log p(x0) with the class latent, whatever the hidden labels say
    shuffled = splits.val_y[torch.randperm(len(splits.val_y), generator=torch.Generator().manual_seed(0))]
    a, b = evaluate(net, cfg, splits.val_x, splits.val_y), evaluate(net, cfg, splits.val_x, shuffled)
    assert a.reverse_nll_sum == b.reverse_nll_sum
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_labelled"] == 0 and summary["labelled_per_class"] == []
    # the class layer learned: q(x^n | x^0) moved off its initial state
    start = train(TrainConfig(**dict(UNSUP, epochs=0, out=str(tmp_path / "init"))), log=_quiet)
    assert not torch.equal(start.net.layers[-1].weight, net.layers[-1].weight)


def test_classes_sets_the_number_of_components(tmp_path):
    result = train(TrainConfig(**dict(UNSUP, classes=4, epochs=1, out=str(tmp_path / "run"))), log=_quiet)
    assert result.net.num_classes == 4
    assert load_model(result.run_dir).num_classes == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["classes"] == 4


def test_the_likelihood_of_an_unsupervised_run_sums_its_components_uniformly(tmp_path, capsys):
    from pyro_dcim.cli import likelihood

    train(TrainConfig(**dict(UNSUP, epochs=1, out=str(tmp_path / "run"))), log=_quiet)
    argv = [str(tmp_path / "run"), "--images", "4", "--particles", "8", "--no-progress", "--threads", "1"]
    assert likelihood.main([*argv, "--class-prior", "train", "--out", str(tmp_path / "a")]) == 2
    assert "unsupervised" in capsys.readouterr().err
    assert likelihood.main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "means nothing; read -log p(x0)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "b" / "summary-is-forward.json").read_text())
    assert summary["class_prior"] == "uniform" and summary["unsupervised"] is True
