"""Lottery tickets on LeNet-300-100 / MNIST: IMP with rewinding to θ₀ vs random reinit vs random pruning.

Protocol (Frankle & Carbin 2019, with a shorter training budget so that 3 seeds fit on 2 CPU cores):

* LeNet-300-100, real MNIST (50,000 train / 10,000 val / 10,000 test), Adam lr 1.2e-3, batch 60.
* Every training run (dense, each round's ticket, each control) gets the same budget: ``--epochs``
  epochs, 1 by default (834 iterations; the paper trains 50,000), so 3 seeds × 46 runs fit the session.
* 15 rounds, each pruning 20 % of the remaining weights of every hidden layer and 10 % of the output
  layer (per-layer magnitude), rewinding survivors to θ₀: after 10 rounds ≈ 10.8 % of the weights
  remain, after 15 ≈ 3.6 %.
* Controls in the same run: ``reinit`` = the ticket's masks on a fresh initialisation (another seed);
  ``random_prune`` = random masks with the ticket's per-layer sparsity, on θ₀.
* Accuracy = test accuracy at the early-stopping iteration (the evaluation, every 200 iterations and
  at the end, with the best validation accuracy), as in the paper; mean ± std over seeds 0, 1, 2.

Checks: ticket at round 10 ≥ dense − 0.5 points; ticket at round 15 ≥ reinit at round 15 + 1 point.
Checkpoints go to ``--checkpoints`` (default: the temp folder); re-running the command resumes them.

Usage::

    python bench/lottery_ticket.py            # full: 3 seeds × 46 runs (~35 min on a shared 2-core machine)
    python bench/lottery_ticket.py --quick    # ≤ 60 s: 5,000 training images, 3 rounds, 1 seed, 1 epoch
    python bench/lottery_ticket.py --json     # also print one JSON summary as the last line
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from prunekit.at_init_plots import lottery_summary, plot_lottery
from prunekit.data import load_mnist, subset
from prunekit.lottery import LotteryConfig, find_ticket
from prunekit.zoo import lenet_300_100

THREADS = 1  # small matmuls: one thread is as fast as two and leaves a core for the rest of the machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="≤ 60 s smoke run (not the reported numbers)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training run (full mode)")
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=Path(tempfile.gettempdir()) / "prunekit_bench_lottery",
        help="checkpoint folder (a re-run resumes from it)",
    )
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    train, val, test = load_mnist("train"), load_mnist("val"), load_mnist("test")
    if args.quick:
        train, val, test = subset(train, 5_000, 0), subset(val, 2_000, 0), subset(test, 2_000, 0)
        seeds, rounds, epochs = [0], 3, 1
    else:
        seeds, rounds, epochs = [0, 1, 2], 15, args.epochs
    tag = "lottery_quick" if args.quick else "lottery"
    start = time.perf_counter()
    results = []
    for seed in seeds:
        config = LotteryConfig(rounds=rounds, epochs=epochs, eval_every=200, seed=seed)
        folder = args.checkpoints / f"{tag}_epochs{epochs}_seed{seed}"
        results.append(find_ticket(lenet_300_100, train, val, test, config, folder, resume=True))
        print(f"seed {seed} done after {time.perf_counter() - start:.0f} s", flush=True)
    summary = lottery_summary(results)
    png = plot_lottery(summary, args.out / f"{tag}.png")
    checks = _checks(summary, rounds)
    _print_table(summary)
    document = {
        "bench": "lottery_ticket",
        "quick": args.quick,
        "model": "lenet_300_100",
        "dataset": "mnist",
        "epochs_per_run": epochs,
        "seeds": seeds,
        "threads": THREADS,
        "seconds": round(time.perf_counter() - start, 1),
        "dense_accuracy": summary["dense"]["mean"],
        **checks,
        "png": str(png),
        "rounds": summary["rounds"],
        "machine": platform.processor() or platform.machine(),
    }
    (args.out / f"{tag}.json").write_text(json.dumps(document, indent=1))
    if args.json:
        print(json.dumps(document))


def _checks(summary: dict, rounds: int) -> dict:
    dense = summary["dense"]["mean"]
    by_round = {r["round"]: r for r in summary["rounds"]}
    mid, last = by_round[min(10, rounds)], by_round[rounds]
    return {
        "ticket_round10_remaining": mid["remaining"],
        "ticket_round10_accuracy": mid["ticket"]["mean"],
        "ticket_round10_ge_dense_minus_0p5": mid["ticket"]["mean"] >= dense - 0.005,
        "last_round_remaining": last["remaining"],
        "last_round_ticket_accuracy": last["ticket"]["mean"],
        "last_round_reinit_accuracy": last["reinit"]["mean"],
        "last_round_random_prune_accuracy": last["random_prune"]["mean"],
        "ticket_beats_reinit_by_1pt": last["ticket"]["mean"] >= last["reinit"]["mean"] + 0.01,
    }


def _print_table(summary: dict) -> None:
    def cell(stats: dict) -> str:
        return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"

    print(f"dense: {cell(summary['dense'])} %")
    print("| round | remaining | ticket | reinit | random pruning | ticket early-stop iteration |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in summary["rounds"]:
        stop = r["ticket"]["early_stop_iteration"]["mean"]
        print(
            f"| {r['round']} | {100 * r['remaining']:.1f} % | {cell(r['ticket'])} | {cell(r['reinit'])} | "
            f"{cell(r['random_prune'])} | {stop:.0f} |"
        )


if __name__ == "__main__":
    main()
