"""Check an MMDetection 3.3 model-zoo checkpoint of its built-in
Conditional DETR against our model and write it for tools/test.py.

Our parameter names are mmdet's, so the zoo checkpoint also loads directly;
this pass-through proves every key fits before a long evaluation and
keeps only the weights and meta (no optimizer state).
"""
from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.converters import (convert_and_save, convert_mmdet,
                                    converter_parser, load_mmdet, zoo_config)


def main() -> None:
    args = converter_parser(
        __doc__, 'mmdet checkpoint, e.g. '
        'conditional-detr_r50_8xb2-50e_coco_20221121_180202-c83a1dc0.pth'
    ).parse_args()
    with report_user_errors(checkpoint=args.src):
        state_dict, meta = load_mmdet(args.src)
        convert_and_save(
            convert_mmdet(state_dict),
            args,
            args.config or zoo_config(50),
            source_kind='mmdet',
            dataset_meta=meta.get('dataset_meta'))


if __name__ == '__main__':
    main()
