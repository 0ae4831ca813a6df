"""The launch scripts' command lines, with stub ``srun`` and ``python``
executables that record their arguments."""
import os
import shutil
import subprocess

import pytest
from conftest import REPO

RECORDER = '#!/bin/sh\nprintf "%s\\n" "$0" "$@" > "$RECORD"\n'


def _executable(path, text=RECORDER):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def checkout(tmp_path):
    """The launch scripts in a checkout of their own, stubs on PATH."""
    root = tmp_path / 'repo'
    shutil.copytree(
        REPO / 'tools',
        root / 'tools',
        ignore=shutil.ignore_patterns('*.py', '__pycache__'))
    bin_dir = tmp_path / 'bin'
    _executable(bin_dir / 'srun')
    _executable(bin_dir / 'python')
    return root


def _launch(checkout, script, *args, **env):
    record = checkout.parent / 'record'
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ('PYTHON', 'GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK',
                     'SRUN_ARGS', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT')
    }
    environ.update(
        env,
        RECORD=str(record),
        PATH=f'{checkout.parent / "bin"}:{os.environ["PATH"]}')
    subprocess.run([str(checkout / 'tools' / script), *args],
                   env=environ,
                   check=True,
                   timeout=60)
    return record.read_text().splitlines()


def test_slurm_train_command_line(checkout):
    argv = _launch(
        checkout,
        'slurm_train.sh',
        'gpu-part',
        'cdetr',
        'configs/x.py',
        'work_dirs/x',
        '--resume',
        '--cfg-options',
        'train_cfg.max_epochs=3',
        GPUS='16',
        GPUS_PER_NODE='8',
        CPUS_PER_TASK='4',
        SRUN_ARGS='--quotatype=auto --time=72:00:00',
        PYTHON='/opt/py/bin/python')
    assert argv == [
        str(checkout.parent / 'bin/srun'), '-p', 'gpu-part',
        '--job-name=cdetr', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1',
        '--quotatype=auto', '--time=72:00:00', '/opt/py/bin/python', '-u',
        str(checkout / 'tools/train.py'), 'configs/x.py', '--work-dir',
        'work_dirs/x', '--resume', '--cfg-options', 'train_cfg.max_epochs=3',
        '--launcher', 'slurm'
    ]


def test_slurm_test_defaults_and_venv_python(checkout):
    venv_python = _executable(checkout / '.venv/bin/python')
    argv = _launch(checkout, 'slurm_test.sh', 'p', 'job', 'c.py', 'e.pth',
                   '--eval', 'bbox')
    assert argv == [
        str(checkout.parent / 'bin/srun'), '-p', 'p', '--job-name=job',
        '--gres=gpu:8', '--ntasks=8', '--ntasks-per-node=8',
        '--cpus-per-task=5', '--kill-on-bad-exit=1',
        str(venv_python), '-u',
        str(checkout / 'tools/test.py'), 'c.py', 'e.pth', '--eval', 'bbox',
        '--launcher', 'slurm'
    ]


def _torchrun(python,
              checkout,
              script,
              nproc,
              *args,
              nnodes=1,
              rank=0,
              addr='127.0.0.1',
              port=29500):
    return [
        python, '-m', 'torch.distributed.run', f'--nnodes={nnodes}',
        f'--node_rank={rank}', f'--master_addr={addr}',
        f'--nproc_per_node={nproc}', f'--master_port={port}',
        str(checkout / 'tools' / script), *args, '--launcher', 'pytorch'
    ]


def test_dist_train_uses_the_venv_python(checkout):
    venv_python = str(_executable(checkout / '.venv/bin/python'))
    assert _launch(checkout, 'dist_train.sh', 'c.py', '2',
                   '--amp') == _torchrun(venv_python, checkout, 'train.py',
                                         '2', 'c.py', '--amp')


def test_dist_test_multi_node_on_the_path_python(checkout):
    argv = _launch(
        checkout,
        'dist_test.sh',
        'c.py',
        'e.pth',
        '8',
        '--eval',
        'bbox',
        NNODES='2',
        NODE_RANK='1',
        MASTER_ADDR='10.1.2.3',
        PORT='29611')
    assert argv == _torchrun(
        str(checkout.parent / 'bin/python'),
        checkout,
        'test.py',
        '8',
        'c.py',
        'e.pth',
        '--eval',
        'bbox',
        nnodes=2,
        rank=1,
        addr='10.1.2.3',
        port=29611)
