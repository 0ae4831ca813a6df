import os.path as osp
import shutil
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# Shipped inside the installed package, in mmdet_cdetr/.mim, as OpenMMLab
# packages do: mmengine resolves `mmdet_cdetr::` config paths there and
# mmdet's DetInferencer reads the model index there.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_version() -> str:
    namespace: dict = {}
    with open('mmdet_cdetr/version.py', encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements(path: str) -> list:
    """The requirement lines of ``path`` (the pins `make install` uses)."""
    with open(path, encoding='utf-8') as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


class BuildPyWithMim(build_py):
    """build_py that also copies :data:`MIM_FILES` into ``.mim`` of the
    built package. An editable install needs no copy: mmdet's inferencer
    finds ``configs`` beside the package in a checkout."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        mim_dir = osp.join(self.build_lib, 'mmdet_cdetr', '.mim')
        for name in MIM_FILES:
            target = osp.join(mim_dir, name)
            if osp.isdir(name):
                shutil.copytree(
                    name,
                    target,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                self.mkpath(mim_dir)
                self.copy_file(name, target)


setup(
    name='mmdet-cdetr',
    version=read_version(),
    description='Conditional DETR (ICCV 2021) as an MMDetection 3.x extension',
    packages=find_packages(include=['mmdet_cdetr', 'mmdet_cdetr.*']),
    python_requires='>=3.8',
    install_requires=read_requirements('requirements.txt'),
    extras_require=dict(
        # Export to ONNX and inference with ONNX Runtime (tools/deployment/).
        deploy=['onnx==1.23.1', 'onnxruntime==1.30.0', 'onnxslim==0.1.98'],
        # MMEngine's TensorboardVisBackend (docs/visualization.md).
        tensorboard=['tensorboard==2.21.0']),
    cmdclass=dict(build_py=BuildPyWithMim),
    license='Apache-2.0',
)
