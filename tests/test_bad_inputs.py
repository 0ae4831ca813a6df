"""Bad input ends in one line that names the file, key or shapes."""
import os
import runpy
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import (QUICK_CONFIG, REPO, assert_clean_error, quick_cfg,
                      run_tool, run_tool_in_process, tiny_loader, write_config)
from mmengine.config import Config

from mmdet_cdetr.cli import apply_resume, check_cfg_options, report_user_errors
from mmdet_cdetr.cli import resume as resume_module
from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils import CheckpointError, ConfigError
from mmdet_cdetr.utils.checkpoint_file import check_checkpoint_fits


@pytest.fixture
def data_copy(synthetic_root, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    return root


def _train(config, tmp_path):
    return run_tool([
        'tools/train.py', config, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=1'
    ])


def test_missing_image(data_copy, tmp_path):
    missing = sorted((data_copy / 'train').iterdir())[0]
    missing.unlink()
    config = write_config(
        tmp_path / 'cfg.py',
        str(data_copy),
        train_dataloader=tiny_loader(shuffle=False))
    assert_clean_error(
        _train(config, tmp_path), 'Image not found', str(missing),
        'instances_train.json')


def test_unreadable_annotation_file(data_copy, tmp_path):
    ann = data_copy / 'annotations/instances_train.json'
    ann.write_text('{"images": [ broken')
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    assert_clean_error(
        _train(config, tmp_path), 'Cannot read COCO annotation file', str(ann))


def test_missing_annotation_file(data_copy, tmp_path):
    ann = data_copy / 'annotations/instances_train.json'
    ann.unlink()
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    assert_clean_error(
        _train(config, tmp_path), 'annotation file not found', str(ann))


def test_unknown_component(synthetic_root, tmp_path):
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        model="dict(bbox_head=dict(type='NoSuchHead'))")
    assert_clean_error(_train(config, tmp_path), 'NoSuchHead', 'registry')


def test_checkpoint_with_other_class_count(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    assert _train(config, tmp_path).returncode == 0
    loader = tiny_loader('metainfo=metainfo')
    two = write_config(
        tmp_path / 'two.py',
        synthetic_root,
        metainfo="dict(classes=('square', 'circle'))",
        val_dataloader=loader,
        test_dataloader='val_dataloader',
        model='dict(bbox_head=dict(num_classes=2))')
    result = run_tool([
        'tools/test.py', two,
        str(tmp_path / 'work/epoch_1.pth'), '--eval', 'bbox'
    ])
    assert_clean_error(result, 'bbox_head.fc_cls.weight', '(3, 128)',
                       '(2, 128)')


def test_missing_checkpoint(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    result = run_tool([
        'tools/test.py', config,
        str(tmp_path / 'nope.pth'), '--eval', 'bbox'
    ])
    assert_clean_error(result, 'checkpoint not found', 'nope.pth')


# --- Long runs: checkpoints, work dir, config (in-process: no start-up) ---


def _run_in_process(monkeypatch, capsys, tool, *args):
    """``tools/<tool>`` with ``args`` in this process: its exit status and
    the last line it wrote to stderr."""
    code, _, err = run_tool_in_process(monkeypatch, capsys, tool, *args)
    return code, err.strip().splitlines()[-1]


@pytest.fixture
def good_checkpoint(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save(dict(state_dict=dict(w=torch.arange(4096.))), path)
    return path


@pytest.mark.parametrize('damage, needle', [
    (lambda data: data[:len(data) // 2], 'is truncated'),
    (lambda data: b'', 'is empty (0 bytes)'),
    (lambda data: b'\0' + os.urandom(len(data)), 'is not a valid PyTorch'),
])
def test_damaged_checkpoint(synthetic_root, tmp_path, good_checkpoint,
                            monkeypatch, capsys, damage, needle):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(damage(good_checkpoint.read_bytes()))
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'test.py', config, bad,
                                 '--work-dir', tmp_path / 'work')
    assert code == 1
    assert line.startswith(f'error: checkpoint {bad} {needle}') or \
        line.startswith(f'error: {bad} {needle}')


def test_empty_last_checkpoint(synthetic_root, tmp_path, monkeypatch, capsys):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text('\n')
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config,
                                 '--work-dir', work_dir, '--resume')
    assert code == 1
    assert line.startswith(f'error: {work_dir}/last_checkpoint is empty')


def test_work_dir_that_is_not_writable(synthetic_root, tmp_path, monkeypatch,
                                       capsys):
    (tmp_path / 'file').write_text('')
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config,
                                 '--work-dir', tmp_path / 'file/work')
    assert code == 1
    assert line == (f'error: cannot create work dir {tmp_path}/file/work: '
                    'Not a directory')


@pytest.mark.parametrize('option, needle', [
    ('trian_cfg.max_epochs=1', "the config has no 'trian_cfg' under the top "
     "level; did you mean 'train_cfg'? (to add a new key write "
     '+trian_cfg.max_epochs=...)'),
    ('train_cfg.max_epoch=1', "no 'max_epoch' under train_cfg; did you mean "
     "'max_epochs'?"),
    ('model.bbox_head.num_clases=2', "no 'num_clases' under model.bbox_head"),
    ('train_cfg.max_epochs=ten', "train_cfg.max_epochs='ten': needs a number "
     '(the config has 2)'),
])
def test_cfg_options_key_must_exist_with_a_fitting_value(
        synthetic_root, tmp_path, monkeypatch, capsys, option, needle):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config,
                                 '--work-dir', tmp_path / 'work',
                                 '--cfg-options', option)
    assert code == 1
    assert line.startswith(f'error: --cfg-options {option.split("=")[0]}')
    assert needle in line, line


def test_cfg_options_new_key_is_explicit():
    cfg = Config(dict(model=dict(type='X', layers=[dict(a=1)])))
    options = check_cfg_options(cfg, {
        '+model.extra': 3,
        'model.layers.0.a': 2,
        '+new_top_level': 'x'
    })
    assert options == {
        'model.extra': 3,
        'model.layers.0.a': 2,
        'new_top_level': 'x'
    }
    with pytest.raises(ConfigError, match="no '1' under model.layers"):
        check_cfg_options(cfg, {'model.layers.1.a': 2})
    # The runner's own arguments are known where the config omits them.
    assert check_cfg_options(cfg, {'randomness.seed': 0}) == {
        'randomness.seed': 0
    }


def test_config_path_that_is_a_directory_or_missing(tmp_path, monkeypatch,
                                                    capsys):
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', tmp_path)
    assert (code, line) == (1, f'error: config {tmp_path} is a directory, '
                            'not a config file (give the .py file)')
    code, line = _run_in_process(monkeypatch, capsys, 'test.py',
                                 tmp_path / 'nope.py', tmp_path / 'x.pth')
    assert (code, line) == (1, f'error: config not found: {tmp_path}/nope.py')


def test_config_with_a_syntax_error(synthetic_root, tmp_path, monkeypatch,
                                    capsys):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    with open(config, 'a') as f:
        f.write('model = dict(num_queries=10,,)\n')
    lines = open(config).read().count('\n')
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config)
    assert code == 1
    assert line.startswith(
        f'error: syntax error in config {config}, line {lines}: ')
    # In a base config, the base is named.
    child = tmp_path / 'child.py'
    child.write_text("_base_ = './cfg.py'\n")
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', child)
    assert code == 1
    assert line.startswith(
        f'error: syntax error in config {config}, line {lines}: ')


