"""mmdet_cdetr as one of the OpenMMLab packages MMEngine knows by name."""
from mmengine.config.utils import MODULE2PACKAGE

_MODULE = 'mmdet_cdetr'
# What MMEngine looks up for our module: a module directly inside the
# package, which pip's metadata does not know, so MMEngine falls back to
# importlib and finds the package directory itself, with its .mim folder.
# The distribution's own name would point an editable install (whose
# metadata lies in site-packages) at a directory that does not exist.
_LOOKUP_NAME = 'mmdet_cdetr.version'


def register_openmmlab_package() -> None:
    """Let ``mmdet_cdetr::`` config paths, ``mmengine.get_config`` /
    ``get_model`` and ``DetInferencer(scope='mmdet_cdetr')`` find our
    installed configs and model index (in ``mmdet_cdetr/.mim``).

    MMEngine resolves ``pkg::`` only for the module names of its own table,
    so importing ``mmdet_cdetr`` adds ours; it must therefore be imported
    before such a config is read (our tools do). A wheel carries a copy of
    configs, tools and the model index in ``.mim``; a checkout (editable
    install) has symbolic links to them there.
    """
    MODULE2PACKAGE.setdefault(_MODULE, _LOOKUP_NAME)


def register_all_modules(init_default_scope: bool = True) -> None:
    """MMDetection's and our components in the registries, and (by default)
    ``mmdet_cdetr`` as the default scope: what ``mmengine.get_model`` calls
    for a package's models (``<package>.utils.register_all_modules``)."""
    from mmdet.utils import register_all_modules as register_mmdet
    from mmengine.registry import init_default_scope as set_scope

    import mmdet_cdetr  # noqa: F401  (registers our components)
    register_mmdet(init_default_scope=False)
    if init_default_scope:
        set_scope(_MODULE)
