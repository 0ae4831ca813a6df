"""Training curves and timing from MMEngine's json scalar logs.

MMEngine writes ``work_dir/<timestamp>/vis_data/<timestamp>.json``, one
json object a line: training lines carry ``epoch`` and the global ``iter``
(every ``logger.interval`` iterations); validation lines carry the metrics
(``coco/bbox_mAP``, ...) and ``step``, which is the epoch in epoch-based
training. The lines do not say how many iterations an epoch has, so it is
estimated from them (exact once a logged iteration falls in the last
logging interval of an epoch).
"""
import json
import math
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from mmdet_cdetr.utils.errors import ArgumentError


@dataclass
class ScalarLog:
    """The scalars of one training run.

    Attributes:
        name: Label of the run in plots.
        train: Training records, each with an added ``epoch_x``: the
            position in epochs (``iter / iters_per_epoch``).
        val: Validation records, each with an added ``epoch_x``: the epoch.
        iters_per_epoch: Estimated iterations per epoch.
    """
    name: str
    train: List[dict]
    val: List[dict]
    iters_per_epoch: int


def run_name(path: str) -> str:
    """``work_dirs/NAME/<timestamp>/vis_data/<timestamp>.json`` -> NAME, as
    the work dir names the run; other paths -> the file name."""
    parts = osp.normpath(osp.abspath(path)).split(osp.sep)
    if len(parts) >= 4 and parts[-2] == 'vis_data':
        return parts[-4]
    return osp.splitext(parts[-1])[0]


def read_json_lines(path: str) -> List[dict]:
    """The records of an MMEngine json log (``vis_data/*.json``), one json
    object a line."""
    with open(path, encoding='utf-8') as log_file:
        return [json.loads(line) for line in log_file if line.strip()]


def load_scalar_log(path: str, name: Optional[str] = None) -> ScalarLog:
    """Read an MMEngine json scalar log of an epoch-based training."""
    train, val = [], []
    for record in read_json_lines(path):
        if 'epoch' in record and 'iter' in record:
            train.append(record)
        elif 'step' in record:
            val.append(dict(record, epoch_x=record['step']))
    if not train:
        raise ArgumentError(
            f'{path} has no training records with "epoch" and "iter": '
            'expected the vis_data/<timestamp>.json scalar log of an '
            'epoch-based MMEngine training')
    iters_per_epoch = max(
        math.ceil(record['iter'] / record['epoch']) for record in train)
    for record in train:
        record['epoch_x'] = record['iter'] / iters_per_epoch
    return ScalarLog(name or run_name(path), train, val, iters_per_epoch)


def scalar_series(log: ScalarLog, key: str) -> Tuple[str, List[dict], bool]:
    """The full key matching ``key``, the records holding it and whether
    they are validation records.

    ``key`` matches a training scalar (``loss``, ``loss_cls``, ``lr``,
    ...) or, failing that, a validation metric by its name with or without
    the evaluator's prefix (``bbox_mAP`` or ``coco/bbox_mAP``).
    """
    for records, is_val in ((log.train, False), (log.val, True)):
        keys = sorted({k for record in records for k in record})
        found = [k for k in keys if k == key
                 ] or [k for k in keys if k.endswith('/' + key)]
        if len(found) > 1:
            raise ArgumentError(
                f'{key!r} is ambiguous in the log of {log.name}: '
                f'{", ".join(found)}')
        if found:
            return found[0], [r for r in records if found[0] in r], is_val
    available = sorted({k
                        for r in log.train + log.val
                        for k in r} - {'epoch', 'iter', 'step', 'epoch_x'})
    raise ArgumentError(f'no {key!r} in the log of {log.name}; it has: '
                        f'{", ".join(available)}')


def plot_curves(logs: Sequence[ScalarLog],
                keys: Sequence[str],
                out_file: str,
                title: Optional[str] = None) -> None:
    """One panel per key against the epoch, the runs overlaid; validation
    metrics are drawn with markers (one point per evaluation)."""
    fig = Figure(figsize=(7, 2.6 * len(keys) + 0.4))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        for log in logs:
            full_key, records, is_val = scalar_series(log, key)
            ax.plot([r['epoch_x'] for r in records],
                    [r[full_key] for r in records],
                    marker='o' if is_val else None,
                    linewidth=1.5 if is_val else 1.0,
                    label=log.name)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel('epoch')
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)


def train_time_summary(log: ScalarLog,
                       include_outliers: bool = False) -> Dict[str, float]:
    """Seconds per training iteration: mean per epoch, the slowest and
    fastest epoch, the spread over epochs and an estimate of the total.

    The first record of each epoch includes the data loader's start-up and
    is left out unless ``include_outliers`` (as in mmdet's tool).
    """
    times: Dict[int, List[float]] = {}
    for record in log.train:
        times.setdefault(record['epoch'], []).append(record['time'])
    if not include_outliers:
        times = {e: t[1:] for e, t in times.items() if len(t) > 1}
    if not times:
        raise ArgumentError(
            f'{log.name}: every epoch has a single timing record; log more '
            'often (default_hooks.logger.interval) or pass '
            '--include-outliers')
    epochs = sorted(times)
    means = np.array([np.mean(times[e]) for e in epochs])
    mean_iter = float(np.mean(np.concatenate([times[e] for e in epochs])))
    num_epochs = max(r['epoch'] for r in log.train)
    return dict(
        slowest_epoch=epochs[int(means.argmax())],
        slowest_time=float(means.max()),
        fastest_epoch=epochs[int(means.argmin())],
        fastest_time=float(means.min()),
        std_over_epochs=float(means.std()),
        mean_iter_time=mean_iter,
        epochs=num_epochs,
        total_hours=mean_iter * log.iters_per_epoch * num_epochs / 3600)
