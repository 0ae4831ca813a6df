"""Convergence study: train detectors on one schedule, compare AP curves.

The paper's Fig. 1(b) at a size a CPU can run: each config is trained with
MMEngine's runner once per seed (its own work dir, validation every few
epochs), the COCO box AP of every validation is read back from the run's
``scalars.json``, and the models are compared by the number of epochs they
need to reach a given AP, above all the reference model's (DETR's) final AP,
and by the training minutes that took (the iterations' logged times summed
up to the end of that epoch: validation and start-up not counted, so models
trained on one machine compare by their steps' speed). One seed per model
cannot tell differences of a few hundredths of AP from the run-to-run
spread, so every number is a mean over seeds with its range.
"""
import os.path as osp
import statistics
from glob import glob
from itertools import zip_longest
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmdet_cdetr.utils.errors import InputNotFoundError, UserError
from mmdet_cdetr.visualization.training_logs import read_json_lines

AP_KEY = 'coco/bbox_mAP'
AP50_KEY = 'coco/bbox_mAP_50'

# epoch -> (AP, AP50, training minutes to the end of the epoch or None)
Curve = Dict[int, Tuple[float, float, Optional[float]]]
# seed -> curve
SeedCurves = Dict[int, Curve]


def train_config(config: str,
                 work_dir: str,
                 cfg_options: Optional[dict] = None,
                 num_threads: Optional[int] = None) -> str:
    """Train one config into ``work_dir``; returns ``work_dir``."""
    if num_threads:
        torch.set_num_threads(num_threads)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir
    Runner.from_cfg(cfg).train()
    return work_dir