# --- Checkpoints of another model, resume, overwriting ---


def _checkpoint_of(path, **model_overrides):
    """A checkpoint (weights only) of the quick-start model, changed."""
    cfg = quick_cfg()
    cfg.model.update(model_overrides)
    model = MODELS.build(cfg.model)
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


def test_checkpoint_of_another_model_is_named_with_its_differences(tmp_path):
    model = MODELS.build(quick_cfg().model)
    check_checkpoint_fits(model, str(_checkpoint_of(tmp_path / 'same.pth')))
    classes = _checkpoint_of(
        tmp_path / 'classes.pth', bbox_head=dict(num_classes=5))
    check_checkpoint_fits(model, str(classes))  # the head's message
    queries = _checkpoint_of(tmp_path / 'queries.pth', num_queries=7)
    with pytest.raises(
            CheckpointError,
            match=f'checkpoint {queries} does not fit the model of this '
            r'config .*: query_embedding.weight \(7, 128\) in the '
            r'checkpoint, \(20, 128\) in the model'):
        check_checkpoint_fits(model, str(queries))
    state = dict(model.state_dict())
    state['class_embed.weight'] = state.pop('bbox_head.fc_cls.weight')
    other = tmp_path / 'other.pth'
    torch.save(dict(state_dict=state), other)
    with pytest.raises(
            CheckpointError,
            match=r'1 missing keys \(bbox_head.fc_cls.weight\); 1 '
            r'unexpected keys \(class_embed.weight\)'):
        check_checkpoint_fits(model, str(other))


def test_test_and_resume_refuse_a_checkpoint_of_another_config(
        synthetic_root, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    queries = _checkpoint_of(tmp_path / 'queries.pth', num_queries=7)
    needle = (f'error: checkpoint {queries} does not fit the model of this '
              'config')
    for tool, *args in (('test.py', queries), ('train.py', '--resume',
                                               queries)):
        code, line = _run_in_process(monkeypatch, capsys, tool, config, *args,
                                     '--work-dir', tmp_path / 'work')
        assert code == 1 and line.startswith(needle), line
        assert 'query_embedding.weight (7, 128)' in line


class _Evil:

    def __reduce__(self):
        return (eval, ('1 + 1', ))


def test_refused_pickle_of_load_from_names_the_file(synthetic_root, tmp_path,
                                                    monkeypatch, capsys):
    evil = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, meta=_Evil()), evil)
    config = write_config(
        tmp_path / 'cfg.py', synthetic_root, load_from=repr(str(evil)))
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config,
                                 '--work-dir', tmp_path / 'work')
    assert code == 1
    assert line.startswith(f'error: refused to load checkpoint {evil}: ')
    assert 'eval' in line


