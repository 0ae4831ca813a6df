"""The package as users install it: a wheel that carries the configs, tools
and model index in ``mmdet_cdetr/.mim``, used from a folder outside the
repository; and our model-zoo names found by mmdet's ``DetInferencer``."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, build_quick_model, write_config

# What a wheel is built from: the tracked tree, less tests and docs.
SOURCES = ('mmdet_cdetr', 'configs', 'tools', 'setup.py', 'setup.cfg',
           'pyproject.toml', 'MANIFEST.in', 'requirements.txt',
           'requirements-test.txt', 'model-index.yml')
QUICK_NAME = 'conditional_detr_r18_synthetic'
QUICK_BASE = 'mmdet_cdetr::quickstart/conditional_detr_r18_synthetic.py'
# The path users type for the R50 config: an alias of conditional_detr/'s.
R50_ALIAS = 'conditional_detr_r50_8x2_50e_coco.py'
OFFICIAL_R50 = ('https://github.com/DeppMeng/ConditionalDETR/releases/'
                'download/v1.0/ConditionalDETR_r50_epoch50.pth')


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the repository (the checkout stays clean)."""
    source = tmp / 'source'
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(
                path,
                source / name,
                symlinks=True,
                ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy(path, source / name)
    result = subprocess.run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--wheel-dir',
        str(tmp / 'dist'),
        str(source)
    ],
                            capture_output=True,
                            text=True)
    if result.returncode:
        pytest.skip(f'cannot build a wheel here: {result.stderr[-500:]}')
    (wheel, ) = (tmp / 'dist').glob('mmdet_cdetr-*.whl')
    return wheel


def fresh_env(tmp: Path, wheel: Path) -> Path:
    """A new virtual environment holding only the wheel, which sees this
    environment's packages (torch, mmcv, mmdet) through a ``.pth`` line
    but not the repository or its editable install. Returns its python."""
    env = tmp / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(env)],
                   check=True)
    python = env / 'bin' / 'python'
    site = subprocess.run([
        str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()'
        "['purelib'])"
    ],
                          check=True,
                          capture_output=True,
                          text=True).stdout.strip()
    subprocess.run([
        sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
        '--no-index', '--target', site,
        str(wheel)
    ],
                   check=True)
    # This interpreter's site directories (with the system's, when this
    # environment was made with --system-site-packages), not the repository.
    ours = [
        path for path in sys.path
        if path.endswith(('site-packages', 'dist-packages'))
    ]
    Path(site, 'base_packages.pth').write_text('\n'.join(ours))
    return python


