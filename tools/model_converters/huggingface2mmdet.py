"""Convert a HuggingFace ConditionalDetrForObjectDetection checkpoint
(``model.safetensors`` or ``pytorch_model.bin``; the hub's timm-ResNet
layout or HuggingFace's own ResNet) for our model.

The ``id2label`` of its ``config.json`` maps the logits onto mmdet's 80
COCO labels by class name.
"""
from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.converters import (convert_and_save, convert_huggingface,
                                    converter_parser, hf_default_config,
                                    load_huggingface)


def main() -> None:
    parser = converter_parser(
        __doc__, 'model directory (e.g. a hub snapshot of '
        'microsoft/conditional-detr-resnet-50) or its weights file')
    parser.add_argument(
        '--hf-config',
        help='the model\'s config.json (default: the one beside SRC)')
    args = parser.parse_args()
    with report_user_errors(checkpoint=args.src):
        state_dict, hf_config = load_huggingface(args.src, args.hf_config)
        config = args.config or hf_default_config(hf_config)
        convert_and_save(
            convert_huggingface(state_dict, hf_config.get('id2label', {})),
            args,
            config,
            source_kind='huggingface')


if __name__ == '__main__':
    main()
