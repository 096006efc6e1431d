"""The default tabular recipe: the robust encoder, average_networks and tabular_model."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xpnet as xn

pd = pytest.importorskip("pandas")

from xpnet.data import RobustTabularEncoder, TabularEncoder, encoder_from_state  # noqa: E402
from xpnet.data.encoders import default_encoder  # noqa: E402
from xpnet.train.recipe import regime  # noqa: E402

TINY = xn.TabularRecipe(hidden=(8,), members=2, epochs=4, warmup=2, batch_size=16, small_table=40)
"""The ensemble regime at a size that trains in a fraction of a second."""


def _table(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    town = rng.choice(["a", "b", "c"], size=n)
    frame = pd.DataFrame({"x": x, "town": town, "flag": rng.random(n) > 0.5})
    frame.loc[3, "x"] = np.nan
    frame["y"] = 100 + 20 * np.nan_to_num(x) + 15 * (town == "a") + rng.normal(size=n)
    frame["kind"] = np.where(np.nan_to_num(x) + (town == "b") > 0.3, "high", "low")
    return frame


def test_robust_encoder_scales_by_the_iqr_clips_smoothly_and_bins_at_quantiles():
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    frame = pd.DataFrame({"v": values})
    encoder = RobustTabularEncoder(clip=3.0, bins=2).fit(frame)
    finite = values[:-1]
    median = np.median(finite)
    low, high = np.quantile(finite, [0.25, 0.75])
    z = (np.where(np.isnan(values), median, values) - median) / ((high - low) / 1.349)
    edges = np.quantile(finite, [0.0, 0.5, 1.0], method="inverted_cdf")
    filled = np.where(np.isnan(values), median, values)
    out = encoder.transform(frame)
    assert encoder.feature_names_out == ["v", "v:bin1", "v:bin2", "v_missing"]
    np.testing.assert_allclose(out[:, 0], z / np.sqrt(1 + (z / 3.0) ** 2), rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], np.clip((filled - edges[0]) / (edges[1] - edges[0]), 0, 1))
    np.testing.assert_allclose(out[:, 2], np.clip((filled - edges[1]) / (edges[2] - edges[1]), 0, 1))
    np.testing.assert_array_equal(out[:, 3], np.isnan(values))
    assert np.all(np.abs(out[:, 0]) < 3.0) and out[5, 0] > 2.9  # the outlier lands just inside the clip


def test_robust_encoder_without_clip_or_bins_is_robust_scaling_and_keeps_categories_one_hot():
    frame = pd.DataFrame({"v": [1.0, 2.0, 3.0, 4.0, 5.0], "c": ["x", "y", "x", None, "z"]})
    robust = RobustTabularEncoder(clip=None).fit(frame)
    plain = TabularEncoder().fit(frame)
    out = robust.transform(frame)
    np.testing.assert_allclose(out[:, 0], (frame["v"] - 3.0) / (2.0 / 1.349))
    np.testing.assert_array_equal(out[:, 1:], plain.transform(frame)[:, 1:])


def test_a_constant_or_two_valued_column_gets_no_bins_and_a_finite_scale():
    frame = pd.DataFrame({"const": [7.0] * 6, "two": [0.0, 1.0] * 3})
    encoder = RobustTabularEncoder(bins=8).fit(frame)
    assert encoder.feature_names_out == ["const", "two"]
    out = encoder.transform(frame)
    assert np.all(np.isfinite(out)) and np.all(out[:, 0] == 0.0)


def test_robust_state_is_json_and_rebuilds_the_same_encoder():
    frame = _table()
    encoder = RobustTabularEncoder(bins=4).fit(frame)
    state = json.loads(json.dumps(encoder.get_state()))
    again = encoder_from_state(state)
    assert isinstance(again, RobustTabularEncoder) and again.bins == 4
    np.testing.assert_array_equal(again.transform(frame), encoder.transform(frame))
    assert type(encoder_from_state(TabularEncoder().fit(frame).get_state())) is TabularEncoder


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"clip": -1.0}, "clip must be"), ({"bins": -2}, "bins must be"), ({"bins": 1.5}, "bins must be")],
)
def test_robust_encoder_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustTabularEncoder(**kwargs)


def test_a_damaged_robust_state_is_one_value_error():
    state = RobustTabularEncoder(bins=4).fit(_table()).get_state()
    del state["columns"][0]["edges"]
    with pytest.raises(ValueError, match="not a RobustTabularEncoder state"):
        encoder_from_state(state)


def test_average_networks_predicts_the_mean_of_the_members_logits(backend):
    X = np.random.default_rng(0).normal(size=(10, 3))
    members = [
        xn.Network(
            [xn.Dense(4, "relu", in_features=3), xn.Dense(2), xn.Activation("softmax")],
            loss="categorical_crossentropy",
            backend=backend,
            dtype="float64",
            seed=s,
        )
        for s in (1, 2)
    ]
    logits = [
        xn.to_numpy(xn.Network(m.layers[:-1], backend=backend, dtype="float64").predict(X)) for m in members
    ]
    net = xn.average_networks(members, {"note": "kept"})
    mean = np.mean(logits, axis=0)
    expected = np.exp(mean) / np.exp(mean).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(xn.to_numpy(net.predict(X)), expected, rtol=1e-12)
    assert net.metadata == {"note": "kept"}
    with pytest.raises(ValueError, match="at least one network"):
        xn.average_networks([])


def test_regime_follows_the_size_and_fast():
    assert regime(1000) == "folds" and regime(1001) == "ensemble" and regime(50_000, fast=True) == "single"
    assert regime(41, recipe=TINY) == "ensemble"


def test_the_ensemble_answers_in_target_units_after_load_on_every_backend(backend, tmp_path):
    frame = _table()
    net = xn.tabular_model(frame.drop(columns=["kind"]), "y", recipe=TINY, backend=backend, verbose=0)
    assert isinstance(net.layers[0], xn.Parallel) and len(net.layers[0].branches) == 2
    assert net.metadata["encoder"]["type"] == "robust" and net.metadata["task"] == "regression"
    new = frame.drop(columns=["y", "kind"]).iloc[:7]
    before = xn.to_numpy(net.predict(new)).ravel()
    assert abs(before.mean() - frame["y"].mean()) < 3 * frame["y"].std()  # the target's units, not z-scores
    net.save(tmp_path / "m.safetensors")
    for name in ("numpy", backend.name):
        again = xn.load(tmp_path / "m.safetensors", backend=name)
        np.testing.assert_allclose(xn.to_numpy(again.predict(new)).ravel(), before, rtol=1e-5, atol=1e-3)


def test_the_ensemble_learns_a_table_better_than_the_mean():
    frame = _table(400, seed=1)
    train, test = frame.iloc[:300], frame.iloc[300:]
    recipe = xn.TabularRecipe(hidden=(32,), members=2, epochs=30, warmup=3, batch_size=32, small_table=100)
    net = xn.tabular_model(train.drop(columns=["kind"]), "y", recipe=recipe, backend="numpy", verbose=0)
    error = np.abs(xn.to_numpy(net.predict(test)).ravel() - test["y"]).mean()
    assert error < 0.3 * np.abs(test["y"] - train["y"].mean()).mean()


def test_classification_with_label_smoothing_gives_probabilities_of_every_class(backend):
    frame = _table()
    recipe = xn.TabularRecipe(**{**TINY.__dict__, "label_smoothing": 0.1})
    net = xn.tabular_model(frame.drop(columns=["y"]), "kind", recipe=recipe, backend=backend, verbose=0)
    assert net.metadata["classes"] == ["high", "low"] and "target_scaling" not in net.metadata
    prob = xn.to_numpy(net.predict(frame.drop(columns=["y", "kind"])))
    assert prob.shape == (len(frame), 2)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


def test_small_tables_get_the_kfold_ensemble_and_fast_one_network():
    frame = _table(60).drop(columns=["kind"])
    histories = []
    folds = xn.tabular_model(frame, "y", backend="numpy", verbose=0, histories=histories)
    assert len(folds.layers[0].branches) == 5 and len(histories) == 5
    assert folds.metadata["encoder"].get("type") is None  # today's TabularEncoder
    single = xn.tabular_model(frame, "y", fast=True, backend="numpy", verbose=0)
    assert isinstance(single.layers[0], xn.Residual)


def test_progress_says_what_trains_and_what_each_network_kept(capsys):
    recipe = xn.TabularRecipe(**{**TINY.__dict__, "huber": None})  # squared error: an RMSE to show
    xn.tabular_model(_table().drop(columns=["kind"]), "y", recipe=recipe, backend="numpy", verbose=1)
    err = capsys.readouterr().err
    assert "training 2 networks of 8 ReLU, 4 epochs each" in err
    assert "network 2/2: kept epoch" in err and "held-back rmse" in err


@pytest.mark.parametrize(
    ("target", "match"), [("nope", "needs a DataFrame with the column 'nope'"), ("kind", "single class")]
)
def test_tabular_model_refuses_what_it_cannot_learn(target, match):
    frame = _table().assign(kind="same")
    with pytest.raises(ValueError, match=match):
        xn.tabular_model(frame, target, verbose=0)


def test_fit_on_a_dataframe_picks_the_robust_encoder_above_1000_rows():
    assert type(default_encoder(1000)) is TabularEncoder
    assert isinstance(default_encoder(1001), RobustTabularEncoder) and default_encoder(1001).bins == 16
    assert (default_encoder(1001).levels, default_encoder(1001).level_rows) == (1000, 5)
    assert (xn.TabularRecipe().levels, xn.TabularRecipe().level_rows) == (1000, 5)
    frame = _table(1100).drop(columns=["kind"])
    net = xn.Network([xn.Dense(1)], loss="mse", optimizer="adam", backend="numpy", seed=0)
    net.fit(frame.drop(columns=["y"]), frame["y"], epochs=1, batch_size=256, verbose=0, preprocess="auto")
    assert net.metadata["encoder"]["type"] == "robust"
    assert net.in_features == len(
        RobustTabularEncoder(bins=16).fit(frame.drop(columns=["y"])).feature_names_out
    )


def test_huber_trains_regression_on_the_huber_loss_and_reports_it_as_a_loss(capsys):
    recipe = xn.TabularRecipe(**{**TINY.__dict__, "huber": 0.5})
    net = xn.tabular_model(_table().drop(columns=["kind"]), "y", recipe=recipe, backend="numpy", verbose=1)
    assert isinstance(net.loss, xn.Huber) and net.loss.delta == 0.5
    assert "held-back loss" in capsys.readouterr().err


def test_blas_threads_limits_numpys_blas_inside_the_block_and_restores_it():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from xpnet.train.recipe import blas_threads

    def counts():
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]

    before = counts()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can see")
    with blas_threads(1):
        assert all(n == 1 for n in counts())
    assert counts() == before
    with blas_threads(None):
        assert counts() == before


def _panel(persons=60, each=20, seed=0):
    """A table where each person (an id written as a number) has an effect of its own on ``y``."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(rng.permutation(np.arange(1000, 1000 + 7 * persons, 7)), each)
    effect = dict(zip(np.unique(ids), rng.normal(scale=2.0, size=persons)))
    x = rng.normal(size=ids.size)
    frame = pd.DataFrame({"id": ids, "x": x})
    frame["y"] = x + np.array([effect[i] for i in ids]) + 0.1 * rng.normal(size=ids.size)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_an_integer_coded_column_gets_its_levels_one_hot_beside_its_numbers():
    frame = _panel(persons=30, each=6)
    encoder = RobustTabularEncoder(bins=4, levels=100).fit(frame[["id", "x"]])
    levels = encoder.columns[0]["levels"]
    assert levels == sorted(frame["id"].unique().tolist())  # every person has 6 >= 5 rows
    assert encoder.columns[1]["levels"] == []  # x is not integers
    names = encoder.feature_names_out
    assert names[:5] == ["id", "id:bin1", "id:bin2", "id:bin3", "id:bin4"] and names[5] == f"id={levels[0]}"
    out = encoder.transform(frame[["id", "x"]])
    assert out.shape[1] == encoder.width == len(names) == 1 + 4 + 30 + 1 + 4
    one_hot = out[:, 5:35]
    ids = frame["id"].to_numpy()
    np.testing.assert_array_equal(one_hot, (ids[:, None] == np.array(levels)).astype(float))
    alone = RobustTabularEncoder(bins=4).fit(frame[["id"]])
    np.testing.assert_array_equal(out[:, :5], alone.transform(frame[["id"]]))


