#!/bin/sh
exec llama-server --model /cache/models/Qwen3-1.7B-Q4_K_M.gguf --alias qwen3-1.7b --host 127.0.0.1 --port 8000 --ctx-size 40960 --jinja --metrics --parallel 1 --cache-type-k q8_0 --cache-type-v q8_0
