"""Tests for cas_edu.observations: the definitions (active, quiet, woken, saturation) on hand-made activations,
the stratified bootstrap, the ±ε sign-noise null, and the measurement on a tiny model."""
from __future__ import annotations

import math

import pytest
import torch

from cas_edu import activations as A
from cas_edu import observations as O
from helpers import tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


def _class_acts(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# One class, four channels. Channel 0 is each image's largest (1.0), so "active" means > 0.01 at 1 %.
#   ch1: active in every natural image            -> not quiet, so never woken
#   ch2: quiet for natural images, adversarial on -> woken
#   ch3: quiet for natural images, stays quiet    -> not woken
NATURAL = _class_acts([[1.0, 0.5, 0.0, 0.0]] * 5)
ADVERSARIAL = _class_acts([[1.0, 0.9, 0.5, 0.0]] * 5)


def _paired_sample(n_per_class: int = 12, classes: int = 3, channels: int = 16, seed: int = 0):
    """Random non-negative natural activations (dense in the first half of the channels, zero in the rest) and
    labels, row n of class n % classes."""
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * classes
    natural = torch.zeros(n, channels)
    natural[:, : channels // 2] = torch.rand(n, channels // 2, generator=g) + 0.1
    return natural, torch.arange(n) % classes, g


# --------------------------------------------------------------------------- quiet and woken channels


def test_woken_is_quiet_for_natural_and_active_for_adversarial():
    assert O.quiet_channels(NATURAL).tolist() == [False, False, True, True]
    assert O.woken_channels(NATURAL, ADVERSARIAL).tolist() == [False, False, True, False]


def test_woken_per_class_counts_each_class_on_its_own_images():
    # ch1 is quiet for class 7's natural images but active in class 3's (40 % of all images: not quiet when
    # pooled). Class 7's attack activates ch1 and ch2: both woken; class 3's activates ch1 and ch3: only ch3 woken.
    nat7, adv7 = _class_acts([[1.0, 0.0, 0.0, 0.0]] * 3), _class_acts([[1.0, 0.5, 0.5, 0.0]] * 3)
    nat3, adv3 = _class_acts([[1.0, 0.5, 0.0, 0.0]] * 2), _class_acts([[1.0, 0.5, 0.0, 0.5]] * 2)
    natural = torch.cat([nat7[:1], nat3[:1], nat7[1:], nat3[1:]])
    adversarial = torch.cat([adv7[:1], adv3[:1], adv7[1:], adv3[1:]])
    y = torch.tensor([7, 3, 7, 7, 3])
    assert O.woken_per_class(natural, adversarial, y) == {3: 1, 7: 2}
    assert O.woken_channels(natural[y == 7], adversarial[y == 7]).tolist() == [False, True, True, False]
    assert O.woken_channels(natural[y == 3], adversarial[y == 3]).tolist() == [False, False, False, True]


def test_quiet_fraction_is_strict():
    # 5 natural images, ch1 active in exactly 1 of them: 20 % is not < 20 %, so ch1 is not quiet
    natural = _class_acts([[1.0, 0.5]] + [[1.0, 0.0]] * 4)
    assert O.quiet_channels(natural, quiet_fraction=0.2).tolist() == [False, False]
    assert O.quiet_channels(natural, quiet_fraction=0.21).tolist() == [False, True]


def test_woken_fraction_is_strict():
    natural = _class_acts([[1.0, 0.0]] * 4)
    half = _class_acts([[1.0, 0.5]] * 2 + [[1.0, 0.0]] * 2)
    three_quarters = _class_acts([[1.0, 0.5]] * 3 + [[1.0, 0.0]])
    assert not O.woken_channels(natural, half, woken_fraction=0.5)[1]
    assert O.woken_channels(natural, three_quarters, woken_fraction=0.5)[1]
    assert O.woken_channels(natural, half, woken_fraction=0.49)[1]


def test_threshold_is_relative_to_each_images_max():
    # ch1 = 0.015 is above 1 % of an image whose max is 1, but not of one whose max is 2
    natural = _class_acts([[2.0, 0.015]] * 3)
    adversarial = _class_acts([[1.0, 0.015]] * 3)
    assert O.quiet_channels(natural).tolist() == [False, True]
    assert O.woken_channels(natural, adversarial).tolist() == [False, True]
    # the same values at a 2 % threshold: not active in the adversarial images either
    assert O.woken_channels(natural, adversarial, threshold=0.02).tolist() == [False, False]


# --------------------------------------------------------------------------- saturation


def test_saturated_layer_is_reported_saturated_and_a_sparse_one_not():
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(20, 8, generator=g) + 0.5          # every channel > 1 % of the image max
    sparse = torch.zeros(20, 8)
    sparse[:, 0] = 1.0                                     # one channel of eight
    y = torch.arange(20) % 2
    assert A.saturation(dense) == pytest.approx(1.0)
    assert A.is_saturated(dense) and not A.is_saturated(sparse)
    assert A.saturation(sparse) == pytest.approx(1 / 8)
    dense_row = O.observe(dense, dense, dense, y, thresholds=(0.01,), n_resamples=20).rows[0]
    sparse_row = O.observe(sparse, sparse, sparse, y, thresholds=(0.01,), n_resamples=20).rows[0]
    assert dense_row.saturation.value == pytest.approx(1.0) and dense_row.saturated
    assert dense_row.quiet.value == 0                      # no channel can be quiet
    assert sparse_row.saturation.value == pytest.approx(1 / 8) and not sparse_row.saturated
    assert sparse_row.quiet.value == 7


# --------------------------------------------------------------------------- observe


def test_observe_point_estimates_equal_the_direct_computations():
    natural, y, g = _paired_sample()
    adversarial = natural * 1.3 + (torch.rand(natural.shape, generator=g) > 0.6) * 0.4
    noise = natural + (torch.rand(natural.shape, generator=g) > 0.9) * 0.4
    thresholds = (0.01, 0.2)
    obs = O.observe(natural, adversarial, noise, y, thresholds=thresholds, n_resamples=50, layer="L", eps=0.1)
    assert obs.magnitude_ratio.value == pytest.approx((adversarial.double().mean() / natural.double().mean()).item())
    assert (obs.n_examples, obs.n_classes, obs.channels, obs.layer, obs.eps) == (36, 3, 16, "L", 0.1)
    assert [r.threshold for r in obs.rows] == list(thresholds)
    for t in thresholds:
        row = obs.row(t)
        attack = O.woken_per_class(natural, adversarial, y, t)
        by_noise = O.woken_per_class(natural, noise, y, t)
        assert row.woken_by_class == attack
        assert row.woken_attack.value == pytest.approx(sum(attack.values()) / 3)
        assert row.woken_noise.value == pytest.approx(sum(by_noise.values()) / 3)
        assert row.woken_excess.value == pytest.approx(row.woken_attack.value - row.woken_noise.value)
        quiet = [int(O.quiet_channels(natural[y == k], t).sum()) for k in range(3)]
        assert row.quiet.value == pytest.approx(sum(quiet) / 3)
        assert row.saturation.value == pytest.approx(A.saturation(natural, t))
    for estimate, acts in ((obs.natural_entropy, natural), (obs.adversarial_entropy, adversarial)):
        entropies = []
        for k in range(3):
            p = acts[y == k].double().sum(dim=0)
            p = p / p.sum()
            entropies.append(float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(16)))
        assert estimate.value == pytest.approx(sum(entropies) / 3)
    assert sum(row.woken_attack.value for row in obs.rows) > 0  # the sample exercises the count


def test_observe_intervals_are_ordered_and_finite():
    natural, y, g = _paired_sample()
    adversarial = natural + (torch.rand(natural.shape, generator=g) > 0.5) * 0.4
    noise = natural + (torch.rand(natural.shape, generator=g) > 0.8) * 0.4
    obs = O.observe(natural, adversarial, noise, y, n_resamples=100)
    estimates = [obs.magnitude_ratio, obs.natural_entropy, obs.adversarial_entropy]
    for row in obs.rows:
        estimates += [row.saturation, row.quiet, row.woken_attack, row.woken_noise, row.woken_excess]
    for e in estimates:
        assert math.isfinite(e.low) and math.isfinite(e.high) and e.low <= e.high
    assert any(e.high > e.low for e in estimates)  # the resamples are not all the original sample


def test_observe_pairs_the_three_inputs_in_each_resample():
    # noise identical to the attack: the paired excess is 0 in every resample, although the attack's own count varies
    natural, y, g = _paired_sample()
    adversarial = natural + (torch.rand(natural.shape, generator=g) > 0.5) * 0.4
    row = O.observe(natural, adversarial, adversarial, y, thresholds=(0.01,), n_resamples=200).rows[0]
    assert row.woken_attack.high > row.woken_attack.low
    assert (row.woken_excess.value, row.woken_excess.low, row.woken_excess.high) == (0, 0, 0)


def test_observation_2_when_the_attack_wakes_many_channels_and_noise_none():
    natural, y, _ = _paired_sample()
    adversarial = natural.clone()
    adversarial[:, 8:] = 0.5                     # every quiet channel of every class woken
    obs = O.observe(natural, adversarial, natural.clone(), y, thresholds=(0.01,), n_resamples=100)
    row = obs.row(0.01)
    assert row.woken_by_class == {0: 8, 1: 8, 2: 8}
    assert row.woken_noise.value == 0 and row.woken_excess.value == 8
    assert row.woken_excess.low > 0 and row.woken_excess.excludes(0)
    assert obs.observation_2()
    same = O.observe(natural, natural.clone(), natural.clone(), y, thresholds=(0.01,), n_resamples=100)
    assert same.row(0.01).woken_attack.value == 0
    assert not same.observation_2()


def test_observation_1_when_adversarial_activations_are_larger():
    natural, y, _ = _paired_sample()
    larger = O.observe(natural, 1.5 * natural, natural, y, thresholds=(0.01,), n_resamples=100)
    assert larger.magnitude_ratio.value == pytest.approx(1.5)
    assert larger.magnitude_ratio.low == pytest.approx(1.5) and larger.observation_1
    equal = O.observe(natural, natural.clone(), natural, y, thresholds=(0.01,), n_resamples=100)
    assert equal.magnitude_ratio.value == pytest.approx(1.0) and not equal.observation_1


def test_observe_is_seeded():
    natural, y, g = _paired_sample()
    adversarial = natural + (torch.rand(natural.shape, generator=g) > 0.5) * 0.4
    same = [O.observe(natural, adversarial, natural, y, thresholds=(0.01,), n_resamples=50, seed=s) for s in (1, 1, 2)]
    assert same[0].magnitude_ratio == same[1].magnitude_ratio
    assert same[0].magnitude_ratio != same[2].magnitude_ratio


def test_row_refuses_an_unmeasured_threshold():
    natural, y, _ = _paired_sample()
    obs = O.observe(natural, natural, natural, y, thresholds=(0.01,), n_resamples=10)
    with pytest.raises(ValueError, match="not measured"):
        obs.row(0.1)


# --------------------------------------------------------------------------- stratified resamples, bootstrap


LABELS = torch.tensor([2, 0, 1, 0, 2, 2, 1])


def test_stratified_resamples_row_0_is_the_sample_grouped_by_class():
    resamples = O.stratified_resamples(LABELS, n_resamples=30, seed=0)
    assert resamples.shape == (31, 7) and resamples.dtype == torch.int64
    assert resamples[0].tolist() == [1, 3, 2, 6, 0, 4, 5]
    assert [(k, (s.start, s.stop)) for k, s in O.class_blocks(LABELS)] == [(0, (0, 2)), (1, (2, 4)), (2, (4, 7))]


def test_stratified_resamples_draw_within_each_class_and_keep_its_size():
    resamples = O.stratified_resamples(LABELS, n_resamples=200, seed=0)
    for k, columns in O.class_blocks(LABELS):
        block = resamples[:, columns]
        assert (LABELS[block] == k).all()
        # with replacement: some row repeats an image of the class (a class of 2 or 3 images, 200 rows)
        assert any(len(set(row.tolist())) < len(row) for row in block[1:])
        # and every image of the class is drawn somewhere
        assert set(block[1:].flatten().tolist()) == set(torch.nonzero(LABELS == k).flatten().tolist())


def test_stratified_resamples_are_seeded():
    first = O.stratified_resamples(LABELS, 20, seed=5)
    assert torch.equal(first, O.stratified_resamples(LABELS, 20, seed=5))
    assert not torch.equal(first, O.stratified_resamples(LABELS, 20, seed=6))


def test_bootstrap_percentile_interval_on_known_statistics():
    values = torch.arange(10, dtype=torch.float64)
    resamples = O.stratified_resamples(torch.zeros(10, dtype=torch.long), n_resamples=400, seed=0)

    def mean(index):
        return values[index].mean(dim=1)

    estimate = O.bootstrap(mean, resamples, level=0.9)
    spread = values[resamples[1:]].mean(dim=1)
    assert estimate.value == pytest.approx(4.5)
    assert estimate.low == pytest.approx(torch.quantile(spread, 0.05).item())
    assert estimate.high == pytest.approx(torch.quantile(spread, 0.95).item())
    narrower = O.bootstrap(mean, resamples, level=0.5)
    assert estimate.low < narrower.low <= narrower.high < estimate.high
    constant = O.bootstrap(lambda index: torch.full((index.shape[0],), 3.0), resamples)
    assert (constant.value, constant.low, constant.high) == (3.0, 3.0, 3.0)


def test_bootstrap_leaves_nan_resamples_out():
    resamples = O.stratified_resamples(torch.zeros(6, dtype=torch.long), n_resamples=9, seed=0)
    # rows 1..4 NaN, rows 5..9 equal to 7: the interval is [7, 7]
    stat = torch.tensor([1.0] + [math.nan] * 4 + [7.0] * 5)
    estimate = O.bootstrap(lambda index: stat, resamples)
    assert (estimate.value, estimate.low, estimate.high) == (1.0, 7.0, 7.0)
    all_nan = O.bootstrap(lambda index: torch.tensor([2.0] + [math.nan] * 9), resamples)
    assert all_nan.value == 2.0 and math.isnan(all_nan.low) and math.isnan(all_nan.high)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5])