def test_an_unseen_or_missing_code_encodes_as_zeros_and_its_number_stays():
    frame = _panel(persons=30, each=6)
    encoder = RobustTabularEncoder(bins=4, levels=100).fit(frame[["id", "x"]])
    between = frame["id"].min() + 1  # the ids step by 7
    new = pd.DataFrame({"id": [frame["id"].iloc[0], 5, np.nan, 10**6, between], "x": [0.0] * 5})
    with pytest.warns(UserWarning, match="missing value"):
        out = encoder.transform(new)
    one_hot = out[:, 5:35]
    assert one_hot[0].sum() == 1 and one_hot[0, encoder.columns[0]["levels"].index(new["id"][0])] == 1
    assert not one_hot[1:].any()  # below, missing, above and between the known codes
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (np.arange(5000.0), "a row number: every value once"),
        (np.repeat(np.arange(0.5, 300.5), 10), "not integers"),
        (np.repeat(np.arange(17.0), 10), "no more values than 16 bins have edges"),
        (np.repeat(np.arange(100.0), 3), "no value has 5 rows"),
        (np.concatenate([np.repeat(np.arange(20.0), 5), np.arange(100.0, 400.0)]), "repeats hold a quarter"),
        (np.repeat(np.arange(50.0) * 2.0**60, 10), "too large to be exact in float64"),
    ],
)
def test_a_column_that_is_not_codes_gets_no_levels(values, why):
    encoder = RobustTabularEncoder(bins=16, levels=1000).fit(pd.DataFrame({"v": values}))
    assert encoder.columns[0]["levels"] == [], why
    assert encoder.width <= 1 + 16


