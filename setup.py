from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open('mmdet_cdetr/version.py', encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmdet-cdetr',
    version=read_version(),
    description='Conditional DETR (ICCV 2021) as an MMDetection 3.x extension',
    packages=find_packages(include=['mmdet_cdetr', 'mmdet_cdetr.*']),
    python_requires='>=3.8',
    # Export to ONNX and inference with ONNX Runtime (tools/deployment/).
    extras_require=dict(
        deploy=['onnx==1.23.1', 'onnxruntime==1.30.0', 'onnxslim==0.1.98']),
    license='Apache-2.0',
)
