"""Smoke runs of the benchmark and convergence tools (tiny inputs), and the
convergence summary on hand-made curves."""
import json
import os.path as osp

import pytest
from conftest import run_tool

from mmdet_cdetr.analysis.convergence import epochs_to_reach, summarise

OURS = 'configs/convergence/conditional_detr_r18_scratch.py'
BUILTIN = 'configs/convergence/mmdet_conditional_detr_r18_scratch.py'
DETR = 'configs/convergence/detr_r18_scratch.py'


def test_benchmark_smoke(tmp_path):
    out = tmp_path / 'bench.json'
    result = run_tool([
        'tools/analysis_tools/compare_detectors.py', '--models',
        f'ours={OURS}', f'mmdet-conditional-detr={BUILTIN}', '--batch-size',
        '1', '--train-size', '64', '64', '--infer-size', '64', '96',
        '--repeats', '2', '--warmup', '0', '--threads', '1', '--out',
        str(out)
    ])
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())['results']
    ours, builtin = results['ours'], results['mmdet-conditional-detr']
    for r in (ours, builtin):
        for step in ('train', 'train_th', 'infer'):
            assert len(r[step]['values']) == 2
            assert 0 < r[step]['min'] <= r[step]['median'] <= r[step]['max']
        assert 0 < r['flops_th'] < r['flops']
        assert 0 < r['params_th'] < r['params']
        assert r['peak_mem'] > 0
    # Same architecture, same parameter names: same counts.
    assert ours['params'] == builtin['params']
    # The baseline row is 1.00x of itself in every ratio column.
    row = next(line for line in result.stdout.splitlines()
               if line.startswith('| mmdet-conditional-detr |'))
    assert row.count('| 1.00x') == 4


def test_convergence_smoke(tmp_path, synthetic_root):
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
        'tools/analysis_tools/convergence.py', DETR, OURS, '--work-dir',
        str(work_dir), '--target-ap', '0.5', '--cfg-options'
    ] + options)
    assert result.returncode == 0, result.stderr
    summary = json.loads((work_dir / 'convergence.json').read_text())
    assert summary['reference'] == 'detr_r18_scratch'
    for name in ('detr_r18_scratch', 'conditional_detr_r18_scratch'):
        assert list(summary['curves'][name]) == ['1']
        assert 0 <= summary['models'][name]['final_ap'] <= 1
        assert f'| {name} | 1 |' in result.stdout
    assert (work_dir / 'ap.png').stat().st_size > 1000


def test_convergence_report_without_logs(tmp_path):
    result = run_tool([
        'tools/analysis_tools/convergence.py', DETR, OURS, '--skip-train',
        '--work-dir',
        str(tmp_path)
    ])
    assert result.returncode == 1
    assert result.stderr.startswith('error: no training log')


def test_epochs_to_reach_and_ratio():
    curves = {
        'detr': {
            2: (0.0, 0.0),
            4: (0.05, 0.1),
            6: (0.1, 0.3),
            8: (0.1, 0.3)
        },
        'cond': {
            2: (0.08, 0.3),
            4: (0.2, 0.5),
            6: (0.3, 0.6),
            8: (0.35, 0.7)
        },
    }
    assert epochs_to_reach(curves['cond'], 0.2) == 4
    assert epochs_to_reach(curves['detr'], 0.2) is None
    summary = summarise(curves, 'detr', targets=[0.3])
    assert summary['reference_final_ap'] == 0.1
    # DETR first reaches its final AP at epoch 6, ours at epoch 4.
    assert summary['models']['detr']['epochs_to_ap'] == {
        '0.100': 6,
        '0.300': None
    }
    assert summary['models']['cond']['epochs_to_ap']['0.100'] == 4
    assert summary['models']['cond']['ratio_vs_reference'] == pytest.approx(4 /
                                                                            6)
    assert summary['models']['cond']['best_ap'] == 0.35