def test_levels_keep_the_most_frequent_codes_up_to_the_cap_and_gaps_are_ignored():
    values = np.concatenate([np.repeat(np.arange(40.0), np.arange(40) + 5), [np.nan] * 50])
    encoder = RobustTabularEncoder(bins=16, levels=10).fit(pd.DataFrame({"v": values}))
    assert encoder.columns[0]["levels"] == list(range(30, 40))
    assert encoder.columns[0]["indicator"]
    assert (
        RobustTabularEncoder(bins=16, levels=10, level_rows=60)
        .fit(pd.DataFrame({"v": values}))
        .columns[0]["levels"]
        == []
    )  # no value has 60 rows


def test_a_state_with_levels_round_trips_and_one_from_before_levels_still_loads():
    frame = _panel(persons=30, each=6)[["id", "x"]]
    encoder = RobustTabularEncoder(bins=4, levels=100).fit(frame)
    state = json.loads(json.dumps(encoder.get_state()))
    again = encoder_from_state(state)
    assert again.levels == 100 and again.level_rows == 5
    np.testing.assert_array_equal(again.transform(frame), encoder.transform(frame))
    old = json.loads(json.dumps(RobustTabularEncoder(bins=4).fit(frame).get_state()))
    for key in ("levels", "level_rows"):
        del old[key]
    for column in old["columns"]:
        del column["levels"]
    np.testing.assert_array_equal(
        encoder_from_state(old).transform(frame), RobustTabularEncoder(bins=4).fit(frame).transform(frame)
    )


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        ([3, 2], "increasing list"),
        ([1.5, 2.0], "integers"),
        ("12", "integers"),
        (list(range(101)), "at most 100"),
    ],
)
def test_damaged_levels_in_a_state_are_one_value_error(levels, match):
    state = RobustTabularEncoder(bins=4, levels=100).fit(_panel(persons=30, each=6)[["id", "x"]]).get_state()
    state["columns"][0]["levels"] = levels
    with pytest.raises(ValueError, match=match):
        encoder_from_state(state)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"levels": -1}, "levels must"), ({"level_rows": 0}, "level_rows must")]
)
def test_robust_encoder_refuses_bad_level_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustTabularEncoder(**kwargs)


