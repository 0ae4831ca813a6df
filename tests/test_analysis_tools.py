"""Smoke runs of the benchmark and convergence tools (tiny inputs), and the
convergence summary on hand-made curves."""
import json
import os.path as osp

import pytest
from conftest import REPO, run_tool

from mmdet_cdetr.analysis.benchmark import STEPS, paired_ratios
from mmdet_cdetr.analysis.convergence import (epochs_to_reach, format_table,
                                              summarise, training_minutes)

OURS = 'configs/convergence/conditional_detr_r18_scratch.py'
BUILTIN = 'configs/convergence/mmdet_conditional_detr_r18_scratch.py'
DETR = 'configs/convergence/detr_r18_scratch.py'
GROUP = 'configs/convergence/group_conditional_detr_r18_scratch.py'


def test_benchmark_smoke(tmp_path):
    """Ours with its speed-ups on and off, and mmdet's built-in, in float32
    and --amp; every ratio pairs the repetitions of one round."""
    out = tmp_path / 'bench.json'
    builtin_plain = tmp_path / 'builtin.py'
    builtin_plain.write_text(f"_base_ = '{REPO / BUILTIN}'\n"
                             "custom_hooks = [h for h in _base_.custom_hooks "
                             "if h['type'] != 'SpeedUpHook']\n")
    result = run_tool([
        'tools/analysis_tools/compare_detectors.py', '--models',
        f'ours={OURS}', f'mmdet-conditional-detr={builtin_plain}',
        '--batch-size', '1', '--train-size', '64', '64', '--infer-size', '64',
        '96', '--repeats', '2', '--warmup', '0', '--threads', '1', '--amp',
        '--out',
        str(out)
    ])
    assert result.returncode == 0, result.stderr
    measured = json.loads(out.read_text())
    results = measured['results']
    ours, builtin = results['ours'], results['mmdet-conditional-detr']
    assert set(results) == {
        'ours', 'ours+amp', 'ours-no-speedups', 'ours-no-speedups+amp',
        'mmdet-conditional-detr', 'mmdet-conditional-detr+amp'
    }
    assert measured['setting']['speedups'] == {
        'ours': True,
        'ours-no-speedups': False,
        'mmdet-conditional-detr': False
    }
    assert ('CPU speed-ups applied: folded_batch_norms, channels_last, '
            'fast_dropout') in (result.stdout + result.stderr)
    for r in (ours, builtin):
        for step in STEPS:
            assert len(r[step]['values']) == 2
            assert 0 < r[step]['min'] <= r[step]['median'] <= r[step]['max']
        assert 0 < r['flops_th'] < r['flops']
        assert 0 < r['params_th'] < r['params']
        assert r['peak_mem'] >= 0  # 0 where the step reuses freed memory
        assert r['train_forward_flops'] > 0
    # Same architecture, same parameter names: same counts.
    assert ours['params'] == builtin['params']
    # The baseline row is 1.00x of itself in every ratio column.
    row = next(line for line in result.stdout.splitlines()
               if line.startswith('| mmdet-conditional-detr |'))
    assert row.count('| 1.00x') == 4
    vs_baseline = measured['vs_baseline']
    assert 'mmdet-conditional-detr' not in vs_baseline
    ratio = vs_baseline['ours']['infer']
    assert ratio['values'] == pytest.approx([
        a / b
        for a, b in zip(ours['infer']['values'], builtin['infer']['values'])
    ])
    ours_row = next(line for line in result.stdout.splitlines()
                    if line.startswith('| ours | ') and line.count('|') == 5)
    assert f'| {ratio["median"]:.2f} (' in ours_row
    assert set(measured['amp_time_ratios']) == {
        'ours', 'ours-no-speedups', 'mmdet-conditional-detr'
    }


def test_convergence_smoke(tmp_path, synthetic_root):
    """DETR and Group-Conditional DETR, one epoch on a seed of our choice:
    the per-seed runs, the mean-and-range table and the banded plot (the
    statistics over several seeds: ``test_summary_over_seeds``)."""
    ann = osp.join(synthetic_root, 'annotations/instances_val.json')
    options = [
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        f'train_dataloader.dataset.data_root={synthetic_root}',
        f'val_dataloader.dataset.data_root={synthetic_root}',
        f'val_evaluator.ann_file={ann}', 'train_dataloader.batch_size=4',
        'train_dataloader.dataset.indices=8',
        'val_dataloader.dataset.indices=8', 'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False'
    ]
    work_dir = tmp_path / 'study'
    result = run_tool([
        'tools/analysis_tools/convergence.py', DETR, GROUP, '--work-dir',
        str(work_dir), '--seeds', '7', '--target-ap', '0.5', '--cfg-options'
    ] + options)
    assert result.returncode == 0, result.stderr
    summary = json.loads((work_dir / 'convergence.json').read_text())
    assert summary['reference'] == 'detr_r18_scratch'
    reference_ap = f"{summary['reference_final_ap']:.3f}"
    minutes = summary['models']['detr_r18_scratch']['minutes_to_ap']
    assert minutes[reference_ap]['mean'] > 0  # from the logged step times
    for name in ('detr_r18_scratch', 'group_conditional_detr_r18_scratch'):
        assert list(summary['curves'][name]) == ['7']
        assert list(summary['curves'][name]['7']) == ['1']
        final = summary['models'][name]['final_ap']
        assert 0 <= final['min'] == final['mean'] == final['max'] <= 1
        assert f'| {name} | 1 | 1 |' in result.stdout
        config = next((work_dir / name / 'seed7').glob('*/vis_data/config.py'))
        assert 'seed=7' in config.read_text().replace(' ', '')
    assert (work_dir / 'ap.png').stat().st_size > 1000


