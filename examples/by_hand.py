"""XOR trained with an explicit loop over xpnet's parts: forward, loss, backward, step.

This is what Network.fit does for you; here each piece is in view.
"""

import numpy as np
from _common import parse

import xpnet as xn

args = parse(__doc__, epochs=2000)
backend = args.backend
rng = np.random.default_rng(args.seed)  # initial weights come from the host generator

X = backend.asarray([[0, 0], [0, 1], [1, 0], [1, 1]], "float64")
y = backend.asarray([[0], [1], [1], [0]], "float64")

layers = [xn.Dense(3, "tanh"), xn.Dense(1, "sigmoid")]
layers[0].build(2, backend, "float64", rng)
layers[1].build(3, backend, "float64", rng)
loss = xn.BinaryCrossentropy()  # takes probabilities: the output of the final sigmoid
optimizer = xn.SGD(learning_rate=0.5)

for epoch in range(args.epochs):
    out = X
    for layer in layers:  # forward: each layer remembers what its backward needs
        out = layer.forward(out, training=True)
    value, grad = loss.value_and_gradient(out, y)  # dL/d(out)
    for layer in reversed(layers):  # backward: fills layer.grads, returns dL/d(input)
        grad = layer.backward(grad)
    optimizer.step(layers)  # w <- w - lr * dL/dw for every entry of layer.params
    if epoch in (0, 1, 2) or epoch == args.epochs - 1:
        print(f"epoch {epoch + 1:5d}: loss {float(value):.5f}")

print("weights of the hidden layer:\n", xn.to_numpy(layers[0].params["weight"]).round(3))
print("predictions:", xn.to_numpy(out).ravel().round(3), "targets:", xn.to_numpy(y).ravel())
