"""Every failure names itself (issue 41): errors we detect or translate end
in one ``error:`` line whatever exception carries them, faults during a run
are named, and the tools' outputs say what they skipped."""
import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import (QUICK_CONFIG, REPO, quick_cfg, run_tool_in_process,
                      write_config)
from mmengine.optim.scheduler import LinearLR

from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.datasets.transforms import load_image
from mmdet_cdetr.registry import MODELS, OPTIMIZERS
from mmdet_cdetr.utils import CheckpointError, InputNotFoundError


def _last_line(text):
    return text.strip().splitlines()[-1]


def _error(monkeypatch, capsys, tool, *args):
    """The tool's exit status and its last stderr line (the error). An
    exception the tool does not report would propagate out of here."""
    code, _, err = run_tool_in_process(monkeypatch, capsys, tool, *args)
    return code, _last_line(err)


# --- 1. One translation point: injected errors of each class ---


def _optimizer_error():
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=-1.)


def _optimizer_error_through_registry():
    OPTIMIZERS.build(
        dict(
            type='AdamW', lr=-1., params=[torch.zeros(1, requires_grad=True)]))


def _scheduler_error():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.)
    LinearLR(optimizer, begin=5, end=5)


def _our_message_as_user_error():
    raise InputNotFoundError('checkpoint not found: work/epoch_7.pth')


@pytest.mark.parametrize('inject, needle', [
    (_our_message_as_user_error, 'checkpoint not found: work/epoch_7.pth'),
    (_optimizer_error, 'optimizer argument (optim_wrapper.optimizer): '
     'Invalid learning rate: -1.0'),
    (_optimizer_error_through_registry, 'Invalid learning rate: -1.0'),
    (_scheduler_error, 'param_scheduler'),
])
def test_known_errors_are_one_line(capsys, monkeypatch, inject, needle):
    monkeypatch.delenv('MMDET_CDETR_TRACEBACK', raising=False)
    with pytest.raises(SystemExit) as stop:
        with report_user_errors():
            inject()
    assert stop.value.code == 1
    line = capsys.readouterr().err
    assert line.startswith('error: ') and needle in line, line
    assert line.count('\n') == 1


def _our_bug_value_error():
    raise ValueError('Invalid learning rate: our own bug')


def _our_bug_file_not_found():
    open('/nonexistent/dir/file')


@pytest.mark.parametrize('inject', [
    _our_bug_value_error, _our_bug_file_not_found,
    lambda: {}['bbox_head.fc_cls']
])
def test_our_bugs_keep_their_traceback(monkeypatch, inject):
    monkeypatch.delenv('MMDET_CDETR_TRACEBACK', raising=False)
    with pytest.raises((ValueError, FileNotFoundError, KeyError)):
        with report_user_errors():
            inject()


def test_resume_from_a_deleted_checkpoint(synthetic_root, tmp_path,
                                          monkeypatch, capsys):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_7.pth'))
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _error(monkeypatch, capsys, 'train.py', config, '--work-dir',
                        work_dir, '--resume')
    assert (code, line) == (1, 'error: checkpoint not found: '
                            f'{work_dir}/epoch_7.pth')


