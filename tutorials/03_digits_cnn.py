"""Tutorial 3: train a small CNN on handwritten digits, end to end.

scikit-learn ships the UCI "optical digits" set: 1797 grey 8x8 images of the digits 0-9,
so nothing is downloaded. This script is a complete PyTorch-style training program with
``import tensorkit as tk`` in place of ``import torch``:

    1. data: a stratified train / held-out split, TensorDataset + DataLoader
    2. the model: a class (conv - BN - ReLU - conv - ReLU - maxpool - dropout - 2 linears)
    3. training: Adam + a OneCycle learning-rate schedule, a tqdm progress bar
    4. held-out accuracy (the full run must reach 97%; it exits with an error otherwise)
    5. a loss / accuracy plot (matplotlib, PNG)
    6. a checkpoint (model + optimizer state_dict) with tk.save, reloaded with tk.load into a
       fresh model that must give the same accuracy

It uses the GPU when there is a real one, else the CPU (the full run takes well under a
minute on a laptop CPU). Needs scikit-learn, tqdm and matplotlib
(``pip install -e ".[tutorials]"``; ``make demo`` installs them and runs this script).

    python tutorials/03_digits_cnn.py [--out DIR] [--seed N] [--epochs N] [--workers N] [--quick]

Outputs go to ``--out`` (or ``$TENSORKIT_TUTORIAL_OUT``; default ``tutorials/out/``).
``--quick`` (or ``TENSORKIT_TUTORIAL_QUICK=1``, which the test suite sets) trains one epoch
on a subset and skips the 97% check, but still writes the plot and the checkpoint.

The model class is at module level and training runs only under ``__main__``, so
``DigitsCNN`` can be imported from this file without training anything.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

import tensorkit as tk
import tensorkit.nn as nn
import tensorkit.nn.functional as F

TARGET_ACCURACY = 0.97


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a 2x2 max-pool on 1x8x8 images, then two linear layers.

    Shapes: (N, 1, 8, 8) -> conv 32 -> (N, 32, 8, 8) -> conv 64 -> (N, 64, 8, 8)
    -> maxpool -> (N, 64, 4, 4) -> flatten 1024 -> 128 -> 10 logits.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.25) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: tk.Tensor) -> tk.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.dropout(self.pool(F.relu(self.conv2(x))))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def pick_device() -> tk.device:
    """A real GPU if there is one. TENSORKIT_INTERPRET=1 emulates ``cuda`` with Triton's
    interpreter, which is far too slow to train on, so then (and without a GPU) the CPU."""
    real_gpu = tk.cuda.is_available() and os.environ.get("TENSORKIT_INTERPRET") != "1"
    return tk.device("cuda" if real_gpu else "cpu")


def load_data(seed: int, quick: bool):
    """The digits as float32 (N, 1, 8, 8) in [0, 1] with int64 labels: a stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]     # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=seed)
    if quick:
        x_tr, y_tr, x_te, y_te = x_tr[:256], y_tr[:256], x_te[:128], y_te[:128]
    # Normalise with the training set's statistics only (the held-out set stays unseen).
    mean, std = x_tr.mean(), x_tr.std()
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return (tk.from_numpy(x_tr), tk.from_numpy(y_tr)), (tk.from_numpy(x_te), tk.from_numpy(y_te))