def test_bootstrap_refuses_a_level_outside_0_1(level):
    resamples = O.stratified_resamples(torch.zeros(4, dtype=torch.long), n_resamples=3)
    with pytest.raises(ValueError, match="level"):
        O.bootstrap(lambda index: index.double().mean(dim=1), resamples, level=level)


def test_bootstrap_refuses_fewer_than_two_rows():
    with pytest.raises(ValueError, match="resample"):
        O.bootstrap(lambda index: index.double().mean(dim=1), torch.zeros(1, 4, dtype=torch.long))


def test_estimate_excludes_and_format():
    e = O.Estimate(1.5, 1.2, 1.8)
    assert e.excludes(1.0) and e.excludes(2.0) and not e.excludes(1.5) and not e.excludes(1.2)
    assert str(e) == "1.50 [1.20, 1.80]" and e.format(1) == "1.5 [1.2, 1.8]"


# --------------------------------------------------------------------------- sign noise


def test_sign_noise_moves_every_pixel_by_exactly_eps_unless_clipped():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g)
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.02, 0.99])
    eps = 0.05
    noisy = O.sign_noise(x, eps, seed=1)
    assert noisy.shape == x.shape and noisy.dtype == x.dtype
    assert noisy.min() >= 0 and noisy.max() <= 1
    step = noisy - x
    exact = (step.abs() - eps).abs() < 1e-6
    clipped = ((noisy == 0) & (x < eps)) | ((noisy == 1) & (x > 1 - eps))
    assert (exact | clipped).all()
    # a fair coin: both signs, about half each
    up = (step > 0).double().mean().item()
    assert 0.4 < up < 0.6