def test_missing_base_config(tmp_path, monkeypatch, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text("_base_ = './gone.py'\nx = 1\n")
    code, line = _error(monkeypatch, capsys, 'train.py', config)
    assert (code, line) == (1, f'error: config {config} names a base config '
                            f'that does not exist: {tmp_path}/gone.py (check '
                            'its _base_)')


# --- 2. Config and schedule values, named by key ---


@pytest.mark.parametrize('option, needle', [
    ('train_cfg.max_epochs=0',
     'error: train_cfg.max_epochs=0: must be a whole number >= 1'),
    ('optim_wrapper.optimizer.lr=-0.1',
     'error: optim_wrapper.optimizer.lr=-0.1: must be a number >= 0'),
])
def test_schedule_and_optimizer_values(synthetic_root, tmp_path, monkeypatch,
                                       capsys, option, needle):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _error(monkeypatch, capsys, 'train.py', config, '--work-dir',
                        tmp_path / 'work', '--cfg-options', option)
    assert (code, line) == (1, needle)
    assert not (tmp_path / 'work').exists()


def test_config_using_a_name_of_its_base(tmp_path, monkeypatch, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text(f"_base_ = '{QUICK_CONFIG}'\n\n"
                      'model = dict(num_queries=num_queries * 2)\n')
    code, line = _error(monkeypatch, capsys, 'train.py', config)
    assert code == 1
    assert line.startswith(f"error: config {config}, line 3: name "
                           "'num_queries' is not defined"), line
    assert '{{_base_.num_queries}}' in line


@pytest.mark.parametrize('tool, script', [('train.py', 'dist_train.sh'),
                                          ('test.py', 'dist_test.sh')])
def test_launcher_without_its_environment(tmp_path, monkeypatch, capsys, tool,
                                          script):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    args = [QUICK_CONFIG] + (['x.pth'] if tool == 'test.py' else [])
    code, line = _error(monkeypatch, capsys, tool, *args, '--launcher',
                        'pytorch')
    assert code == 1
    assert line.startswith('error: --launcher pytorch needs the environment '
                           'its launcher sets (RANK, WORLD_SIZE, MASTER_ADDR, '
                           'MASTER_PORT not set)'), line
    assert f'tools/{script}' in line


# --- 3. --resume of a finished run ---


@pytest.fixture
def finished_run(trained, tmp_path):
    """A copy of the 2-epoch run of ``trained`` (its checkpoints)."""
    work_dir = tmp_path / 'work'
    shutil.copytree(trained['work_dir'], work_dir)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))
    return trained['config'], work_dir


def test_resume_of_a_finished_run_says_so(finished_run, monkeypatch, capsys):
    config, work_dir = finished_run
    before = sorted(os.listdir(work_dir))
    code, out, err = run_tool_in_process(monkeypatch, capsys, 'train.py',
                                         config, '--work-dir', work_dir,
                                         '--resume')
    assert code == 0, err
    assert (f'--resume: the run has finished ({work_dir}/epoch_2.pth is at '
            'epoch 2 of train_cfg.max_epochs=2): nothing left to train'
            in out + err)
    assert [name for name in before if name.endswith('.pth')] == [
        name for name in sorted(os.listdir(work_dir)) if name.endswith('.pth')
    ]


def test_resume_past_the_end_of_the_schedule(finished_run, monkeypatch,
                                             capsys):
    config, work_dir = finished_run
    code, line = _error(monkeypatch, capsys, 'train.py', config, '--work-dir',
                        work_dir, '--resume', '--cfg-options',
                        'train_cfg.max_epochs=1')
    assert code == 1
    assert line.startswith(f'error: --resume: {work_dir}/epoch_2.pth is at '
                           'epoch 2, past the end of this schedule '
                           '(train_cfg.max_epochs=1)'), line


# --- 4. Divergence ---


def _train_only_config(path, synthetic_root, **overrides):
    """``write_config`` without validation (these tests look at training)."""
    return write_config(
        path,
        synthetic_root,
        val_dataloader='None',
        val_cfg='None',
        val_evaluator='None',
        **overrides)


def _poison_backbone(monkeypatch, after, action=None):
    """From the ``after``-th training forward on, the backbone's features
    are NaN (``action`` instead, if given, runs once at that call)."""
    from mmdet.models.backbones import ResNet
    forward, calls = ResNet.forward, []

    def poisoned(self, x):
        outs = forward(self, x)
        if self.training:
            calls.append(1)
            if len(calls) > after:
                if action is not None:
                    if len(calls) == after + 1:
                        action()
                    return outs
                return tuple(out * float('nan') for out in outs)
        return outs

    monkeypatch.setattr(ResNet, 'forward', poisoned)


