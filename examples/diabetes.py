"""Diabetes from glucose and blood pressure (the Pima tables of R's MASS), read with pandas."""

from pathlib import Path

import numpy as np
import pandas as pd
from _common import parse

import xpnet as xn

args = parse(__doc__, epochs=100)
table = pd.read_csv(Path(__file__).parent / "data" / "pima.csv")
features = ["glu", "bp"]
train, test = table[table.split == "train"], table[table.split == "test"]
mean, std = train[features].mean(), train[features].std()


def standardized(frame: pd.DataFrame) -> pd.DataFrame:
    return (frame[features] - mean) / std


net = xn.Network(
    [xn.Dense(8, "tanh", in_features=2), xn.Dense(1, "sigmoid")],
    loss="binary_crossentropy",
    optimizer=xn.Adam(0.01),
    backend=args.backend,
    seed=args.seed,
)
history = net.fit(standardized(train), train.diabetes, epochs=args.epochs, batch_size=32, verbose=0)
result = net.evaluate(standardized(test), test.diabetes)
majority = max(test.diabetes.mean(), 1 - test.diabetes.mean())
print(f"{len(train)} training rows, {len(test)} held-out rows; features {features}")
print(f"training loss {history.history['loss'][0]:.3f} -> {history.history['loss'][-1]:.3f}")
print(f"held-out accuracy {result['accuracy']:.3f} (always guessing 'no diabetes': {majority:.3f})")
for glucose, pressure in ((90, 70), (150, 80), (190, 90)):
    x = (np.array([[glucose, pressure]]) - mean.to_numpy()) / std.to_numpy()
    p = float(xn.to_numpy(net.predict(x))[0, 0])
    print(f"glucose {glucose}, blood pressure {pressure}: P(diabetes) = {p:.2f}")