def test_sign_noise_is_seeded_and_leaves_the_global_rng_alone():
    x = torch.full((4, 1, 8, 8), 0.5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = O.sign_noise(x, 0.1, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, O.sign_noise(x, 0.1, seed=3))
    assert not torch.equal(first, O.sign_noise(x, 0.1, seed=4))


@pytest.mark.parametrize("eps", [-0.1, 1.5, math.nan])
def test_sign_noise_refuses_eps_outside_0_1(eps):
    with pytest.raises(ValueError, match="eps"):
        O.sign_noise(torch.zeros(1, 1, 2, 2), eps)


def test_sign_noise_refuses_a_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        O.sign_noise(torch.zeros(1, 1, 2, 2), 0.1, seed=-1)


# --------------------------------------------------------------------------- measure_observations on a tiny model


@pytest.fixture(scope="module")
def few_digits(digits):
    return digits.test.x[:30], digits.test.y[:30]


MEASURE = dict(eps=0.1, steps=2, thresholds=(0.01, 0.1), n_resamples=20)


def test_measure_observations_on_a_tiny_model(few_digits):
    x, y = few_digits
    model = tiny_cnn()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    obs = O.measure_observations(model, x, y, seed=1, **MEASURE)
    assert torch.equal(torch.get_rng_state(), before)
    assert [r.threshold for r in obs.rows] == [0.01, 0.1]
    assert (obs.layer, obs.channels, obs.n_examples, obs.n_classes) == ("block3", 16, 30, len(y.unique()))
    assert obs.eps == 0.1 and obs.n_resamples == 20
    assert obs.attack["steps"] == 2 and obs.attack["objective"] == "ce"
    assert obs.attack["step_size"] == pytest.approx(A.figure_step_size(0.1))
    natural = A.channel_activations(model, x)
    assert obs.row(0.1).saturation.value == pytest.approx(A.saturation(natural, 0.1))
    again = O.measure_observations(model, x, y, seed=1, **MEASURE)
    other = O.measure_observations(model, x, y, seed=2, **MEASURE)
    assert again.magnitude_ratio == obs.magnitude_ratio and again.rows == obs.rows
    assert other.magnitude_ratio.value != obs.magnitude_ratio.value


def test_measure_observations_compares_with_sign_noise_at_the_same_eps(few_digits, monkeypatch):
    x, y = few_digits
    seen = []

    def recording_noise(images, eps, seed=0):
        seen.append((eps, seed))
        return images.clone()               # noise that changes nothing: the noise count equals 0 woken

    monkeypatch.setattr(O, "sign_noise", recording_noise)
    obs = O.measure_observations(tiny_cnn(), x, y, seed=4, **MEASURE)
    assert seen == [(0.1, 4)]
    assert all(r.woken_noise.value == 0 for r in obs.rows)


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5])
def test_measure_observations_refuses_eps_outside_0_1(few_digits, eps):
    x, y = few_digits
    with pytest.raises(ValueError, match="eps"):
        O.measure_observations(tiny_cnn(), x, y, **{**MEASURE, "eps": eps})


