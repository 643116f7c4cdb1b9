"""Every ``seed`` argument of cas_edu decides the randomness it names: the same seed gives the same result whatever
the caller's global RNG state, another seed a different one. Each case runs on inputs where the randomness shows: a
random start at ε > 0, on images whose class a random start can change.

Seeds whose test lives with its module (each fails when the seed is ignored), not repeated here:
    data.load(seed=)                          test_data.py::test_digits_split_deterministic_and_seeded
    TrainConfig.seed, training.train          test_training.py::test_same_seed_gives_identical_weights_and_different_seed_does_not
                                              (end to end; training.set_up here: each of its two uses of the seed)
    python -m cas_edu train --seed            test_run_folder.py::test_overwrite_deletes_the_old_run_and_its_reports_then_trains
    evaluation.balanced_indices(seed=)        test_evaluation.py::test_balanced_indices
    evaluation.attack_seed(seed, ...)         test_evaluation.py::test_each_attack_is_seeded_on_its_own
    evaluation.evaluate(seed=), white-box     test_evaluation.py::test_the_seed_sets_the_random_start_and_leaves_the_global_rng_alone
    runtime.seeded(seed)                      test_runtime.py::test_seeded_same_seed_gives_the_same_draws,
                                              test_seeded_different_seed_gives_different_draws
    activations.compare_activations(seed=)    test_activations.py::test_compare_activations_follows_its_seed_and_leaves_the_global_rng_alone
    activations.channel_data(seed=)           test_activations.py::test_channel_data_follows_its_seed_and_leaves_the_global_rng_alone
    widgets.epsilon_view(seed=)               test_widgets.py::test_epsilon_view_is_seeded
    widgets.craft_adversarial(seed=)          test_widgets.py::test_craft_adversarial_follows_its_seed_and_leaves_the_global_rng_alone
    widgets.EpsilonExplorer(seed=)            test_widgets.py::test_epsilon_explorer_follows_its_seed
    widgets.activation_view(seed=),
    widgets.ActivationExplorer(seed=)         test_widgets.py::test_activation_view_and_explorer_follow_their_seed
The seeds of the check functions (validation.check_seed) are range checks: test_validation.py::test_every_seed_lies_in_0_to_2_63_minus_1.
"""
from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from helpers import save_untrained_run, subset, tiny_config

from cas_edu import activations, attacks, cas, cli, evaluation, exercises, pipeline, training
from cas_edu.checkpoint import read_checkpoint
from cas_edu.presets import Profile
from cas_edu.runtime import seed_everything

EPS = 0.1

pytestmark = pytest.mark.usefixtures("one_thread")


