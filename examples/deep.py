"""A deeper network on the bundled digits: BatchNormalization and residual blocks train faster.

Two 12-layer ReLU networks with the same widths, optimizer and seed: a plain
stack of Dense layers, and one whose blocks are ``Residual([Dense,
BatchNormalization, Activation, Dense])``. The script prints the training loss
per epoch of both and, with ``--plot``, draws both curves on the History plot.
"""

import numpy as np
from _common import parse
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import xpnet as xn

WIDTH, BLOCKS = 32, 5
args = parse(__doc__, epochs=10)
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)


def plain() -> list[xn.Layer]:
    hidden = [xn.Dense(WIDTH, "relu") for _ in range(2 * BLOCKS + 1)]
    return [xn.Dense(WIDTH, "relu", in_features=64), *hidden[1:], xn.Dense(10, "softmax")]


def residual() -> list[xn.Layer]:
    def block() -> xn.Layer:
        return xn.Residual([xn.Dense(WIDTH), xn.BatchNormalization(), xn.Activation("relu"), xn.Dense(WIDTH)])

    stem = [xn.Dense(WIDTH, in_features=64), xn.BatchNormalization(), xn.Activation("relu")]
    return [*stem, *(block() for _ in range(BLOCKS)), xn.Dense(10, "softmax")]


histories = {}
for name, layers in (("plain", plain()), ("batch norm + residual", residual())):
    net = xn.Network(layers, loss="cross_entropy", optimizer=xn.Adam(0.002),
                     backend=args.backend, seed=args.seed)  # fmt: skip
    net.fit(X_train, y_train, epochs=args.epochs, batch_size=64, verbose=0,
            validation_data=(X_test, y_test))  # fmt: skip
    histories[name] = net.history
    losses = " ".join(f"{v:.3f}" for v in net.history.history["loss"])
    accuracy = np.mean(np.argmax(xn.to_numpy(net.predict(X_test)), axis=1) == y_test)
    dense = sum(isinstance(layer, xn.Dense) for layer in net.layers) + sum(
        isinstance(inner, xn.Dense)
        for layer in net.layers
        if isinstance(layer, xn.Residual)
        for inner in layer.layers
    )
    below = next((e + 1 for e, v in enumerate(net.history.history["loss"]) if v < 0.4), None)
    print(f"{name}: {dense} Dense layers, training loss per epoch: {losses}")
    print(f"{name}: first epoch with training loss below 0.4: {below}")
    print(
        f"{name}: final training loss {net.history.history['loss'][-1]:.4f}, held-out accuracy {accuracy:.3f}"
    )

if args.plot:
    figure = histories["batch norm + residual"].plot()  # loss and accuracy panels, train and validation
    baseline = histories["plain"]
    for axis, key in zip(figure.axes, ("loss", "accuracy")):
        epochs = [e + 1 for e in baseline.epoch]
        axis.plot(epochs, baseline.history[key], ":", color="gray", marker="x", label=f"{key} (plain)")
        axis.plot(epochs, baseline.history[f"val_{key}"], "-.", color="gray", label=f"val_{key} (plain)")
        axis.legend(fontsize=7)
    figure.suptitle(
        "digits, 12 layers: batch norm + residual blocks (colour) vs a plain stack (gray)", y=1.04
    )
    figure.savefig(args.plot, dpi=110, bbox_inches="tight")
    print(f"saved {args.plot}")