def test_measure_observations_refuses_missing_labels(few_digits):
    x, _ = few_digits
    with pytest.raises(ValueError, match="labels"):
        O.measure_observations(tiny_cnn(), x, None, **MEASURE)


# --------------------------------------------------------------------------- the table


def _obs(thresholds=(0.01, 0.1), layer="block3"):
    natural, y, _ = _paired_sample()
    return O.observe(natural, 1.5 * natural, natural, y, thresholds=thresholds, n_resamples=10, layer=layer)


def test_observation_table_one_row_per_result_with_the_right_headers():
    table = O.observation_table([("standard", _obs()), ("cas", _obs(layer="block2"))])
    lines = table.splitlines()
    assert len(lines) == 4
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    assert headers == ["model", "layer (C)", "adv/nat magnitude", "entropy nat", "entropy adv",
                       "saturation @1%", "woken/class @1%: attack", "noise",
                       "saturation @10%", "woken/class @10%: attack", "noise"]
    assert lines[2].startswith("| standard") and "block3 (16)" in lines[2]
    assert lines[3].startswith("| cas") and "block2 (16)" in lines[3]
    assert "1.50 [1.50, 1.50]" in lines[2]
    assert O.observation_table([]) == ""


def test_observation_table_refuses_mixed_thresholds():
    with pytest.raises(ValueError, match="thresholds"):
        O.observation_table([("a", _obs()), ("b", _obs(thresholds=(0.01, 0.2)))])


