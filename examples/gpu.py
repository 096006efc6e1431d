"""The same training on a GPU: one word changes. Prints the device and the speed.

Runs on --backend cupy by default; where no CUDA GPU works it says why and
runs on NumPy instead, so the script is useful everywhere.
"""

import argparse
import time

import numpy as np

import xpnet as xn

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--backend", default="cupy")
parser.add_argument("--device", default=None)
parser.add_argument("--samples", type=int, default=60_000)
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

try:
    backend = xn.get_backend(args.backend, args.device)
except xn.BackendUnavailableError as exc:
    print(f"{args.backend} is not usable here ({exc}); running on numpy instead")
    backend = xn.get_backend("numpy")

if backend.name == "cupy":
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(backend.device.id)["name"].decode()
elif backend.name == "torch" and backend.device.type == "cuda":
    import torch

    name = torch.cuda.get_device_name(backend.device)
else:
    name = "CPU"
print(f"backend: {backend.name}, device: {backend.device} ({name})")

rng = np.random.default_rng(0)
X = rng.normal(size=(args.samples, 784)).astype(np.float32)
teacher = rng.normal(size=(784, 10)).astype(np.float32)
y = np.argmax(X @ teacher, axis=1)

net = xn.Network(
    [xn.Dense(256, "relu", in_features=784), xn.Dense(128, "relu"), xn.Dense(10, "softmax")],
    loss="cross_entropy",
    optimizer=xn.SGD(0.1),
    backend=backend,
    seed=0,
)
net.fit(X[:1024], y[:1024], epochs=1, batch_size=128, verbose=0)  # warm-up: kernels, allocator
start = time.perf_counter()
history = net.fit(X, y, epochs=args.epochs, batch_size=128, verbose=0)
seconds = time.perf_counter() - start
rate = args.epochs * args.samples / seconds
print(f"{args.epochs} epochs of {args.samples} samples in {seconds:.2f}s: {rate:,.0f} samples/s")
loss, accuracy = history.history["loss"], history.history["accuracy"]
print(f"loss {loss[0]:.3f} -> {loss[-1]:.3f}, accuracy {accuracy[-1]:.3f}")
