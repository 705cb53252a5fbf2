"""Command-line flags of sd-webui-hidiffusion (loaded before the WebUI's modules exist: argparse only)."""


def preload(parser):
    parser.add_argument(
        "--hidiffusion-disable",
        action="store_true",
        default=False,
        help="turn the sd-webui-hidiffusion extension off: no HiDiffusion accordion, no CFG++ samplers, no patches",
    )
