"""Smoke runs of the benchmark and convergence tools (tiny inputs), and the
convergence summary on hand-made curves."""
import json
import mmap
import os.path as osp

import pytest
import torch
from conftest import run_tool

from mmdet_cdetr.analysis import machine_peak, page_faults
from mmdet_cdetr.analysis.benchmark import STEPS, amp_speedups
from mmdet_cdetr.analysis.convergence import (epochs_to_reach, format_table,
                                              summarise, training_minutes)
from mmdet_cdetr.ops.processor_info import cpuinfo_fields

OURS = 'configs/convergence/conditional_detr_r18_scratch.py'
BUILTIN = 'configs/convergence/mmdet_conditional_detr_r18_scratch.py'
DETR = 'configs/convergence/detr_r18_scratch.py'
GROUP = 'configs/convergence/group_conditional_detr_r18_scratch.py'


def test_benchmark_smoke(tmp_path):
    out = tmp_path / 'bench.json'
    result = run_tool([
        'tools/analysis_tools/compare_detectors.py', '--models',
        f'ours={OURS}', f'mmdet-conditional-detr={BUILTIN}', '--batch-size',
        '1', '--train-size', '64', '64', '--infer-size', '64', '96',
        '--repeats', '2', '--warmup', '0', '--threads', '1', '--amp', '--out',
        str(out)
    ])
    assert result.returncode == 0, result.stderr
    measured = json.loads(out.read_text())
    results, peaks = measured['results'], measured['peaks']
    ours, builtin = results['ours'], results['mmdet-conditional-detr']
    assert set(results) == {
        'ours', 'ours+amp', 'mmdet-conditional-detr',
        'mmdet-conditional-detr+amp'
    }
    for precision in ('float32', 'bfloat16'):
        assert peaks[precision] == max(peaks[precision + '_conv'],
                                       peaks[precision + '_gemm']) > 0
    assert 'float32 peak:' in result.stdout
    processor = measured['setting']['processor']
    assert processor.startswith('cpu: ') and processor in result.stdout
    for name, r in results.items():
        peak = peaks['bfloat16' if name.endswith('+amp') else 'float32']
        assert r['peak_gflops'] == peak
        for step in ('train', 'infer'):
            assert r[f'{step}_of_peak'] == pytest.approx(r[f'{step}_gflops'] /
                                                         peak)
            assert 0 < r[f'{step}_of_peak'] < 2
        assert r['train_forward_flops'] > 0
    for r in (ours, builtin):
        for step in ('train', 'train_th', 'infer'):
            assert len(r[step]['values']) == 2
            assert 0 < r[step]['min'] <= r[step]['median'] <= r[step]['max']
            assert r[step]['page_faults'] >= 0
        assert 0 < r['flops_th'] < r['flops']
        assert 0 < r['params_th'] < r['params']
        assert r['peak_mem'] > 0
    # Same architecture, same parameter names: same counts.
    assert ours['params'] == builtin['params']
    # The baseline row is 1.00x of itself in every ratio column.
    row = next(line for line in result.stdout.splitlines()
               if line.startswith('| mmdet-conditional-detr |'))
    assert row.count('| 1.00x') == 4
    assert 'page faults train / infer' in result.stdout
    speedups = measured['amp_speedups']
    assert set(speedups) == {'ours', 'mmdet-conditional-detr'}
    for name, steps in speedups.items():
        for step, ratio in steps.items():
            plain = results[name][step]['values']
            reduced = results[name + '+amp'][step]['values']
            assert ratio['values'] == pytest.approx(
                [a / b for a, b in zip(plain, reduced)])
            assert ratio['min'] <= ratio['median'] <= ratio['max']
        speedup_row = next(
            line for line in result.stdout.splitlines()
            if line.startswith(f'| {name} | ') and line.count('|') == 5)
        assert f'{steps["infer"]["median"]:.2f}x (' in speedup_row
    train_faults = builtin['train']['page_faults'] / 1e3
    assert f'| {train_faults:.1f}k / ' in row
    if measured['page_fault_seconds'] is None:
        # An allocator that keeps freed memory (README: MALLOC_MMAP_MAX_=0)
        # leaves nothing to time.
        assert 'minor page fault' not in result.stdout
    else:
        fault_us = measured['page_fault_seconds'] * 1e6
        assert 0 < fault_us < 1000
        assert f'minor page fault: {fault_us:.2f} us' in result.stdout


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


