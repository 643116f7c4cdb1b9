"""Benchmark: one PGD-10 adversarial-training epoch of ResNet-18 on CIFAR-shaped data (GPU speed target).

What it measures
    1. FLOPs, two ways (``torch.utils.flop_counter.FlopCounterMode``, 2 FLOPs per multiply-add):
       a. analytic: the ResNet-18 forward FLOPs per 3×32×32 image (≈ 1.11 GFLOP) × 23 forward-equivalents
          per image per PGD-10 AT epoch (10 attack steps × (forward + input-gradient backward ≈ 1 forward)
          + training forward 1 + backward with weight gradients 2) × 50,000 images ≈ 1.28 PFLOP;
       b. measured: the FLOPs of one real training step (``training_loss`` + ``loss.backward()``, pgd_at,
          10 attack steps, on the CPU, 4 random images) per image × 50,000.
    2. Wall-clock seconds of the second epoch (the first warms up cudnn.benchmark / torch.compile) of
       ``cas_edu.training.train`` on n random CIFAR-shaped images (``make_config("cifar10", "resnet18",
       "pgd_at", preset="fast")``, GPU random crop + flip kept), for each batch size; scaled to 50,000
       images, the achieved TFLOP/s (1b's FLOPs for n images / seconds) and the ratio to the floor
       (1a's epoch FLOPs / ``--peak-tflops``, default 790 = measured H100 bf16 dense throughput).
       On CUDA also the peak memory (torch.cuda.max_memory_allocated).
    With ``--digits``: instead, the seconds of real digits PGD-AT epochs (the CPU per-epoch number).

Targets (reported PASS/FAIL, never asserted; only meaningful on an H100 with bf16, else "n/a")
    * ≤ 6 s per 50k-image epoch at batch 512;  * ≤ 10 s per 50k-image epoch at batch 128.

Usage (repository root)
    PYTHONPATH=. python benchmarks/gpu_epoch.py                       # on a GPU: 50k random CIFAR-shaped images, batch 512 and 128
    PYTHONPATH=. python benchmarks/gpu_epoch.py --n 256 --batch-sizes 128   # CPU smoke run
    PYTHONPATH=. python benchmarks/gpu_epoch.py --digits               # CPU per-epoch digits number
Options: --device auto|cpu|cuda, --amp auto|bf16|off, --channels-last auto|on|off, --compile, --cas,
--peak-tflops 790. Prints markdown tables; writes benchmarks/results/gpu_epoch.json (gpu_epoch_digits.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, verdict, write_json  # noqa: E402

from cas_edu import data  # noqa: E402
from cas_edu.models import build  # noqa: E402
from cas_edu.presets import make_config  # noqa: E402
from cas_edu.runtime import AMP_MODES, CHANNELS_LAST_MODES, memory_format, resolve_device, uses_bf16  # noqa: E402
from cas_edu.training import train, training_loss  # noqa: E402

CIFAR_TRAIN = 50_000
FORWARD_EQUIVALENTS = 10 * 2 + 1 + 2  # attack steps × (forward + input-gradient backward) + forward + backward
TARGETS_S = {512: 6.0, 128: 10.0}  # batch size → seconds per 50k-image epoch on an H100 with bf16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=None, help="training images (default 50000 on CUDA, 512 otherwise)")
    parser.add_argument("--batch-sizes", default="512,128")
    parser.add_argument("--amp", default="auto", choices=AMP_MODES)
    parser.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST_MODES)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cas", action="store_true", help="ResNet-18 with CAS modules (objective ce+cas)")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="dense peak of the floor (H100 bf16)")
    parser.add_argument("--digits", action="store_true", help="time real digits PGD-AT epochs instead")
    return parser.parse_args(argv)


class GlobalOnlyTracker:
    """Stand-in for FlopCounterMode's ModuleTracker, whose hooks break ``autograd.grad`` on a leaf input
    (the PGD attack's; pytorch/pytorch#131753): totals only, no per-module attribution."""
    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = GlobalOnlyTracker()
    with counter:
        fn()
    return counter.get_total_flops()


def flop_model(cas: bool) -> dict:
    """Per-image forward FLOPs (analytic) and per-image FLOPs of one real PGD-10 training step (measured)."""
    generator = torch.Generator().manual_seed(0)
    model = build("resnet18", num_classes=10, in_channels=3, cas=cas).eval()
    with torch.no_grad():
        forward = count_flops(lambda: model(torch.rand(2, 3, 32, 32, generator=generator))) / 2
    config = make_config("cifar10", model="resnet18", method="pgd_at", cas=cas, attack_steps=10, device="cpu")
    x, y = torch.rand(4, 3, 32, 32, generator=generator), torch.randint(0, 10, (4,), generator=generator)
    step = count_flops(lambda: training_loss(model, x, y, config)[0].backward()) / len(y)
    return {"forward_per_image": forward, "analytic_epoch_50k": FORWARD_EQUIVALENTS * forward * CIFAR_TRAIN,
            "measured_step_per_image": step, "measured_epoch_50k": step * CIFAR_TRAIN,
            "measured_forward_equivalents": step / forward}


def random_cifar(n: int) -> data.Dataset:
    generator = torch.Generator().manual_seed(0)

    def split(size: int) -> data.Split:
        return data.Split(torch.rand(size, 3, 32, 32, generator=generator),
                          torch.randint(0, 10, (size,), generator=generator))
    return data.Dataset("random_cifar", split(n), split(16), split(16), list(data.CIFAR10_CLASSES))


def target_status(batch_size: int, seconds_50k: float, gpu: str | None, bf16: bool) -> str:
    if batch_size not in TARGETS_S:
        return "–"
    if gpu is None or "H100" not in gpu:
        return "n/a (not an H100)"
    if not bf16:
        return "n/a (amp off)"
    return verdict(seconds_50k <= TARGETS_S[batch_size])


def settings_line(args: argparse.Namespace, device: torch.device) -> str:
    return (f"Settings: device {device}, amp {args.amp} (bf16 {'on' if uses_bf16(args.amp, device) else 'off'}), "
            f"channels_last {args.channels_last} ({'on' if memory_format(args.channels_last, device) == torch.channels_last else 'off'}), "
            f"compile {args.compile}, cas {args.cas}")


def run_digits(args: argparse.Namespace, device: torch.device, payload: dict) -> None:
    ds = data.load("digits")
    config = make_config("digits", method="pgd_at", cas=args.cas, epochs=2, device=args.device, amp=args.amp,
                         channels_last=args.channels_last, compile=args.compile)
    _, history = train(config, dataset=ds, progress=False)
    first, second = history[0]["seconds"], history[1]["seconds"]
    print(f"\n## Digits PGD-AT epoch ({len(ds.train)} train images, batch {config.batch_size}, "
          f"{config.attack_steps} attack steps, small_cnn{' + CAS' if args.cas else ''}, incl. validation)\n")
    print(markdown_table(["device", "epoch 1 s (warm-up)", "epoch 2 s", "ms / image (epoch 2)"],
                         [[str(device), f"{first:.2f}", f"{second:.2f}", f"{1000 * second / len(ds.train):.2f}"]]))
    payload.update({"config": config.to_dict(), "n_train": len(ds.train), "epoch_seconds": [first, second]})


def run_cifar(args: argparse.Namespace, device: torch.device, gpu: str | None, payload: dict) -> None:
    flops = flop_model(args.cas)
    print("\n## FLOPs (FlopCounterMode, 2 FLOPs per multiply-add)\n")
    print(markdown_table(["quantity", "value"], [
        ["ResNet-18 forward per 3×32×32 image", f"{flops['forward_per_image'] / 1e9:.3f} GFLOP"],
        [f"analytic epoch, 50k images ({FORWARD_EQUIVALENTS} forward-equivalents)",
         f"{flops['analytic_epoch_50k'] / 1e15:.3f} PFLOP"],
        ["measured training step per image (PGD-10 + train fwd/bwd)",
         f"{flops['measured_step_per_image'] / 1e9:.2f} GFLOP"],
        ["measured epoch, 50k images", f"{flops['measured_epoch_50k'] / 1e15:.3f} PFLOP"],
        ["forward-equivalents implied by the measurement", f"{flops['measured_forward_equivalents']:.2f}"]]))
    n = args.n or (CIFAR_TRAIN if device.type == "cuda" else 512)
    ds, bf16 = random_cifar(n), uses_bf16(args.amp, device)
    floor_s = flops["analytic_epoch_50k"] / (args.peak_tflops * 1e12)
    rows, results = [], []
    for batch_size in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
        config = make_config("cifar10", model="resnet18", method="pgd_at", cas=args.cas, preset="fast", epochs=2,
                             batch_size=batch_size, attack_steps=10, val_examples=16, val_attack_steps=1,
                             device=args.device, amp=args.amp, channels_last=args.channels_last,
                             compile=args.compile)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _, history = train(config, dataset=ds, progress=False)
        seconds = history[1]["seconds"]
        memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        seconds_50k = seconds * CIFAR_TRAIN / n
        tflops = flops["measured_step_per_image"] * n / seconds / 1e12
        status = target_status(batch_size, seconds_50k, gpu, bf16)
        results.append({"batch_size": batch_size, "epoch_seconds": [h["seconds"] for h in history],
                        "seconds": seconds, "seconds_50k": seconds_50k, "achieved_tflops": tflops,
                        "ratio_to_floor": seconds_50k / floor_s, "max_memory_allocated": memory,
                        "target_s": TARGETS_S.get(batch_size), "target": status})
        rows.append([batch_size, f"{history[0]['seconds']:.2f}", f"{seconds:.2f}", f"{seconds_50k:.1f}",
                     f"{tflops:.2f}", f"{seconds_50k / floor_s:.1f}",
                     "–" if memory is None else f"{memory / 2**30:.2f}",
                     f"≤ {TARGETS_S[batch_size]:g} s: {status}" if batch_size in TARGETS_S else status])
    print(f"\n## PGD-10 AT epoch, ResNet-18{' + CAS' if args.cas else ''}, {n} random CIFAR-shaped images "
          f"(epoch 2 timed; augmentation and 16-image validation included)\n")
    print(markdown_table(["batch", "epoch 1 s (warm-up)", f"epoch 2 s ({n} img)", "s per 50k", "TFLOP/s",
                          "× floor", "peak GiB", "target (50k, H100 bf16)"], rows))
    print(f"\nFloor: {flops['analytic_epoch_50k'] / 1e15:.3f} PFLOP / {args.peak_tflops:g} TFLOP/s = {floor_s:.2f} s "
          "per 50k-image epoch. TFLOP/s uses the measured step FLOPs (fp32 count; bf16 does the same FLOPs).")
    payload.update({"flops": flops, "n": n, "floor_seconds_50k": floor_s, "peak_tflops": args.peak_tflops,
                    "bf16": bf16, "results": results})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    info = machine()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    title = "digits PGD-AT epoch" if args.digits else "PGD-10 AT epoch of ResNet-18 on CIFAR-shaped data"
    print(f"# gpu_epoch: {title}\n\n{machine_line(info)}" + (f"\nGPU: {gpu}" if gpu else ""))
    print(settings_line(args, device) + ("" if args.digits else f", batch sizes {args.batch_sizes}"))
    payload = {"machine": info, "gpu": gpu, "device": str(device), "settings": {
        "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile, "cas": args.cas,
        "batch_sizes": args.batch_sizes}}
    if args.digits:
        run_digits(args, device, payload)
    else:
        run_cifar(args, device, gpu, payload)
    path = write_json("gpu_epoch_digits" if args.digits else "gpu_epoch", payload)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