def test_resume_says_what_becomes_of_load_from(tmp_path, monkeypatch):
    notes = []
    monkeypatch.setattr(resume_module, 'print_log',
                        lambda message, **kwargs: notes.append(message))
    work_dir = tmp_path / 'work'
    work_dir.mkdir()

    def resumed(resume):
        cfg = Config(dict(load_from='start.pth', work_dir=str(work_dir)))
        apply_resume(cfg, resume)
        return cfg.resume, cfg.load_from

    # Nothing to resume yet: start from load_from (not from scratch).
    assert resumed('auto') == (False, 'start.pth')
    assert 'has no checkpoint to resume from; starting a new run from '\
        'load_from=start.pth' in notes[-1]
    (work_dir / 'last_checkpoint').write_text('epoch_1.pth')
    assert resumed('auto') == (True, None)
    assert "load_from=start.pth (where the run started) is not loaded" in \
        notes[-1]
    assert resumed('epoch_1.pth') == (True, 'epoch_1.pth')
    assert "--resume epoch_1.pth: the config's load_from=start.pth is not "\
        'loaded' in notes[-1]
    assert len(notes) == 3


def test_no_tool_overwrites_its_input_or_a_checkpoint(tmp_path, monkeypatch,
                                                      capsys):
    source = _checkpoint_of(tmp_path / 'epoch_2.pth')
    original = source.read_bytes()
    code, line = _run_in_process(monkeypatch, capsys,
                                 'model_converters/publish_model.py', source,
                                 source)
    assert (code, line) == (1, f'error: output {source} is the input '
                            f'{source}: choose another output file')
    code, line = _run_in_process(monkeypatch, capsys,
                                 'model_converters/mmdet_zoo2mmdet.py', source,
                                 source)
    assert (code, line) == (1, f'error: output {source} is the input '
                            f'{source}: choose another output file')
    existing = tmp_path / 'existing.pth'
    existing.write_bytes(b'mine')
    code, line = _run_in_process(monkeypatch, capsys,
                                 'model_converters/publish_model.py', source,
                                 existing)
    assert (code, line) == (1, f'error: output {existing} exists: pass '
                            '--force to overwrite it, or choose another name')
    assert source.read_bytes() == original
    assert existing.read_bytes() == b'mine'


# --- Arguments out of range ---


def test_export_shape_out_of_range(tmp_path, monkeypatch, capsys):
    code, line = _run_in_process(monkeypatch, capsys,
                                 'deployment/pytorch2onnx.py', QUICK_CONFIG,
                                 '--out', tmp_path / 'm.onnx', '--shape', 16,
                                 800)
    assert (code, line) == (1, 'error: --shape 16 800: height and width must '
                            'be at least 32 pixels (the backbone downsamples '
                            'by 32)')


@pytest.mark.parametrize('env, count, needle', [
    ({}, '0', "the process count (GPUS) must be a whole number >= 1, got '0'"),
    ({}, 'two', 'must be a whole number >= 1'),
    (dict(NNODES='2', NODE_RANK='2'), '2', 'NODE_RANK=2 must be below '
     'NNODES=2'),
])
def test_launcher_counts_out_of_range(env, count, needle):
    result = subprocess.run(
        ['bash',
         str(REPO / 'tools/dist_train.sh'), QUICK_CONFIG, count],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60)
    assert result.returncode == 1
    (line, ) = result.stderr.strip().splitlines()
    assert line.startswith('error: ') and needle in line


# --- Only the errors we name are one line ---


def test_internal_errors_keep_their_traceback(monkeypatch, capsys):
    for internal in (ValueError('cost matrix is infeasible'),
                     KeyError('bbox_head.fc_cls'), FileNotFoundError(2, 'x')):
        with pytest.raises(type(internal)):
            with report_user_errors():
                raise internal
    with pytest.raises(SystemExit) as stop:
        with report_user_errors():
            raise ConfigError('bad value')
    assert stop.value.code == 1
    assert capsys.readouterr().err == 'error: bad value\n'


def test_injected_matching_failure_keeps_its_traceback(synthetic_root,
                                                       tmp_path, monkeypatch):
    """scipy's error from deep inside a training step is a bug to debug, not
    a user error: it reaches the caller as it was raised."""
    from mmdet.models.task_modules.assigners import hungarian_assigner

    def infeasible(cost):
        raise ValueError('cost matrix is infeasible')

    monkeypatch.setattr(hungarian_assigner, 'linear_sum_assignment',
                        infeasible)
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    monkeypatch.setattr(sys, 'argv', [
        'train.py', config, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=1'
    ])
    monkeypatch.delenv('MMDET_CDETR_TRACEBACK', raising=False)
    with pytest.raises(ValueError, match='cost matrix is infeasible'):
        runpy.run_path(str(REPO / 'tools/train.py'), run_name='__main__')
