"""Patient-level bootstrap: intervals cover known values, differences are paired."""
import numpy as np
import pytest

from simcrop.evaluate.bootstrap import ClusterBootstrap, bootstrap_mean, format_interval


def _clustered(rng, mu=0.4, patients=30):
    """Items of a patient share its effect (patient sd 0.3, item sd 0.3), 1-4 items per patient."""
    sizes = rng.integers(1, 5, patients)
    groups = np.repeat(np.arange(patients), sizes)
    effect = rng.normal(0, 0.3, patients)[groups]
    return mu + effect + rng.normal(0, 0.3, groups.size), groups


def test_interval_covers_known_mean_on_clustered_data():
    rng, covered = np.random.default_rng(7), 0
    repeats = 120
    for r in range(repeats):
        values, groups = _clustered(rng)
        stat = bootstrap_mean(values, groups, n_boot=400, seed=r)
        assert stat["lo"] <= stat["value"] <= stat["hi"]
        covered += stat["lo"] <= 0.4 <= stat["hi"]
    assert covered / repeats >= 0.88


def test_cluster_interval_is_wider_than_item_interval_when_items_repeat_a_patient():
    rng = np.random.default_rng(1)
    values, groups = _clustered(rng)
    values = np.repeat(values, 5)                              # five copies of every item: same information
    groups = np.repeat(groups, 5)
    by_patient = bootstrap_mean(values, groups, seed=0)
    by_item = bootstrap_mean(values, np.arange(values.size), seed=0)
    assert by_patient["value"] == pytest.approx(by_item["value"])
    assert by_patient["hi"] - by_patient["lo"] > 1.8 * (by_item["hi"] - by_item["lo"])


def test_ratio_and_paired_difference():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 3)
    chance = rng.uniform(0.05, 0.2, groups.size)
    hit = np.clip(chance * 2 + rng.normal(0, 0.05, groups.size), 0, 1)
    boot = ClusterBootstrap(groups, n_boot=500, seed=0)
    ratio = boot.ratio(hit, chance)
    assert ratio["value"] == pytest.approx(hit.mean() / chance.mean())
    assert ratio["lo"] < ratio["value"] < ratio["hi"]
    same = boot.diff(hit, hit)
    assert same == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    shifted = boot.diff(hit + 0.1, hit)                        # paired: a constant shift has no spread
    assert shifted["lo"] == pytest.approx(0.1) and shifted["hi"] == pytest.approx(0.1)
    unpaired_width = boot.mean(hit)["hi"] - boot.mean(hit)["lo"]
    assert unpaired_width > 0
    again = ClusterBootstrap(groups, n_boot=500, seed=0)        # same patients and seed: same resamples
    assert again.mean(hit) == boot.mean(hit)


def test_empty_and_formatting():
    empty = bootstrap_mean([], [], n_boot=10)
    assert np.isnan(empty["value"]) and np.isnan(empty["lo"])
    assert format_interval(empty) == "—"
    assert format_interval(None) == "—"
    assert format_interval({"value": 0.31, "lo": 0.25, "hi": 0.375}) == "0.310 [0.250, 0.375]"
    assert format_interval({"value": 0.31, "lo": None, "hi": None}) == "0.310"
    with pytest.raises(ValueError):
        ClusterBootstrap([1, 2]).mean([1.0])


def test_stat_of_a_mean_equals_the_mean_and_resamples_whole_patients():
    rng = np.random.default_rng(3)
    values, groups = _clustered(rng)
    boot = ClusterBootstrap(groups, n_boot=200, seed=5)
    via_stat = boot.stat(lambda i: values[i].mean())
    assert via_stat == pytest.approx(boot.mean(values))
    idx = boot.indices(0)
    drawn = np.bincount(groups[idx], minlength=groups.max() + 1)
    sizes = np.bincount(groups)
    assert np.all(drawn % sizes == 0)                        # whole patients, as often as drawn
    assert drawn.sum() == pytest.approx(boot.weights[0] @ sizes)


def test_stat_skips_undefined_resamples_and_pairs_differences():
    groups = np.arange(12)
    a = np.linspace(0, 1, 12)
    boot = ClusterBootstrap(groups, n_boot=300, seed=0)
    undefined = boot.stat(lambda i: np.nan if len(set(i)) < 8 else a[i].mean())
    assert np.isfinite(undefined["lo"]) and np.isfinite(undefined["hi"])
    same = boot.stat(lambda i: a[i].mean() - a[i].mean())
    assert same == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    assert np.isnan(ClusterBootstrap([], n_boot=10).stat(lambda i: 1.0)["value"])