# --------------------------------------------------------------------------- bad input


def _good():
    natural, y, _ = _paired_sample(n_per_class=4, classes=2, channels=4)
    return natural, natural.clone(), natural.clone(), y


@pytest.mark.parametrize("case", [
    "channels differ", "rows differ", "labels too short", "negative", "float labels", "bool labels", "1-d acts",
    "threshold above 1", "threshold below 0", "quiet_fraction", "woken_fraction", "no resample", "level",
])
def test_observe_refuses_bad_input(case):
    natural, adversarial, noise, y = _good()
    kwargs = dict(n_resamples=5)
    if case == "channels differ":
        adversarial = adversarial[:, :3]
    elif case == "rows differ":
        noise = noise[:-1]
    elif case == "labels too short":
        y = y[:-1]
    elif case == "negative":
        adversarial[0, 0] = -0.1
    elif case == "float labels":
        y = y.float()
    elif case == "bool labels":
        y = y.bool()
    elif case == "1-d acts":
        natural = natural[:, 0]
    elif case == "threshold above 1":
        kwargs["thresholds"] = (0.01, 1.5)
    elif case == "threshold below 0":
        kwargs["thresholds"] = (-0.01,)
    elif case == "quiet_fraction":
        kwargs["quiet_fraction"] = 1.2
    elif case == "woken_fraction":
        kwargs["woken_fraction"] = -0.1
    elif case == "no resample":
        kwargs["n_resamples"] = 0
    elif case == "level":
        kwargs["level"] = 1.0
    with pytest.raises(ValueError):
        O.observe(natural, adversarial, noise, y, **kwargs)