def test_the_ensemble_with_levels_answers_after_load_on_every_backend(backend, tmp_path):
    frame = _panel(persons=24, each=6)
    recipe = xn.TabularRecipe(**{**TINY.__dict__, "levels": 50})
    net = xn.tabular_model(frame, "y", recipe=recipe, backend=backend, verbose=0)
    assert len(net.metadata["encoder"]["columns"][0]["levels"]) == 24
    new = pd.DataFrame({"id": [frame["id"].iloc[0], -3, np.nan], "x": [0.1, 0.2, 0.3]})  # seen, unseen, gap
    with pytest.warns(UserWarning, match="missing value"):
        before = xn.to_numpy(net.predict(new)).ravel()
    assert np.all(np.isfinite(before))
    net.save(tmp_path / "m.safetensors")
    again = xn.load(tmp_path / "m.safetensors", backend=backend.name)
    with pytest.warns(UserWarning, match="missing value"):
        np.testing.assert_allclose(xn.to_numpy(again.predict(new)).ravel(), before, rtol=1e-5, atol=1e-4)


def test_levels_let_the_ensemble_learn_each_persons_effect():
    frame = _panel(persons=60, each=20, seed=3)
    train, test = frame.iloc[:1000], frame.iloc[1000:]
    base = {**TINY.__dict__, "hidden": (32,), "members": 1, "epochs": 40, "warmup": 2, "batch_size": 64}
    errors = {}
    for levels in (0, 100):
        recipe = xn.TabularRecipe(**{**base, "levels": levels})
        net = xn.tabular_model(train, "y", recipe=recipe, backend="numpy", verbose=0)
        errors[levels] = np.abs(xn.to_numpy(net.predict(test)).ravel() - test["y"]).mean()
    assert errors[100] < 0.5 * errors[0], errors