def test_nan_cost_is_made_finite():
    from mmdet_cdetr.models.task_modules import finite_cost
    cost = torch.tensor([[1., float('nan')], [float('inf'), 2.]],
                        dtype=torch.float16)
    fixed = finite_cost(cost)
    assert torch.isfinite(fixed).all() and fixed.dtype == torch.float32
    assert fixed[0, 0] == 1 and fixed[1, 1] == 2 and fixed[0, 1] > 1e6
    finite = torch.ones(2, 2)
    assert finite_cost(finite) is finite


def test_non_finite_loss_terms_are_named():
    from mmdet_cdetr.engine.hooks.run_guard_hooks import non_finite_terms
    nan, one = torch.tensor(float('nan')), torch.tensor(1.)
    assert non_finite_terms(dict(loss=one, loss_cls=one)) == []
    assert non_finite_terms(
        dict(
            loss=nan,
            loss_cls=nan,
            loss_bbox=one,
            acc=nan,
            d0_loss_iou=float('inf'))) == ['loss_cls', 'd0_loss_iou', 'loss']


def test_divergence_in_float32_stops_naming_iteration_and_checkpoint(
        synthetic_root, tmp_path, monkeypatch, capsys):
    config = _train_only_config(tmp_path / 'cfg.py', synthetic_root)
    work_dir = tmp_path / 'work'
    _poison_backbone(monkeypatch, after=5)  # 4 iterations an epoch
    code, line = _error(monkeypatch, capsys, 'train.py', config, '--work-dir',
                        work_dir)
    assert code == 1
    assert line.startswith('error: training diverged at iteration 6 (epoch '
                           '2): loss not finite in '), line
    assert f'the last good checkpoint is {work_dir}/epoch_1.pth (kept' in line
    kept = torch.load(work_dir / 'epoch_1.pth', weights_only=False)
    assert all(
        torch.isfinite(value).all() for value in kept['state_dict'].values()
        if value.is_floating_point())
    assert not (work_dir / 'epoch_2.pth').exists()


def test_divergence_under_a_loss_scaler_skips_steps(synthetic_root, tmp_path,
                                                    monkeypatch, capsys):
    """``--amp`` on a GPU (mmengine's AmpOptimWrapper, a dynamic loss
    scale), emulated on the CPU: torch's CPU GradScaler, and no autocast
    (bf16 on this CPU is slow, and the scaler is what is tested)."""
    from mmengine.optim import OptimWrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        lambda **kwargs: torch.amp.GradScaler('cpu', **kwargs))
    monkeypatch.setattr(amp_optimizer_wrapper.AmpOptimWrapper, 'optim_context',
                        OptimWrapper.optim_context)
    config = _train_only_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        optim_wrapper="dict(type='AmpOptimWrapper', loss_scale='dynamic')")
    work_dir = tmp_path / 'work'
    _poison_backbone(monkeypatch, after=4)  # the whole second epoch
    code, out, err = run_tool_in_process(monkeypatch, capsys, 'train.py',
                                         config, '--work-dir', work_dir)
    assert code == 0, err[-3000:]
    log = out + err
    assert 'iteration 7: 3 steps in a row skipped by the loss scaler ' \
        '(non-finite ' in log
    assert 'the loss scaler skipped 4 of 8 training steps' in log
    saved = torch.load(work_dir / 'epoch_2.pth', weights_only=False)
    assert all(
        torch.isfinite(value).all() for value in saved['state_dict'].values()
        if value.is_floating_point())


# --- 5. Environment faults ---


def test_work_dir_removed_mid_run_is_recreated(synthetic_root, tmp_path,
                                               monkeypatch, capsys):
    config = _train_only_config(tmp_path / 'cfg.py', synthetic_root)
    work_dir = tmp_path / 'work'
    _poison_backbone(
        monkeypatch, after=5, action=lambda: shutil.rmtree(work_dir))
    code, out, err = run_tool_in_process(monkeypatch, capsys, 'train.py',
                                         config, '--work-dir', work_dir)
    assert code == 0, err[-3000:]
    assert f'work dir {work_dir} was removed while training ran: re-created ' \
        'it at iteration 6' in out + err
    assert (work_dir / 'epoch_2.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(
        work_dir / 'epoch_2.pth')