def run_in(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([str(python), *args],
                            cwd=cwd,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# Run in the fresh environment, from the user's folder: the installed
# tools/test.py on the trained checkpoint (in this interpreter, as python
# runs a script: one start-up less), then what a user imports.
CHECK_INSTALLED = f"""
import importlib.metadata, os.path as osp, runpy, sys
checkpoint, image, test_tool = sys.argv[1:]
sys.argv = [test_tool, 'my_config.py', checkpoint, '--eval', 'bbox',
            '--work-dir', 'test']
sys.path[0] = osp.dirname(test_tool)
runpy.run_path(test_tool, run_name='__main__')
import mmdet_cdetr
from mmdet.apis import DetInferencer
from mmengine.config import Config
from mmengine.hub import get_config, get_model
package = osp.dirname(mmdet_cdetr.__file__)
assert package.startswith(sys.prefix), package
requires = importlib.metadata.requires('mmdet-cdetr')
assert 'mmdet==3.3.0' in requires and 'mmengine==0.10.7' in requires
assert any(r.startswith('tensorboard==') for r in requires)
assert get_config('{QUICK_BASE}').model.num_queries == 20
assert type(get_model('{QUICK_BASE}')).__name__ == 'ConditionalDETR'
# the fine-tuning template, copied out of the package, still resolves
custom = Config.fromfile('custom.py')
assert custom.model.backbone.depth == 50
inferencer = DetInferencer('{QUICK_NAME}', weights=checkpoint,
                           scope='mmdet_cdetr', device='cpu',
                           show_progress=False)
result = inferencer(image, no_save_vis=True)
print('detections', len(result['predictions'][0]['scores']))
"""


def test_wheel_installed_outside_the_repository(tmp_path, synthetic_root):
    wheel = build_wheel(tmp_path)
    python = fresh_env(tmp_path, wheel)
    site = Path(
        run_in(python, tmp_path, '-c', 'import sysconfig; print(sysconfig.'
               "get_paths()['purelib'])").stdout.strip())
    mim = site / 'mmdet_cdetr' / '.mim'
    assert (mim / 'model-index.yml').is_file()
    assert (mim / 'configs/quickstart/metafile.yml').is_file()
    assert (mim / 'configs/conditional_detr/metafile.yml').is_file()
    assert (mim / f'configs/{R50_ALIAS}').is_file()
    tools = mim / 'tools'
    user = tmp_path / 'my_project'
    user.mkdir()
    write_config(
        user / 'my_config.py',
        synthetic_root,
        base=QUICK_BASE,
        train_cfg='dict(max_epochs=1, val_interval=1)')
    shutil.copy(REPO / 'configs/custom/conditional_detr_r50_8x2_12e_custom.py',
                user / 'custom.py')

    run_in(python, user, str(tools / 'train.py'), 'my_config.py', '--work-dir',
           'work')
    checkpoint = user / 'work' / 'epoch_1.pth'
    assert checkpoint.is_file()
    image = next(Path(synthetic_root, 'val').glob('*.png'))
    result = run_in(python, user, '-c', CHECK_INSTALLED, str(checkpoint),
                    str(image), str(tools / 'test.py'))
    assert 'coco/bbox_mAP:' in result.stdout
    assert 'detections ' in result.stdout


def test_inferencer_finds_our_model_by_name(tmp_path, synthetic_root):
    """In a checkout too (``configs`` beside the package)."""
    from mmdet.apis import DetInferencer
    model = build_quick_model()
    checkpoint = tmp_path / 'quick.pth'
    classes = ('square', 'circle', 'triangle')
    torch.save(
        dict(
            meta=dict(dataset_meta=dict(classes=classes)),
            state_dict=model.state_dict()), checkpoint)
    inferencer = DetInferencer(
        QUICK_NAME,
        weights=str(checkpoint),
        scope='mmdet_cdetr',
        device='cpu',
        show_progress=False)
    assert type(inferencer.model).__name__ == 'ConditionalDETR'
    assert inferencer.model.dataset_meta['classes'] == classes
    image = str(next(Path(synthetic_root, 'val').glob('*.png')))
    result = inferencer(image, no_save_vis=True)
    assert len(result['predictions'][0]['labels']) > 0
    assert 'conditional_detr_r50_8x2_50e_coco' in DetInferencer.list_models(
        'mmdet_cdetr')


def test_configs_laid_out_as_the_model_zoo():
    """One folder a model, as MMDetection's zoo: each metafile lists the
    configs of its own folder, ``mmdet_cdetr::<folder>/<name>.py`` finds
    them (with the metafile's weights), and the only config at the top of
    ``configs/`` is the alias of the R50 one."""
    import mmengine
    from mmengine.config import Config
    from mmengine.hub import get_config

    import mmdet_cdetr  # noqa: F401  (registers the package with MMEngine)
    index = mmengine.load(str(REPO / 'model-index.yml'))
    for metafile in index['Import']:
        folder = Path(metafile).parent
        assert folder.parent.name == 'configs', metafile
        for model in mmengine.load(str(REPO / metafile))['Models']:
            assert Path(model['Config']).parent == folder, model['Name']
            assert (REPO / model['Config']).is_file(), model['Name']
    assert [p.name for p in (REPO / 'configs').glob('*.py')] == [R50_ALIAS]
    real = 'conditional_detr/conditional_detr_r50_8x2_50e_coco.py'
    alias = Config.fromfile(str(REPO / 'configs' / R50_ALIAS))
    assert alias.to_dict() == Config.fromfile(str(REPO / 'configs' /
                                                  real)).to_dict()
    cfg = get_config(f'mmdet_cdetr::{real}', pretrained=True)
    assert cfg.model_path == OFFICIAL_R50
    assert Path(cfg.filename).resolve() == (REPO / 'configs' / real).resolve()