def _schools(frequent=250, each=6, singles=500):
    """A text column of ``frequent`` names with ``each`` rows apiece and ``singles`` names seen once."""
    names = [f"school {i:03d}" for i in range(frequent) for _ in range(each)]
    return pd.DataFrame({"school": names + [f"once {i}" for i in range(singles)]})


def test_a_text_column_keeps_frequent_categories_beyond_the_first_100_up_to_levels():
    frame = _schools()
    with pytest.warns(UserWarning, match="the 250 most frequent are its categories, the other 500"):
        robust = RobustTabularEncoder(levels=300).fit(frame)
    assert robust.columns[0]["categories"] == sorted(f"school {i:03d}" for i in range(250))
    with pytest.warns(UserWarning, match="the 120 most frequent"):
        capped = RobustTabularEncoder(levels=120).fit(_schools(singles=0))
    assert len(capped.columns[0]["categories"]) == 120
    with pytest.warns(UserWarning, match="the 100 most frequent"):
        plain = TabularEncoder().fit(frame)
    assert len(plain.columns[0]["categories"]) == 100  # today's encoder keeps 100, levels or not
    out = robust.transform(frame)
    assert out.shape == (len(frame), 250) and out[:1500].sum() == 1500 and out[1500:].sum() == 0


def test_a_name_of_one_row_each_stays_at_100_categories_and_levels_do_not_widen_it():
    frame = pd.DataFrame({"name": [f"person {i}" for i in range(5000)], "row": np.arange(5000)})
    with pytest.warns(UserWarning, match="5,000 distinct values"):
        encoder = RobustTabularEncoder(bins=16, levels=1000).fit(frame)
    assert encoder.width == 100 + 1 + 16  # 100 names, and the row number: its z and bins, no levels


def test_a_state_with_more_than_100_categories_round_trips_only_for_the_robust_encoder():
    encoder = RobustTabularEncoder(levels=300).fit(_schools(singles=0))
    state = json.loads(json.dumps(encoder.get_state()))
    again = encoder_from_state(state)
    frame = _schools(singles=0)
    np.testing.assert_array_equal(again.transform(frame), encoder.transform(frame))
    with pytest.raises(ValueError, match=r"list more categories than it keeps \(100\)"):
        TabularEncoder.from_state(state)
    state["levels"] = 200
    with pytest.raises(ValueError, match=r"more categories than it keeps \(200\)"):
        encoder_from_state(state)
