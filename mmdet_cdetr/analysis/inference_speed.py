"""Inference latency of one image, PyTorch and ONNX Runtime side by side.

Every candidate gets the same preprocessed image; timed runs are
interleaved across candidates after warm-up, so a change of machine load
hits all of them alike, and the table gives medians with the min-max
spread and each median's ratio to the first candidate's.
"""
import statistics
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from .benchmark import _timed


def pytorch_inference(model: nn.Module, inputs: Tensor,
                      samples: list) -> Callable[[], None]:
    """One ``mode='predict'`` forward of ``model`` on ``inputs``."""
    model.eval()

    def run() -> None:
        with torch.no_grad():
            model(inputs, samples, mode='predict')

    return run


def time_interleaved(
        candidates: Dict[str, Callable[[], None]],
        repeats: int,
        warmup: int,
        device: torch.device = torch.device('cpu'),
        log: Optional[Callable[[str], None]] = None) -> Dict[str, List[float]]:
    """Seconds of each of ``repeats`` runs per candidate (after ``warmup``
    untimed rounds), one run of every candidate per round."""
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for rep in range(warmup + repeats):
        for name, run in candidates.items():
            elapsed = _timed(run, device)
            if rep >= warmup:
                times[name].append(elapsed)
        if log:
            log(f'round {rep + 1}/{warmup + repeats} done' +
                (' (warm-up)' if rep < warmup else ''))
    return times


def format_latency_table(times: Dict[str, List[float]]) -> str:
    """Markdown table: median (min-max) ms and the ratio of each median to
    the first candidate's."""
    medians = {
        name: statistics.median(values)
        for name, values in times.items()
    }
    base = next(iter(medians.values()))
    rows = [
        '| runtime | latency ms, median (min-max) | vs first |',
        '|---|---|---|'
    ]
    for name, values in times.items():
        rows.append(f'| {name} | {medians[name] * 1e3:.0f} '
                    f'({min(values) * 1e3:.0f}-{max(values) * 1e3:.0f}) | '
                    f'{medians[name] / base:.2f}x |')
    return '\n'.join(rows)