def train_configs(configs: Sequence[str],
                  work_dirs: Sequence[str],
                  cfg_options: Sequence[Optional[dict]] = (),
                  jobs: int = 1) -> None:
    """Train several configs, ``jobs`` at a time, each in a fresh process
    (``cfg_options[i]`` overrides settings of ``configs[i]``).

    Fresh processes keep MMEngine's global state (visualizer, logger,
    message hub) of one run out of the next. Running several side by side
    lets a time-boxed study stop with every model at the same epoch; the
    CPU threads are split between the jobs.
    """
    threads = max(1, torch.get_num_threads() // jobs)
    waiting = list(zip_longest(configs, work_dirs, cfg_options))[::-1]
    running: List[Tuple[BaseProcess, str]] = []
    context = get_context('spawn')
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                config, work_dir, options = waiting.pop()
                process = context.Process(
                    target=train_config,
                    args=(config, work_dir, options, threads))
                process.start()
                running.append((process, config))
            wait([process.sentinel for process, _ in running])
            for process, config in list(running):
                if process.exitcode is None:
                    continue
                running.remove((process, config))
                if process.exitcode:
                    raise UserError(f'training {config} failed (exit code '
                                    f'{process.exitcode}; its error is '
                                    'above); the other runs were stopped')
    finally:
        # A failed run, Ctrl-C or the tool's SIGTERM ends the others too.
        for process, _ in running:
            process.terminate()
            process.join()


def run_work_dir(study_dir: str, model: str, seed: int) -> str:
    """Work dir of one seed's run of a model."""
    return osp.join(study_dir, model, f'seed{seed}')


def read_ap_curve(work_dir: str) -> Curve:
    """AP, AP50 and training minutes per validated epoch from the newest run
    in ``work_dir``.

    Raises:
        FileNotFoundError: When the work dir holds no logged run.
    """
    runs = sorted(glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise InputNotFoundError(
            f'no training log (*/vis_data/scalars.json) in {work_dir}')
    records = list(read_json_lines(runs[-1]))
    minutes = training_minutes(records)
    curve = {
        int(record['step']):
        (record[AP_KEY], record.get(AP50_KEY,
                                    0.), minutes.get(int(record['step'])))
        for record in records if AP_KEY in record
    }
    return dict(sorted(curve.items()))


def training_minutes(records: Iterable[dict]) -> Dict[int, float]:
    """Training minutes up to the end of each epoch, from the training
    records of a ``scalars.json``: each record's ``time`` (seconds per
    iteration, averaged since the record before) times the iterations since
    that record."""
    seconds, last_iter, by_epoch = 0., 0, {}
    for record in records:
        if 'time' in record and 'epoch' in record and 'iter' in record:
            seconds += record['time'] * (record['iter'] - last_iter)
            last_iter = record['iter']
            by_epoch[int(record['epoch'])] = seconds / 60
    return by_epoch


def epochs_to_reach(curve: Curve, target: float) -> Optional[int]:
    """First validated epoch whose AP is at least ``target`` (None if
    never)."""
    for epoch, (ap, *_) in curve.items():
        if ap >= target:
            return epoch
    return None


def minutes_to_reach(curve: Curve, target: float) -> Optional[float]:
    """Training minutes to the first epoch whose AP is at least ``target``
    (None if never, or if the run logged no times)."""
    epoch = epochs_to_reach(curve, target)
    return None if epoch is None else curve[epoch][2]


def spread(values: Sequence[float]) -> Optional[dict]:
    """Mean, min and max of ``values`` (None when empty)."""
    if not values:
        return None
    return dict(
        mean=statistics.fmean(values), min=min(values), max=max(values))


def mean_curve(seed_curves: SeedCurves) -> Dict[int, dict]:
    """AP spread over seeds at each epoch every seed validated."""
    epochs = set.intersection(*(set(c) for c in seed_curves.values()))
    return {
        epoch: spread([curve[epoch][0] for curve in seed_curves.values()])
        for epoch in sorted(epochs)
    }


def summarise(curves: Dict[str, SeedCurves],
              reference: str,
              targets: Iterable[float] = ()) -> dict:
    """Final AP, and epochs and training minutes to reach each target AP per
    model, as the mean and range over its seeds.

    The first target is always the reference model's final AP (mean over
    its seeds): the paper's claim is that Conditional DETR reaches DETR's
    final AP in a fraction of DETR's epochs. ``ratio_vs_reference`` divides
    a model's mean epochs to that AP by the reference model's own. An
    epochs-to-AP spread covers the seeds that reached the AP (``reached``
    counts them). ``reference_last_gain`` is how much the reference's mean
    AP still rose over the last quarter of its epochs: near 0 when it has
    plateaued.
    """
    ref_final = statistics.fmean(
        list(curve.values())[-1][0] for curve in curves[reference].values())
    all_targets = [ref_final] + [t for t in targets if t != ref_final]
    models = {}
    for name, seed_curves in curves.items():
        reach, reach_minutes = {}, {}
        for target in all_targets:
            epochs = [epochs_to_reach(c, target) for c in seed_curves.values()]
            reached = [e for e in epochs if e is not None]
            reach[f'{target:.3f}'] = dict(
                spread(reached) or {}, reached=len(reached))
            minutes = [
                m for m in (minutes_to_reach(c, target)
                            for c in seed_curves.values()) if m is not None
            ]
            reach_minutes[f'{target:.3f}'] = spread(minutes)
        models[name] = dict(
            seeds=list(seed_curves),
            final_epoch=max(list(c)[-1] for c in seed_curves.values()),
            final_ap=spread(
                [list(c.values())[-1][0] for c in seed_curves.values()]),
            final_ap50=spread(
                [list(c.values())[-1][1] for c in seed_curves.values()]),
            best_ap=spread([
                max(ap for ap, *_ in c.values()) for c in seed_curves.values()
            ]),
            epochs_to_ap=reach,
            minutes_to_ap=reach_minutes)
    ref_epochs = models[reference]['epochs_to_ap'][f'{ref_final:.3f}']
    for model in models.values():
        own = model['epochs_to_ap'][f'{ref_final:.3f}']
        model['ratio_vs_reference'] = (
            own['mean'] / ref_epochs['mean']
            if own.get('mean') and ref_epochs.get('mean') else None)
    ref_curve = mean_curve(curves[reference])
    epochs = list(ref_curve)
    # the last validation at or before 3/4 of the schedule
    three_quarters = max([e for e in epochs if e <= epochs[-1] * 3 / 4],
                         default=epochs[0])
    return dict(
        reference=reference,
        reference_final_ap=ref_final,
        reference_last_gain=ref_curve[epochs[-1]]['mean'] -
        ref_curve[three_quarters]['mean'],
        targets=all_targets,
        models=models,
        curves={
            name: {
                str(seed): {
                    str(e): list(v)
                    for e, v in curve.items()
                }
                for seed, curve in seed_curves.items()
            }
            for name, seed_curves in curves.items()
        })


def _cell(values: Optional[dict], fmt: str) -> str:
    if not values or 'mean' not in values:
        return 'not reached'
    return (f'{values["mean"]:{fmt}} ({values["min"]:{fmt}}-'
            f'{values["max"]:{fmt}})')


def format_table(summary: dict) -> str:
    """The summary as a markdown table: mean (min-max) over seeds."""
    targets = [f'{t:.3f}' for t in summary['targets']]
    reach_columns = [f'epochs to AP {t}' for t in targets]
    minute_columns = [f'training minutes to AP {t}' for t in targets]
    header = [
        'model', 'seeds', 'final epoch', 'final AP', 'AP50'
    ] + reach_columns + minute_columns + [f'ratio vs {summary["reference"]}']
    rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, m in summary['models'].items():
        reach = []
        for t in targets:
            cell = _cell(m['epochs_to_ap'][t], '.1f')
            reached = m['epochs_to_ap'][t]['reached']
            if 0 < reached < len(m['seeds']):
                cell += f' [{reached}/{len(m["seeds"])} seeds]'
            reach.append(cell)
        minutes = [_cell(m['minutes_to_ap'][t], '.1f') for t in targets]
        ratio = m['ratio_vs_reference']
        rows.append('| ' + ' | '.join([
            name,
            str(len(m['seeds'])),
            str(m['final_epoch']),
            _cell(m['final_ap'], '.3f'),
            _cell(m['final_ap50'], '.3f')
        ] + reach + minutes + ['-' if ratio is None else f'{ratio:.2f}']) +
                    ' |')
    return '\n'.join(rows)


def plot_curves(curves: Dict[str, SeedCurves],
                out_file: str,
                reference_ap: Optional[float] = None) -> None:
    """AP against epochs: the mean over seeds with a min-max band."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    for name, seed_curves in curves.items():
        curve = mean_curve(seed_curves)
        epochs = list(curve)
        line, = ax.plot(
            epochs, [v['mean'] for v in curve.values()],
            marker='o',
            markersize=2.5,
            label=f'{name} ({len(seed_curves)} seed'
            f'{"s" if len(seed_curves) > 1 else ""})')
        ax.fill_between(
            epochs, [v['min'] for v in curve.values()],
            [v['max'] for v in curve.values()],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0)
    if reference_ap is not None:
        ax.axhline(reference_ap, color='grey', linestyle=':', linewidth=1)
    ax.set_xlabel('epoch')
    ax.set_ylabel('box AP (val), mean and min-max')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)


def model_names(configs: Sequence[str]) -> List[str]:
    """Short model names: the config file names without extension."""
    return [osp.splitext(osp.basename(config))[0] for config in configs]