@tk.no_grad()
def evaluate(model: nn.Module, loader, device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a loader, in eval mode (BN running stats, no dropout)."""
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        n += y.shape[0]
    return total_loss / n, correct / n


def save_plot(history: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")                  # no display needed: write a file
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], "o-", label="train")
    ax_loss.plot(epochs, history["test_loss"], "s-", label="held-out")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], "o-", label="train")
    ax_acc.plot(epochs, [100 * a for a in history["test_acc"]], "s-", label="held-out")
    ax_acc.axhline(100 * TARGET_ACCURACY, color="grey", linestyle="--", label=f"{TARGET_ACCURACY:.0%} target")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("tensorkit: DigitsCNN on sklearn's 8x8 digits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("TENSORKIT_TUTORIAL_OUT",
                                                        pathlib.Path(__file__).resolve().parent / "out"),
                        help="directory for the plot and the checkpoint (default: tutorials/out)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("TENSORKIT_TUTORIAL_SEED", 0)))
    parser.add_argument("--epochs", type=int, default=None, help="default: 10 (1 with --quick)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("TENSORKIT_TUTORIAL_QUICK") == "1",
                        help="1 epoch on a subset, no accuracy check (the test suite's mode)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 10)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    device = pick_device()
    tk.manual_seed(args.seed)              # weights, dropout masks and the loader's shuffling
    print(f"device: {device}   seed: {args.seed}   epochs: {epochs}{'   (quick mode)' if args.quick else ''}")

    # 1. data ------------------------------------------------------------------------------
    (x_tr, y_tr), (x_te, y_te) = load_data(args.seed, args.quick)
    train_set = tk.utils.data.TensorDataset(x_tr, y_tr)
    test_set = tk.utils.data.TensorDataset(x_te, y_te)
    # The whole set is 0.5 MB in memory: worker processes would only add start-up time here, so
    # the default is none. (--workers 2 works too; worker processes are why a script that uses
    # them must keep its training under `if __name__ == "__main__":`.)
    train_loader = tk.utils.data.DataLoader(train_set, batch_size=64, shuffle=True, num_workers=args.workers)
    test_loader = tk.utils.data.DataLoader(test_set, batch_size=256)
    print(f"train: {len(train_set)} images, held-out: {len(test_set)} images, shape {tuple(x_tr.shape[1:])}")

    # 2. model, optimizer, schedule -----------------------------------------------------------
    model = DigitsCNN().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"DigitsCNN: {n_params:,} parameters")
    optimizer = tk.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    # OneCycle: warm up to max_lr over the first 30% of the steps, then anneal to ~0 (per batch).
    scheduler = tk.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, epochs=epochs,
                                                 steps_per_epoch=len(train_loader))

    # 3. training ------------------------------------------------------------------------------
    history = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch:2d}/{epochs}", leave=False, unit="batch",
                   disable=None)          # disable=None: no bar when stderr is not a terminal (logs, CI)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += y.shape[0]
            loss_sum += loss.item() * y.shape[0]
            correct += (logits.argmax(dim=1) == y).sum().item()
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        test_loss, test_acc = evaluate(model, test_loader, device)
        history["train_loss"].append(loss_sum / seen)
        history["train_acc"].append(correct / seen)
        history["test_loss"].append(test_loss)
        history["test_acc"].append(test_acc)
        print(f"epoch {epoch:2d}/{epochs}  train loss {loss_sum / seen:.4f}  train acc {correct / seen:6.2%}  "
              f"held-out loss {test_loss:.4f}  held-out acc {test_acc:6.2%}")
    train_time = time.perf_counter() - start

    # 4. accuracy ------------------------------------------------------------------------------
    _, accuracy = evaluate(model, test_loader, device)
    print(f"\nheld-out accuracy: {accuracy:.2%} ({round(accuracy * len(test_set))}/{len(test_set)}) "
          f"after {epochs} epoch(s), {train_time:.1f} s of training")

    # 5. plot ----------------------------------------------------------------------------------
    plot_path = out_dir / "digits_cnn.png"
    save_plot(history, plot_path)
    print(f"plot:       {plot_path}")

    # 6. checkpoint: tensors go into a .safetensors file, the rest (epoch, numbers) into its
    #    JSON header; loading never runs code from the file.
    ckpt_path = out_dir / "digits_cnn.safetensors"
    tk.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epochs,
             "seed": args.seed, "accuracy": accuracy}, ckpt_path)
    print(f"checkpoint: {ckpt_path}")

    ckpt = tk.load(ckpt_path, map_location=device)
    restored = DigitsCNN().to(device)
    restored.load_state_dict(ckpt["model"])
    # An optimizer resumes the same way (Adam's step counts and moment estimates):
    tk.optim.Adam(restored.parameters(), lr=3e-3).load_state_dict(ckpt["optimizer"])
    _, restored_acc = evaluate(restored, test_loader, device)
    print(f"reloaded into a fresh DigitsCNN: held-out accuracy {restored_acc:.2%} "
          f"(saved at epoch {ckpt['epoch']}: {ckpt['accuracy']:.2%})")
    assert restored_acc == accuracy, f"reloaded model gives {restored_acc}, trained one {accuracy}"

    if args.quick:
        print("quick mode: the 97% check is skipped")
    elif accuracy < TARGET_ACCURACY:
        print(f"FAILED: held-out accuracy {accuracy:.2%} is below {TARGET_ACCURACY:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