def test_dist_train_names_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(('', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            ['bash',
             str(REPO / 'tools/dist_train.sh'), QUICK_CONFIG, '1'],
            env=dict(os.environ, PORT=str(port), PYTHON=sys.executable),
            capture_output=True,
            text=True,
            timeout=120)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert _last_line(result.stderr) == (
        f'error: PORT={port} is in use on this machine (another run?): set '
        f'PORT to a free port (e.g. PORT={port + 1})')


# --- 6. Checkpoint formats ---


def _t(*shape):
    return torch.zeros(shape)


_CONDITIONAL_DECODER = {
    'transformer.decoder.ref_point_head.layers.0.weight': _t(1),
    'transformer.decoder.layers.0.ca_qpos_sine_proj.weight': _t(1),
}
_OFFICIAL = {
    'backbone.0.body.conv1.weight': _t(1),
    'class_embed.weight': _t(1),
    'query_embed.weight': _t(300, 1),
    **_CONDITIONAL_DECODER
}
_HF_CONDITIONAL = {
    'model.backbone.conv_encoder.model.conv1.weight': _t(1),
    'model.decoder.ref_point_head.layers.0.weight': _t(1),
    'model.query_position_embeddings.weight': _t(1),
    'class_labels_classifier.weight': _t(1),
}
_HF_DETR = {
    'model.backbone.conv_encoder.model.conv1.weight': _t(1),
    'model.decoder.layers.0.encoder_attn.k_proj.weight': _t(1),
    'model.query_position_embeddings.weight': _t(1),
    'class_labels_classifier.weight': _t(1),
}
_MMDET_CONDITIONAL = {
    'backbone.conv1.weight': _t(1),
    'decoder.ref_point_head.layers.0.weight': _t(1),
    'query_embedding.weight': _t(300, 256),
    'bbox_head.fc_cls.weight': _t(1),
}


@pytest.mark.parametrize('checkpoint, name, converter', [
    (dict(state_dict=_MMDET_CONDITIONAL,
          meta=dict()), 'mmdet', 'mmdet_zoo2mmdet.py'),
    (dict(
        state_dict=_MMDET_CONDITIONAL,
        meta=dict(cfg="default_scope = 'mmdet_cdetr'")), 'ours', None),
    (dict(model=_OFFICIAL, args=None), 'official', 'official2mmdet.py'),
    (dict(model={
        **_OFFICIAL, 'query_embed.weight': _t(3300, 1)
    }), 'official_group_detr', 'official2mmdet.py'),
    (_HF_CONDITIONAL, 'huggingface', 'huggingface2mmdet.py'),
    (_HF_DETR, 'detr', None),
    (dict(
        model={
            'backbone.0.body.conv1.weight': _t(1),
            'class_embed.weight': _t(1),
            'transformer.decoder.layers.0.multihead_attn.in_proj_weight': _t(1)
        }), 'detr', None),
    (dict(
        state_dict={
            'decoder.layers.0.self_attn.attn.in_proj_weight': _t(1),
            'bbox_head.fc_cls.weight': _t(1)
        }), 'detr', None),
    (dict(model={
        **_OFFICIAL, 'refpoint_embed.weight': _t(300, 4)
    }), 'dab_detr', None),
    (dict(state_dict={
        **_MMDET_CONDITIONAL, 'query_embedding.weight': _t(300, 4)
    }), 'dab_detr', None),
    (dict(state_dict={'w': _t(1)}), 'unknown', None),
])
def test_checkpoint_format_from_keys(checkpoint, name, converter):
    from mmdet_cdetr.converters.checkpoint_format import checkpoint_format
    found = checkpoint_format(checkpoint)
    assert (found.name, found.converter) == (name, converter)


def _official_checkpoint(path):
    torch.save(dict(model=_OFFICIAL, args=argparse.Namespace(lr=1e-4)), path)
    return path


def test_official_checkpoint_given_to_the_tools_is_named(
        synthetic_root, tmp_path, monkeypatch, capsys):
    """The tools convert official checkpoints as they load them; one that
    does not convert (this one has a single class logit) is named, and the
    zoo converter names the converter to use."""
    official = _official_checkpoint(tmp_path / 'official.pth')
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    described = (f'error: {official} is a checkpoint of the official '
                 'Conditional DETR repository (Atten4Vis/ConditionalDETR)')
    advice = (f'{described}: convert it first with python '
              'tools/model_converters/official2mmdet.py '
              f'{official} OUT.pth')
    not_converted = (f'{described}, which does not convert to this '
                     'project\'s names: the classifier has 1 logits')
    runs = [
        ('test.py', not_converted, config, official, '--work-dir',
         tmp_path / 'test'),
        ('model_converters/mmdet_zoo2mmdet.py', advice, official,
         tmp_path / 'o.pth'),
        ('deployment/pytorch2onnx.py', not_converted, config, official,
         '--out', tmp_path / 'm.onnx'),
    ]
    for tool, needle, *args in runs:
        code, line = _error(monkeypatch, capsys, tool, *args)
        assert code == 1 and line.startswith(needle), (tool, line)
    loads_it = write_config(
        tmp_path / 'load.py', synthetic_root, load_from=repr(str(official)))
    code, line = _error(monkeypatch, capsys, 'train.py', loads_it,
                        '--work-dir', tmp_path / 'work')
    assert code == 1 and line.startswith(not_converted), line
    assert not (tmp_path / 'o.pth').exists()


def test_huggingface_detr_is_named(tmp_path, monkeypatch, capsys):
    folder = tmp_path / 'detr-resnet-50'
    folder.mkdir()
    torch.save(_HF_DETR, folder / 'pytorch_model.bin')
    (folder / 'config.json').write_text('{"model_type": "detr"}')
    code, line = _error(monkeypatch, capsys,
                        'model_converters/huggingface2mmdet.py', folder,
                        tmp_path / 'out.pth')
    assert (code, line) == (
        1, f'error: {folder}/pytorch_model.bin is a DETR checkpoint of '
        'HuggingFace transformers, not Conditional DETR: no config of this '
        'project builds that model')


def test_truncated_checkpoint_given_to_pytorch2onnx(tmp_path, monkeypatch,
                                                    capsys):
    model = MODELS.build(quick_cfg().model)
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict=model.state_dict()), good)
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    code, line = _error(monkeypatch, capsys, 'deployment/pytorch2onnx.py',
                        QUICK_CONFIG, bad, '--out', tmp_path / 'm.onnx')
    assert code == 1
    assert line.startswith(f'error: checkpoint {bad} is truncated'), line


