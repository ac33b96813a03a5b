"""Train the digits CNN on scikit-learn's handwritten digits and write what the example needs.

Real data that ships with scikit-learn (1,797 8x8 images, 10 classes): no download.
Writes into the output directory (default: data/ beside this file):
  digits.torchscript.pt   the trained model (TorchScript)
  digits.pt2              the same model as a torch.export ExportedProgram
  calibration.npz         256 training images for int8 calibration (inputs, labels)
  evaluation.npz          the 30% held-out split (inputs, labels), never seen in training

Usage: python examples/digits/train.py [--out DIR] [--epochs N]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0


class DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64 * 2 * 2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_split():
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # N x 1 x 8 x 8 in [0, 1]
    return train_test_split(images, digits.target.astype(np.int64), test_size=0.3,
                            random_state=SEED, stratify=digits.target)


def train(x_train, y_train, epochs: int) -> DigitsCNN:
    torch.manual_seed(SEED)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 64):
            batch = order[i : i + 64]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}", file=sys.stderr, flush=True)
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.monotonic()
    x_train, x_test, y_train, y_test = load_split()
    model = train(x_train, y_train, args.epochs)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean() * 100)
    print(f"held-out accuracy: {accuracy:.2f}% on {len(y_test)} images "
          f"({time.monotonic() - started:.1f}s)", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(x_train[:2])
    torch.jit.trace(model, example).save(str(args.out / "digits.torchscript.pt"))
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(args.out / "digits.pt2"))
    rng = np.random.default_rng(SEED)
    calibration = rng.choice(len(x_train), size=256, replace=False)
    np.savez(args.out / "calibration.npz", inputs=x_train[calibration], labels=y_train[calibration])
    np.savez(args.out / "evaluation.npz", inputs=x_test, labels=y_test)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if accuracy >= 95.0 else 1


if __name__ == "__main__":
    sys.exit(main())
