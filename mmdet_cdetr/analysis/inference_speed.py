"""Inference latency of one image, PyTorch and ONNX Runtime side by side.

Every candidate gets the same preprocessed image; timed runs are
interleaved across candidates after warm-up, so a change of machine load
hits all of them alike, and the table gives medians with the min-max
spread and each median's ratio to the first candidate's, of wall-clock time
and of CPU time.
"""
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch
from mmengine.runner.amp import autocast
from torch import Tensor, nn

from .benchmark import _timed


def pytorch_inference(model: nn.Module,
                      inputs: Tensor,
                      samples: list,
                      amp: bool = False) -> Callable[[], None]:
    """One ``mode='predict'`` forward of ``model`` on ``inputs``; with
    ``amp`` under autocast, as ``tools/test.py --amp`` runs it."""
    model.eval()

    def run() -> None:
        with torch.no_grad(), autocast(
                device_type=inputs.device.type, enabled=amp):
            model(inputs, samples, mode='predict')

    return run


def time_interleaved(
    candidates: Dict[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    device: torch.device = torch.device('cpu'),
    log: Optional[Callable[[str], None]] = None
) -> Dict[str, Dict[str, List[float]]]:
    """Wall-clock and process CPU seconds of each of ``repeats`` runs per
    candidate (after ``warmup`` untimed rounds), one run of every candidate
    per round.

    CPU time (all threads of this process) is the steadier number on a
    machine shared with other jobs: waiting for a core does not count.
    """
    times = {name: dict(wall=[], cpu=[]) for name in candidates}
    for rep in range(warmup + repeats):
        for name, run in candidates.items():
            cpu_start = time.process_time()
            wall = _timed(run, device)
            if rep >= warmup:
                times[name]['wall'].append(wall)
                times[name]['cpu'].append(time.process_time() - cpu_start)
        if log:
            log(f'round {rep + 1}/{warmup + repeats} done' +
                (' (warm-up)' if rep < warmup else ''))
    return times


def format_latency_table(times: Dict[str, Dict[str, List[float]]]) -> str:
    """Markdown table: wall-clock latency, median (min-max) ms, and CPU
    time, median ms, each with its ratio to the first candidate's."""
    medians = {
        name: {
            key: statistics.median(values)
            for key, values in runs.items()
        }
        for name, runs in times.items()
    }
    base = next(iter(medians.values()))
    rows = [
        '| runtime | latency ms, median (min-max) | vs first | '
        'CPU ms (all threads), median | vs first |', '|---|---|---|---|---|'
    ]
    for name, runs in times.items():
        wall, cpu = medians[name]['wall'], medians[name]['cpu']
        rows.append(
            f'| {name} | {wall * 1e3:.0f} ({min(runs["wall"]) * 1e3:.0f}'
            f'-{max(runs["wall"]) * 1e3:.0f}) | '
            f'{wall / base["wall"]:.2f}x | {cpu * 1e3:.0f} | '
            f'{cpu / base["cpu"]:.2f}x |')
    return '\n'.join(rows)