def test_definitions_refuse_bad_input():
    with pytest.raises(ValueError, match="same channels"):
        O.woken_channels(NATURAL, ADVERSARIAL[:, :3])
    with pytest.raises(ValueError, match="no image"):
        O.quiet_channels(NATURAL[:0])
    with pytest.raises(ValueError, match="no image"):
        O.woken_channels(NATURAL, ADVERSARIAL[:0])
    with pytest.raises(ValueError, match="quiet_fraction"):
        O.quiet_channels(NATURAL, quiet_fraction=1.5)
    with pytest.raises(ValueError, match="woken_fraction"):
        O.woken_channels(NATURAL, ADVERSARIAL, woken_fraction=-0.5)
    with pytest.raises(ValueError, match="threshold"):
        O.woken_channels(NATURAL, ADVERSARIAL, threshold=2.0)
    with pytest.raises(ValueError, match="integer"):
        O.woken_per_class(NATURAL, ADVERSARIAL, torch.zeros(5))
    with pytest.raises(ValueError, match="shape"):
        O.woken_per_class(NATURAL, ADVERSARIAL[:4], torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("n_resamples", [0, -1, 2.5, True])
def test_stratified_resamples_refuses_bad_counts(n_resamples):
    with pytest.raises(ValueError, match="n_resamples"):
        O.stratified_resamples(LABELS, n_resamples)


@pytest.mark.parametrize("labels", [torch.zeros(0, dtype=torch.long), LABELS.float(), LABELS[None]])
def test_stratified_resamples_refuses_bad_labels(labels):
    with pytest.raises(ValueError, match="labels"):
        O.stratified_resamples(labels, 5)


def test_stratified_resamples_refuses_a_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        O.stratified_resamples(LABELS, 5, seed=-1)


# --------------------------------------------------------------------------- refused early, before any work


@pytest.mark.parametrize("images", [torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 1, 2, 2, dtype=torch.uint8)])
def test_sign_noise_refuses_images_outside_the_input_rule(images):
    with pytest.raises(ValueError):
        O.sign_noise(images, 0.1)


@pytest.mark.parametrize("bad", [{"thresholds": (1.5,)}, {"thresholds": 0.01}, {"thresholds": ()}, {"quiet_fraction": 2.0}, {"woken_fraction": -1.0},
                                 {"n_resamples": 0}])
def test_measure_observations_refuses_bad_settings_before_any_work(few_digits, monkeypatch, bad):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the settings were checked")

    monkeypatch.setattr(O, "channel_activations", no_work)
    monkeypatch.setattr(O, "_figure_attack", no_work)
    x, y = few_digits
    with pytest.raises(ValueError):
        O.measure_observations(tiny_cnn(), x, y, **{**MEASURE, **bad})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_observe_refuses_non_finite_activations(bad):
    natural = torch.rand(4, 3)
    adversarial = natural.clone()
    adversarial[0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        O.observe(natural, adversarial, natural, torch.tensor([0, 0, 1, 1]), n_resamples=2)
