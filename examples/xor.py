"""XOR needs a hidden layer: a 2-2-1 sigmoid net with MSE, and a 2-3-1 tanh/sigmoid net with log-loss."""

from _common import parse

import xpnet as xn

args = parse(__doc__, epochs=3000)
X = [[0, 0], [0, 1], [1, 0], [1, 1]]
y = [0, 1, 1, 0]

networks = {
    "2-2-1 sigmoid, mse": xn.Network(
        [xn.Dense(2, "sigmoid", in_features=2), xn.Dense(1, "sigmoid")],
        loss="mse",
        optimizer=xn.SGD(2.0, momentum=0.9),
        backend=args.backend,
        seed=args.seed,
    ),
    "2-3-1 tanh/sigmoid, log-loss": xn.Network(
        [xn.Dense(3, "tanh", in_features=2), xn.Dense(1, "sigmoid")],
        loss="logloss",
        optimizer=xn.SGD(0.5),
        backend=args.backend,
        seed=args.seed,
    ),
}
for name, net in networks.items():
    loss = net.fit(X, y, epochs=args.epochs, batch_size=4, verbose=0).history["loss"]
    curve = ", ".join(f"{v:.4f}" for v in loss[:3]) + " ... " + ", ".join(f"{v:.4f}" for v in loss[-3:])
    predictions = xn.to_numpy(net.predict(X)).ravel()
    print(f"{name}: loss {curve}")
    print("  predictions:", " ".join(f"{x}->{p:.3f}" for x, p in zip(X, predictions)))