def test_amp_speedup_pairs_the_repetitions_of_one_round():
    """A load that slows both precisions in the second and third rounds
    leaves each round's ratio at 2x; the medians' ratio would say 5.5x."""
    plain, reduced = [1.0, 3.0, 3.2], [0.5, 1.5, 0.55]
    results = {
        'm': {
            step: dict(values=plain)
            for step in STEPS
        },
        'm+amp': {
            step: dict(values=reduced)
            for step in STEPS
        },
        'alone': {
            step: dict(values=plain)
            for step in STEPS
        },
    }
    speedups = amp_speedups(results)
    assert set(speedups) == {'m'}
    for step in STEPS:
        ratio = speedups['m'][step]
        assert ratio['values'] == pytest.approx([2.0, 2.0, 3.2 / 0.55])
        assert ratio['median'] == pytest.approx(2.0)
        assert ratio['max'] == pytest.approx(3.2 / 0.55)


def test_peaks_are_the_higher_of_before_and_after(monkeypatch):
    calls = []
    measured = iter([
        dict(float32=100., float32_conv=100., float32_gemm=80.),
        dict(float32=90., float32_conv=70., float32_gemm=90.),
    ])

    def fake_measure(device):
        calls.append('peak')
        return next(measured)

    def run():
        calls.append('run')
        return 'timings'

    monkeypatch.setattr(machine_peak, 'measure_peaks', fake_measure)
    result, peaks = machine_peak.measure_peaks_around(run, 'cpu')
    assert calls == ['peak', 'run', 'peak']
    assert result == 'timings'
    assert peaks == dict(float32=100., float32_conv=100., float32_gemm=90.)


def test_processor_description_names_the_cpu_and_its_vector_width(
        tmp_path, monkeypatch):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\ncpu family\t: 23\nmodel\t\t: 1\n'
                       'model name\t: AMD EPYC\nprocessor\t: 1\n'
                       'model name\t: other\n')
    fields = cpuinfo_fields(('model name', 'cpu family', 'model'),
                            str(cpuinfo))
    assert fields == {
        'cpu family': '23',
        'model': '1',
        'model name': 'AMD EPYC'
    }
    assert cpuinfo_fields(('model', ), str(tmp_path / 'absent')) == {}
    monkeypatch.setattr(machine_peak, 'cpuinfo_fields', lambda keys: fields)
    monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability',
                        lambda: 'AVX2')
    assert machine_peak.describe_processor('cpu') == (
        f'cpu: AMD EPYC, family 23 model 1, AVX2, '
        f'{torch.get_num_threads()} threads')


@pytest.mark.skipif(
    page_faults.minor_page_faults() is None,
    reason='this platform does not count page faults')
def test_page_faults_count_first_touches_of_fresh_memory():
    """Writing fresh memory faults its pages in, writing it again does not:
    the counter the benchmark reports sees what the profiler cannot. An
    anonymous mapping is fresh whatever allocator the process uses."""
    size, chunk = 64 * 2**20, b'\1' * 2**20

    def fill(memory: mmap.mmap) -> int:
        before = page_faults.minor_page_faults()
        memory.seek(0)
        for _ in range(size // len(chunk)):
            memory.write(chunk)
        return page_faults.minor_page_faults() - before

    with mmap.mmap(-1, size) as memory:
        first, second = fill(memory), fill(memory)
    # One fault per 4 KiB page (fewer with huge pages), none the second time.
    assert first >= size // 2**21
    assert second < first / 10
    cost = page_faults.page_fault_seconds(repeats=3)
    assert cost is None or 0 < cost < 1e-3