def test_convergence_report_without_logs(tmp_path):
    result = run_tool([
        'tools/analysis_tools/convergence.py', DETR, OURS, '--skip-train',
        '--work-dir',
        str(tmp_path)
    ])
    assert result.returncode == 1
    assert result.stderr.startswith('error: no training log')


def test_summary_over_seeds():
    curves = {
        'detr': {
            0: {
                2: (0.0, 0.0, 2.0),
                4: (0.05, 0.1, 4.0),
                6: (0.1, 0.3, 6.0),
                8: (0.1, 0.3, 8.0)
            },
            1: {
                2: (0.0, 0.0, 2.0),
                4: (0.1, 0.1, 4.0),
                6: (0.14, 0.3, 6.0),
                8: (0.14, 0.3, 8.0)
            },
        },
        'cond': {
            0: {
                2: (0.08, 0.3, 3.0),
                4: (0.2, 0.5, 6.0),
                6: (0.3, 0.6, 9.0),
                8: (0.35, 0.7, 12.0)
            },
            1: {
                2: (0.2, 0.3, 3.0),
                4: (0.25, 0.5, 6.0),
                6: (0.28, 0.6, 9.0),
                8: (0.33, 0.7, 12.0)
            },
        },
    }
    assert epochs_to_reach(curves['cond'][0], 0.2) == 4
    assert epochs_to_reach(curves['detr'][0], 0.2) is None
    summary = summarise(curves, 'detr', targets=[0.3])
    # DETR's final AP: the mean over its seeds
    assert summary['reference_final_ap'] == pytest.approx(0.12)
    detr, cond = summary['models']['detr'], summary['models']['cond']
    # seed 0 never reaches 0.12, seed 1 at epoch 6
    assert detr['epochs_to_ap']['0.120'] == dict(
        mean=6, min=6, max=6, reached=1)
    assert cond['epochs_to_ap']['0.120'] == dict(
        mean=3, min=2, max=4, reached=2)
    assert cond['epochs_to_ap']['0.300'] == dict(
        mean=7, min=6, max=8, reached=2)
    assert detr['epochs_to_ap']['0.300'] == dict(reached=0)
    # 1.5 training minutes an epoch: epochs 2 and 4 to DETR's final AP
    assert cond['minutes_to_ap']['0.120'] == pytest.approx(
        dict(mean=4.5, min=3, max=6))
    assert detr['minutes_to_ap']['0.300'] is None
    assert cond['ratio_vs_reference'] == pytest.approx(3 / 6)
    assert cond['final_ap'] == pytest.approx(
        dict(mean=0.34, min=0.33, max=0.35))
    # DETR's mean AP did not rise over its last quarter (epochs 6 to 8)
    assert summary['reference_last_gain'] == pytest.approx(0)
    table = format_table(summary)
    assert '| cond | 2 | 8 | 0.340 (0.330-0.350) |' in table
    assert '6.0 (6.0-6.0) [1/2 seeds]' in table
    assert '| 4.5 (3.0-6.0) |' in table


def test_training_minutes_sum_the_logged_iteration_times():
    records = [
        dict(time=0.5, epoch=1, iter=10, step=10),
        dict(time=1.0, epoch=1, iter=20, step=20),
        {
            'coco/bbox_mAP': 0.1,
            'step': 1
        },  # validation: not training time
        dict(time=2.0, epoch=2, iter=35, step=35),
    ]
    assert training_minutes(records) == pytest.approx({
        1: (5 + 10) / 60,
        2: (5 + 10 + 30) / 60
    })


def test_paired_ratios_pair_the_repetitions_of_one_round():
    """A load that slows both rows in the second and third rounds leaves
    each round's ratio at 0.5; the medians' ratio would say 0.18."""
    slow, fast = [1.0, 3.0, 3.2], [0.5, 1.5, 0.55]
    results = {
        'slow': {
            step: dict(values=slow)
            for step in STEPS
        },
        'fast': {
            step: dict(values=fast)
            for step in STEPS
        },
    }
    ratios = paired_ratios(results, 'fast', 'slow')
    for step in STEPS:
        ratio = ratios[step]
        assert ratio['values'] == pytest.approx([0.5, 0.5, 0.55 / 3.2])
        assert ratio['median'] == pytest.approx(0.5)
        assert ratio['min'] == pytest.approx(0.55 / 3.2)