def test_mmdet_names_of_another_model_say_which(tmp_path):
    from mmdet_cdetr.utils.checkpoint_file import check_checkpoint_fits
    model = MODELS.build(quick_cfg().model)
    detr = tmp_path / 'detr.pth'
    torch.save(
        dict(
            state_dict={
                'decoder.layers.0.self_attn.attn.in_proj_weight': _t(3, 1),
                'bbox_head.fc_cls.weight': _t(4, 1)
            }), detr)
    with pytest.raises(
            CheckpointError,
            match=f'checkpoint {detr} does not fit the model of this config '
            r"\(a DETR checkpoint in MMDetection's names\)"):
        check_checkpoint_fits(model, str(detr))


def test_official_formats_are_only_converted(tmp_path):
    from mmdet_cdetr.converters import checkpoint_format as formats
    from mmdet_cdetr.converters import load_official
    official = _official_checkpoint(tmp_path / 'official.pth')
    assert set(load_official(str(official))) == set(_OFFICIAL)
    mmdet = tmp_path / 'mmdet.pth'
    torch.save(dict(state_dict=_MMDET_CONDITIONAL, meta={}), mmdet)
    with pytest.raises(CheckpointError, match='loads as it is'):
        load_official(str(mmdet))
    assert formats.OFFICIAL.converter == 'official2mmdet.py'


