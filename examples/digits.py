"""Handwritten digits (scikit-learn's bundled 8x8 images): a 64-64-10 MLP and its confusion matrix."""

import numpy as np
from _common import parse
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import xpnet as xn

args = parse(__doc__, epochs=20)
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)

net = xn.Network(
    [xn.Dense(64, "relu", in_features=64), xn.Dense(10, "softmax")],
    loss="cross_entropy",
    optimizer=xn.Adam(0.003),
    backend=args.backend,
    seed=args.seed,
)
net.fit(X_train, y_train, epochs=args.epochs, batch_size=32, validation_data=(X_test, y_test), verbose=0)
predicted = np.argmax(xn.to_numpy(net.predict(X_test)), axis=1)
print(f"held-out accuracy: {np.mean(predicted == y_test):.3f} on {len(y_test)} images")
confusion = np.zeros((10, 10), dtype=int)
np.add.at(confusion, (y_test, predicted), 1)
print("confusion matrix (rows: true digit, columns: predicted):")
print("     " + " ".join(f"{d:3d}" for d in range(10)))
for digit, row in enumerate(confusion):
    print(f"  {digit}: " + " ".join(f"{v:3d}" for v in row))
