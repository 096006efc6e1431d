"""One sigmoid neuron learns a rule from seven rows of three binary inputs.

The classic first network: a weighted sum plus a bias, squashed by a sigmoid,
trained by gradient descent on the log-loss.
"""

from _common import parse

import xpnet as xn

args = parse(__doc__, epochs=1000)
X = [[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1], [0, 1, 0]]
y = [1, 0, 0, 1, 1, 0, 1]

neuron = xn.Network(
    [xn.Dense(1, "sigmoid", in_features=3)],
    loss="logloss",
    optimizer=xn.SGD(learning_rate=1.0),
    backend=args.backend,
    seed=args.seed,
)
history = neuron.fit(X, y, epochs=args.epochs, batch_size=len(X), verbose=0)
loss = history.history["loss"]
print(f"loss: {loss[0]:.4f} -> {loss[-1]:.4f}, training accuracy {history.history['accuracy'][-1]:.3f}")
print(
    "weights:",
    xn.to_numpy(neuron.layers[0].weight).ravel().round(3),
    "bias:",
    xn.to_numpy(neuron.layers[0].bias).round(3),
)
for point in ([1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 0]):
    p = float(xn.to_numpy(neuron.predict([point]))[0, 0])
    print(f"{point} -> {p:.3f} (class {int(p > 0.5)})")