# --- 7. tools/image_demo.py ---


@pytest.fixture
def demo_inputs(trained, synthetic_root, tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    for path in sorted((REPO / synthetic_root / 'val').iterdir())[:2]:
        shutil.copy(path, folder / path.name)
    (folder / 'broken.jpg').write_bytes(b'not an image at all')
    return folder


def test_image_demo_skips_unreadable_images(trained, demo_inputs, tmp_path,
                                            monkeypatch, capsys):
    out_dir = tmp_path / 'out'
    args = [
        trained['config'], '--weights', trained['work_dir'] / 'epoch_2.pth',
        '--device', 'cpu', '--out-dir'
    ]
    code, _, err = run_tool_in_process(monkeypatch, capsys, 'image_demo.py',
                                       demo_inputs, *args, out_dir)
    assert code == 1
    assert 'Traceback' not in err
    broken = demo_inputs / 'broken.jpg'
    assert f'warning: skipping {broken}: not a readable image' in err
    assert _last_line(err) == (
        f'error: 1 of 3 images could not be read and were skipped ({broken}); '
        f'the other 2 are drawn in {out_dir}/vis')
    assert len(list((out_dir / 'vis').iterdir())) == 2
    empty = tmp_path / 'empty'
    empty.mkdir()
    code, line = _error(monkeypatch, capsys, 'image_demo.py', empty, *args,
                        out_dir)
    assert code == 1 and line.startswith(f'error: no images in {empty}')
    a_file = tmp_path / 'a_file'
    a_file.write_text('mine')
    code, line = _error(monkeypatch, capsys, 'image_demo.py', demo_inputs,
                        *args, a_file)
    assert (code, line) == (1, f'error: --out-dir {a_file} is a file, not a '
                            'directory: choose another output directory')
    assert a_file.read_text() == 'mine'


# --- 8. Damaged JPEGs are named ---


def _damaged_jpeg(path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode('.jpg', image)[1].tobytes())
    middle = len(data) // 2
    data[middle:middle + 200] = rng.integers(
        0, 255, 200, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_damaged_jpeg_is_named(tmp_path, monkeypatch, capfd):
    damaged = _damaged_jpeg(tmp_path / 'scrambled.jpg')
    messages = []
    monkeypatch.setattr(
        load_image, 'print_log', lambda message, **kwargs: messages.append(
            (message, kwargs)))
    loader = load_image.CheckedLoadImageFromFile()
    for _ in range(2):
        loaded = loader.transform(dict(img_path=str(damaged)))
        assert loaded['img'].shape == (64, 64, 3)
    assert loader.damaged == 2
    (message, kwargs), = messages  # the first, then every tenfold
    assert message.startswith('1 damaged JPEG image(s) decoded anyway in '
                              f'this process (latest: {damaged}: Corrupt '
                              'JPEG data'), message
    assert kwargs['level'] == logging.WARNING
    assert 'Corrupt JPEG' not in capfd.readouterr().err  # not anonymously
    strict = load_image.CheckedLoadImageFromFile(refuse_damaged=True)
    with pytest.raises(
            load_image.DamagedImageError, match=f'image {damaged} is damaged'):
        strict.transform(dict(img_path=str(damaged)))


def test_sound_jpeg_is_not_reported(tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr(load_image, 'print_log',
                        lambda message, **kwargs: messages.append(message))
    path = tmp_path / 'sound.jpg'
    path.write_bytes(
        cv2.imencode('.jpg', np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    loaded = load_image.CheckedLoadImageFromFile().transform(
        dict(img_path=str(path)))
    assert loaded['img'].shape == (32, 32, 3) and messages == []
