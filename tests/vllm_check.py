"""Run inside the pinned vLLM's venv (.ci/vllm-deps.sh, CODERIG_VLLM_PYTHON): vLLM's own code reads what
coderig renders. Prints JSON on stdout.

  VLLM_TARGET_DEVICE=cpu python tests/vllm_check.py < commands.json
  stdin:  {"commands": [{"name": ..., "argv": ["serve", MODEL, ...]}, ...],
           "tool_outputs": [{"id": ..., "parser": ..., "text": MODEL_OUTPUT}, ...], "markers": [TOKEN, ...]}
  stdout: {"version": "0.34.0",
           "flags": [...every option string of `vllm serve`, from its own parser...],
           "registries": {"tool_call_parser": [...], "reasoning_parser": [...], "tokenizer_mode": [...]},
           "results": [{"name": ..., "error": null | "..."}, ...],
           "tool_calls": {ID: {"called": bool, "calls": [[NAME, ARGUMENTS_JSON], ...], "error": ...}}}
Each tool parser runs on a tiny tokenizer (a WordLevel vocabulary of the marker tokens, as special
tokens) with one `Write(file_path, content)` tool offered, over the model output given for it.
One process for all of it: importing vLLM takes seconds to a minute on a busy machine.

The check builds the `vllm` CLI parser the way vllm/entrypoints/cli/main.py does (FlexibleArgumentParser,
the `serve` subcommand from ServeSubcommand.subparser_init = make_arg_parser), parses each command
line, then runs the checks `vllm serve` runs before it loads anything: ServeSubcommand.validate
(validate_parsed_serve_args) and validate_api_server_args (entrypoints/launchers/launcher.py:
setup_server). argparse's own errors (unknown flag, bad choice, bad type) exit; they are caught and
reported with argparse's message.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any

from vllm.entrypoints.cli.serve import ServeSubcommand  # pyright: ignore[reportMissingImports]
from vllm.entrypoints.common.cli_args import validate_api_server_args  # pyright: ignore[reportMissingImports]
from vllm.utils.argparse_utils import FlexibleArgumentParser  # pyright: ignore[reportMissingImports]


def serve_parser() -> tuple[Any, Any]:
    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand().subparser_init(subparsers)
    return parser, serve


def flags() -> list[str]:
    _, serve = serve_parser()
    return sorted({s for action in serve._actions for s in action.option_strings})


def registries() -> dict[str, list[str]]:
    from vllm.reasoning import ReasoningParserManager  # pyright: ignore[reportMissingImports]
    from vllm.tokenizers.registry import TokenizerRegistry  # pyright: ignore[reportMissingImports]
    from vllm.tool_parsers import ToolParserManager  # pyright: ignore[reportMissingImports]

    return {
        "tool_call_parser": sorted(ToolParserManager.list_registered()),
        "reasoning_parser": sorted(ReasoningParserManager.list_registered()),
        "tokenizer_mode": sorted({"auto", *TokenizerRegistry.tokenizers}),
    }


def check_one(argv: list[str]) -> str | None:
    parser, _ = serve_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "argparse exited"
    except (ValueError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    if args.subparser != "serve":
        return f"not a serve command: {argv[:1]}"
    try:
        ServeSubcommand().validate(args)
        validate_api_server_args(args)
        check_configs(args)
    except (ValueError, TypeError, KeyError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def check_configs(args: Any) -> None:
    """What argparse passes through as values, checked by the config classes vLLM builds from them (those
    need the model's own config to be built whole, which is not here):
    --kv-offloading-size/--kv-offloading-backend through CacheConfig (config/cache.py), and each key of
    --speculative-config against SpeculativeConfig's fields, its `method` against the methods vLLM names
    (config/speculative.py: SpeculativeMethod; the field also takes any string, for a draft model's type)
    and its num_speculative_tokens through the field's own validator (> 0)."""
    import typing

    from pydantic import create_model
    from vllm.config.cache import CacheConfig  # pyright: ignore[reportMissingImports]
    from vllm.config.speculative import SpeculativeConfig  # pyright: ignore[reportMissingImports]

    if args.kv_offloading_size is not None:
        if args.kv_offloading_size <= 0:
            raise ValueError(f"--kv-offloading-size {args.kv_offloading_size}: not a size in GiB")
        CacheConfig(kv_offloading_size=args.kv_offloading_size, kv_offloading_backend=args.kv_offloading_backend)
    spec = args.speculative_config
    if spec is None:
        return
    fields = SpeculativeConfig.__pydantic_fields__
    unknown = sorted(set(spec) - set(fields))
    if unknown:
        raise KeyError(f"--speculative-config: not SpeculativeConfig fields: {unknown}")
    literal = next(a for a in typing.get_args(fields["method"].annotation) if typing.get_origin(a) is typing.Literal)
    if spec.get("method") not in typing.get_args(literal):
        raise ValueError(f"--speculative-config: method {spec.get('method')!r} is not one vLLM names")
    draft = create_model(
        "Draft", num_speculative_tokens=(fields["num_speculative_tokens"].annotation, fields["num_speculative_tokens"])
    )
    draft.model_validate({"num_speculative_tokens": spec.get("num_speculative_tokens")})


def tool_calls(outputs: list[dict[str, str]], markers: list[str]) -> dict[str, dict[str, Any]]:
    from tokenizers import Tokenizer, models, pre_tokenizers  # pyright: ignore[reportMissingImports]
    from transformers import PreTrainedTokenizerFast  # pyright: ignore[reportMissingImports]
    from vllm.entrypoints.openai.chat_completion.protocol import (  # pyright: ignore[reportMissingImports]
        ChatCompletionRequest,
    )
    from vllm.tool_parsers import ToolParserManager  # pyright: ignore[reportMissingImports]

    vocab = {"[UNK]": 0, **{m: i + 1 for i, m in enumerate(markers)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", additional_special_tokens=markers)
    schema = {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "Write", "parameters": schema}}]
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], tools=tools)
    out: dict[str, dict[str, Any]] = {}
    for case in outputs:
        try:
            parser = ToolParserManager.get_tool_parser(case["parser"])(tokenizer, request.tools)
            got = parser.extract_tool_calls(case["text"], request)
            calls = [[c.function.name, c.function.arguments] for c in got.tool_calls]
            out[case["id"]] = {"called": got.tools_called, "calls": calls, "error": None}
        except Exception as e:  # reported, not raised: the test says which parser failed and how
            out[case["id"]] = {"called": False, "calls": [], "error": f"{type(e).__name__}: {e}"}
    return out


def main() -> int:
    import vllm  # pyright: ignore[reportMissingImports]

    given = json.load(sys.stdin)
    commands = given["commands"]
    out = {
        "version": vllm.__version__,  # pyright: ignore[reportAttributeAccessIssue]
        "flags": flags(),
        "registries": registries(),
        "results": [{"name": c["name"], "error": check_one(c["argv"])} for c in commands],
        "tool_calls": tool_calls(given.get("tool_outputs", []), given.get("markers", [])),
    }
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