class CoinFlipModel(nn.Module):
    """Class 1 when an image's mean pixel exceeds 0.5, else class 0, with a zero input gradient: no attack step
    moves an image, so for images whose mean lies just off 0.5, whether an attack changes the class is decided by
    its random start (or random search) alone -- about one image in two, differently for every seed."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # gives the model a device and a dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        above = (x.flatten(1).mean(1) > 0.5).float()
        logits = torch.full((len(x), 10), -10.0, device=x.device)
        logits[:, 0], logits[:, 1] = 10 * (1 - above), 10 * above
        return self.scale * logits + 0.0 * x.flatten(1)[:, :1]


@pytest.fixture(scope="module")
def coin():
    """The coin-flip model and 64 images near its boundary, labelled with its own (clean) predictions."""
    model = CoinFlipModel().eval()
    x = 0.5 + 0.02 * (torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5)
    with torch.no_grad():
        y = model(x).argmax(1)
    assert 0 < int(y.sum()) < 64, "both classes present"
    return model, x, y


def _under_two_global_states(call):
    """``call(seed)`` for seed 1 after two different global seeds, and for seeds 2 and 3."""
    results = []
    for global_seed, seed in ((0, 1), (99, 1), (99, 2), (99, 3)):
        torch.manual_seed(global_seed)
        results.append(call(seed))
    return results


def _assert_seeded(results, equal=torch.equal):
    same_a, same_b, other_2, other_3 = results
    assert equal(same_a, same_b), "the same seed must give the same result whatever the global RNG state"
    assert not (equal(same_b, other_2) and equal(same_b, other_3)), "another seed must give another result"


# --------------------------------------------------------------------------- attacks and evaluation


def test_autoattack_and_its_accuracy_follow_their_seed(coin):
    model, x, y = coin
    x, y = x[:8], y[:8]
    x_adv = _under_two_global_states(lambda s: attacks.autoattack(model, x, y, EPS, attacks=["apgd-ce"], seed=s))
    _assert_seeded(x_adv)
    with torch.no_grad():
        survived = {seed: model(a).argmax(1) == y for a, seed in zip(x_adv[1:3], (1, 2))}
    fraction = {seed: s.float().mean().item() for seed, s in survived.items()}
    assert fraction[1] != fraction[2], "the seeds must differ in how many images they change"
    for seed in (1, 2):
        assert torch.equal(evaluation.autoattack_correct(model, x, y, EPS, ["apgd-ce"], seed=seed), survived[seed])
        assert evaluation.autoattack_accuracy(model, x, y, EPS, ["apgd-ce"], seed=seed) == fraction[seed]


@pytest.mark.parametrize("attack", ["pgd20", "square"])
def test_accuracy_and_craft_follow_their_seed(coin, attack):
    """A white-box attack's random start (the forked, seeded RNG) and a whole-set attack's own seed."""
    model, x, y = coin
    x, y = x[:16], y[:16]
    options = {"square_queries": 1} if attack == "square" else {}
    _assert_seeded(_under_two_global_states(
        lambda s: evaluation.accuracy(model, x, y, attack, eps=EPS, seed=s, **options)))
    _assert_seeded(_under_two_global_states(
        lambda s: evaluation.craft(model, x, y, attack, eps=EPS, seed=s, **options)))


def test_evaluate_seeds_the_costly_subset(coin):
    model, x, y = coin
    reports = _under_two_global_states(
        lambda s: evaluation.evaluate(model, x, y, EPS, attacks=("square",), subset_n=16, square_queries=1, seed=s))
    for report, seed in zip(reports, (1, 1, 2, 3)):
        assert report.seed == seed
        assert torch.equal(report.examples["square"], evaluation.balanced_indices(y, 16, seed))
    _assert_seeded([r.examples["square"] for r in reports])


def test_evaluate_seeds_the_black_box_attack(coin):
    """Square's random search on the same 16 examples for every seed: only the attack's own seed can differ."""
    model, x, y = coin
    reports = _under_two_global_states(
        lambda s: evaluation.evaluate(model, x[:16], y[:16], EPS, attacks=("square",), square_queries=1, seed=s))
    _assert_seeded([r.correct["square"]["ce"] for r in reports])


def test_robustness_curve_seeds_the_pgd_random_start(coin):
    model, x, y = coin
    curves = _under_two_global_states(
        lambda s: evaluation.robustness_curve(model, x, y, [EPS], steps=1, seed=s, progress=False))
    assert all(c["fgsm"] == [c["natural"]] for c in curves), "no gradient: FGSM cannot move an image"
    _assert_seeded([c["pgd"] for c in curves], equal=lambda a, b: a == b)


def test_plots_robustness_curve_is_the_seeded_one():
    plots = pytest.importorskip("cas_edu.plots")
    assert plots.robustness_curve is evaluation.robustness_curve


# --------------------------------------------------------------------------- training


def test_training_set_up_draws_the_initial_weights_and_the_data_order_from_the_seed(digits):
    """The end-to-end test (test_training.py) also passes when only one of the two follows the seed."""
    small = subset(digits, 64, 8)

    def set_up(seed):
        run = training.set_up(tiny_config("standard", seed=seed), small)
        weights = torch.cat([p.detach().flatten() for p in run.model.parameters()])
        return torch.cat([weights, torch.randperm(64, generator=run.generator).float()])

    results = _under_two_global_states(set_up)
    _assert_seeded(results)
    n_weights = sum(p.numel() for p in training.set_up(tiny_config("standard"), small).model.parameters())
    _assert_seeded([r[:n_weights] for r in results])
    _assert_seeded([r[n_weights:] for r in results])


# --------------------------------------------------------------------------- notebook 04's suite


def test_balanced_subset_follows_its_seed(digits):
    x, y = digits.test.x[:100], digits.test.y[:100]
    subsets = _under_two_global_states(lambda s: pipeline.balanced_subset(x, y, 20, seed=s))
    for (xs, ys), seed in zip(subsets, (1, 1, 2, 3)):
        index = evaluation.balanced_indices(y, 20, seed)
        assert torch.equal(xs, x[index]) and torch.equal(ys, y[index])
    _assert_seeded([xs for xs, _ in subsets])


def test_suite_configs_carry_the_seed():
    for seed in (0, 7):
        configs = pipeline.suite_configs("cpu", seed=seed)
        assert configs and {c.seed for c in configs.values()} == {seed}


def test_run_suite_trains_every_run_with_its_seed(digits, tmp_path):
    profile = Profile(name="seeds", dataset="digits", model="small_cnn", preset="fast", epochs=1, attack_steps=1,
                      n_eval=16, attacks=("natural",), square_queries=10, methods=("standard",))
    small = subset(digits, 64, 8)
    suites = {seed: pipeline.run_suite(profile, tmp_path / str(seed), dataset=small, seed=seed, device="cpu",
                                       progress=False) for seed in (7, 8)}
    for seed, suite in suites.items():
        for name, folder in suite.run_dirs.items():
            assert read_checkpoint(folder / "checkpoint.pt")["config"]["seed"] == seed, name
    for name in suites[7].models:
        a, b = suites[7].models[name].state_dict(), suites[8].models[name].state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point()), name


def test_evaluate_suite_passes_its_seed_to_every_evaluation(coin):
    model, x, y = coin
    reports = _under_two_global_states(lambda s: pipeline.evaluate_suite(
        {"coin": model}, x=x, y=y, eps=EPS, attacks=("natural", "pgd20"), seed=s, save=False, progress=False)["coin"])
    assert [r.seed for r in reports] == [1, 1, 2, 3]
    _assert_seeded([r.correct["pgd20"]["ce"] for r in reports])


# --------------------------------------------------------------------------- exercises, runtime, command line


def _recording(fn, inputs: list):
    def recorded(*args):
        inputs.append([a.detach().clone() for a in args if isinstance(a, torch.Tensor)])
        return fn(*args)
    return recorded


CHECKERS = {
    "check_fgsm": lambda m, x, y, e: attacks.fgsm(m, x, y, e, random_start=False),
    "check_pgd_projection": attacks.project,
    "check_activation_counts": activations.activation_counts,
    "check_channel_magnitudes": activations.channel_magnitudes,
    "check_cas_mask": lambda m, f, y: m(f, y),
    "check_cas_loss": cas.cas_loss,
}


def _same_inputs(a: list, b: list) -> bool:
    return len(a) == len(b) and all(len(u) == len(v) and all(torch.equal(s, t) for s, t in zip(u, v))
                                    for u, v in zip(a, b))


@pytest.mark.parametrize("name", list(CHECKERS))
def test_checkers_draw_their_inputs_from_the_seed(name, capsys):
    checker = getattr(exercises, name)

    def inputs(seed):
        seen: list = []
        assert checker(_recording(CHECKERS[name], seen), seed=seed) is True
        return seen

    _assert_seeded(_under_two_global_states(inputs), equal=_same_inputs)
    assert not _same_inputs(inputs(None), inputs(None)), "without a seed every call draws fresh inputs"
    capsys.readouterr()


def test_seed_everything_seeds_python_and_torch():
    def draws(seed):
        seed_everything(seed)
        return torch.rand(4), random.random()

    first, again, other = draws(3), draws(3), draws(4)
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert not torch.equal(first[0], other[0]) and first[1] != other[1]


def test_cli_evaluate_seed_reaches_the_report(tmp_path, capsys):
    run = save_untrained_run(tmp_path / "run", device="cpu")
    seeds = []
    for seed in ("5", "6"):
        capsys.readouterr()
        assert cli.main(["evaluate", str(run), "--attacks", "natural,pgd20", "--n", "8", "--seed", seed,
                         "--device", "cpu", "--json", "--output", str(tmp_path / f"{seed}.json")]) == 0
        seeds.append(json.loads(capsys.readouterr().out)["seed"])
    assert seeds == [5, 6]


def test_cli_activations_seed_sets_the_pgd_random_start(tmp_path, capsys):
    run = save_untrained_run(tmp_path / "run", device="cpu")

    def magnitudes(seed):
        capsys.readouterr()
        assert cli.main(["activations", str(run), "--n", "20", "--seed", str(seed), "--device", "cpu", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["adversarial_magnitudes"]

    _assert_seeded(_under_two_global_states(magnitudes), equal=lambda a, b: a == b)


def test_autoattack_leaves_the_callers_random_state_alone(coin):
    model, x, y = coin
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    attacks.autoattack(model, x[:8], y[:8], EPS, attacks=["apgd-ce"], seed=7)
    assert torch.equal(torch.rand(4), expected), "pyautoattack's own seeding leaked into the global RNG"
