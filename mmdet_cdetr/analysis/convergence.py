"""Convergence study: train detectors on one schedule, compare AP curves.

The paper's Fig. 1(b) at a size a CPU can run: each config is trained with
MMEngine's runner (its own work dir, validation every few epochs), the COCO
box AP of every validation is read back from the run's ``scalars.json``,
and the curves are compared by the number of epochs each model needs to
reach a given AP, above all the reference model's (DETR's) final AP.
"""
import os.path as osp
from concurrent.futures import ProcessPoolExecutor
from glob import glob
from multiprocessing import get_context
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmdet_cdetr.visualization.training_logs import read_json_lines

AP_KEY = 'coco/bbox_mAP'
AP50_KEY = 'coco/bbox_mAP_50'

# epoch -> (AP, AP50)
Curve = Dict[int, Tuple[float, float]]


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
                  cfg_options: Optional[dict] = None,
                  jobs: int = 1) -> None:
    """Train several configs, ``jobs`` at a time, each in a fresh process.

    Fresh processes keep MMEngine's global state (visualizer, logger,
    message hub) of one run out of the next. Running several side by side
    lets a time-boxed study stop with every model at the same epoch; the
    CPU threads are split between the jobs.
    """
    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(
            jobs, mp_context=get_context('spawn'),
            max_tasks_per_child=1) as pool:
        futures = [
            pool.submit(train_config, config, work_dir, cfg_options, threads)
            for config, work_dir in zip(configs, work_dirs)
        ]
        for future in futures:
            future.result()


def read_ap_curve(work_dir: str) -> Curve:
    """AP and AP50 per validated epoch from the newest run in ``work_dir``.

    Raises:
        FileNotFoundError: When the work dir holds no logged run.
    """
    runs = sorted(glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(
            f'no training log (*/vis_data/scalars.json) in {work_dir}')
    curve = {
        int(record['step']): (record[AP_KEY], record.get(AP50_KEY, 0.))
        for record in read_json_lines(runs[-1]) if AP_KEY in record
    }
    return dict(sorted(curve.items()))


def epochs_to_reach(curve: Curve, target: float) -> Optional[int]:
    """First validated epoch whose AP is at least ``target`` (None if
    never)."""
    for epoch, (ap, _) in curve.items():
        if ap >= target:
            return epoch
    return None


def summarise(curves: Dict[str, Curve],
              reference: str,
              targets: Iterable[float] = ()) -> dict:
    """Final/best AP per model and epochs to reach each target AP.

    The first target is always the reference model's final AP: the paper's
    claim is that Conditional DETR reaches DETR's final AP in a fraction of
    DETR's epochs. ``ratio_vs_reference`` divides a model's epochs to that
    AP by the reference model's own.
    """
    ref_final = list(curves[reference].values())[-1][0]
    all_targets = [ref_final] + [t for t in targets if t != ref_final]
    ref_epochs = epochs_to_reach(curves[reference], ref_final)
    models = {}
    for name, curve in curves.items():
        aps = [ap for ap, _ in curve.values()]
        reach = {f'{t:.3f}': epochs_to_reach(curve, t) for t in all_targets}
        own = reach[f'{ref_final:.3f}']
        models[name] = dict(
            final_epoch=list(curve)[-1],
            final_ap=aps[-1],
            final_ap50=list(curve.values())[-1][1],
            best_ap=max(aps),
            epochs_to_ap=reach,
            ratio_vs_reference=(None if own is None or not ref_epochs else
                                own / ref_epochs))
    return dict(
        reference=reference,
        reference_final_ap=ref_final,
        targets=all_targets,
        models=models,
        curves={
            name: {
                str(e): list(v)
                for e, v in curve.items()
            }
            for name, curve in curves.items()
        })


def format_table(summary: dict) -> str:
    """The summary as a markdown table."""
    targets = [f'{t:.3f}' for t in summary['targets']]
    header = ['model', 'final epoch', 'final AP', 'AP50', 'best AP'
              ] + [f'epochs to AP {t}'
                   for t in targets] + [f'ratio vs {summary["reference"]}']
    rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, m in summary['models'].items():
        reach = [str(m['epochs_to_ap'][t] or 'not reached') for t in targets]
        ratio = m['ratio_vs_reference']
        rows.append('| ' + ' | '.join([
            name,
            str(m['final_epoch']), f'{m["final_ap"]:.3f}',
            f'{m["final_ap50"]:.3f}', f'{m["best_ap"]:.3f}'
        ] + reach + ['-' if ratio is None else f'{ratio:.2f}']) + ' |')
    return '\n'.join(rows)


def plot_curves(curves: Dict[str, Curve],
                out_file: str,
                reference_ap: Optional[float] = None) -> None:
    """AP-vs-epoch plot of all curves (a small PNG for the README)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
    for name, curve in curves.items():
        ax.plot(
            list(curve), [ap for ap, _ in curve.values()],
            marker='o',
            markersize=3,
            label=name)
    if reference_ap is not None:
        ax.axhline(reference_ap, color='grey', linestyle=':', linewidth=1)
    ax.set_xlabel('epoch')
    ax.set_ylabel('box AP (val)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)


def model_names(configs: Sequence[str]) -> List[str]:
    """Short model names: the config file names without extension."""
    return [osp.splitext(osp.basename(config))[0] for config in configs]
