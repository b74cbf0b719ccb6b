"""Ask a vLLM image whether it accepts the `vllm serve` command coderig renders, before the running model
server is replaced: stdlib only here, vLLM's own code is imported inside the image.

    docker run --rm --network none --entrypoint python3 IMAGE -c "$(this file)" IMAGE serve MODEL --flag …

`coderig:model.image` swaps the vLLM that coderig's flags and parsers were checked against (the pinned one,
tests/vllm/). This runs the same checks `vllm serve` runs before it loads anything, with the image's own
code: its CLI parser (vllm/entrypoints/cli/main.py: FlexibleArgumentParser + ServeSubcommand.subparser_init),
ServeSubcommand.validate (validate_parsed_serve_args) and validate_api_server_args. An unknown or removed
flag, a parser name the image's registries lack or a bad value is refused with vLLM's own message, exit 2;
accepted, one line and exit 0. A vLLM whose modules moved (another major layout) exits 3 naming the import.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any

KEY = "coderig:model.image"
ACCEPTED, REFUSED, CANNOT_CHECK = 0, 2, 3


def _vllm() -> tuple[Any, Any, Any, str]:
    import vllm  # pyright: ignore[reportMissingImports]
    from vllm.entrypoints.cli.serve import ServeSubcommand  # pyright: ignore[reportMissingImports]
    from vllm.entrypoints.common.cli_args import validate_api_server_args  # pyright: ignore[reportMissingImports]
    from vllm.utils.argparse_utils import FlexibleArgumentParser  # pyright: ignore[reportMissingImports]

    return FlexibleArgumentParser, ServeSubcommand, validate_api_server_args, str(vllm.__version__)


def refusal(argv: list[str]) -> tuple[int, str]:
    """(exit code, message) for `vllm ARGV…` (ARGV starts with `serve`), checked by the importable vLLM."""
    try:
        parser_type, serve_type, validate_api, version = _vllm()
    except ImportError as e:
        return CANNOT_CHECK, f"cannot import vLLM's serve parser in this image ({type(e).__name__}: {e})"
    parser = parser_type(prog="vllm", description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve_type().subparser_init(subparsers)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        return REFUSED, f"vLLM {version}: {lines[-1] if lines else 'its argument parser exited'}"
    except (ValueError, TypeError) as e:
        return REFUSED, f"vLLM {version}: {type(e).__name__}: {e}"
    if args.subparser != "serve":
        return REFUSED, f"vLLM {version}: not a `vllm serve` command: {argv[:1]}"
    try:
        serve_type().validate(args)
        validate_api(args)
    except (ValueError, TypeError, KeyError) as e:
        return REFUSED, f"vLLM {version}: {type(e).__name__}: {e}"
    return ACCEPTED, f"vLLM {version} accepts the model server's command"


def main(argv: list[str]) -> int:
    """ARGV: the image's name (for the message), then the command after `vllm` (`serve MODEL …`)."""
    if len(argv) < 2:
        print(f"usage: vllm_argcheck.py IMAGE serve MODEL [FLAG …]; got {argv}", file=sys.stderr)
        return CANNOT_CHECK
    image, command = argv[0], argv[1:]
    code, message = refusal(command)
    if code == ACCEPTED:
        print(f"{KEY}: {image}: {message}")
    else:
        print(
            f"{KEY}: {image} refuses the model server's command: {message}. The running model server was not "
            f"touched; fix the flag (coderig:model.extraArgs, coderig:model) or set {KEY} to an image whose vLLM "
            "accepts it, then run `pulumi up` again",
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
