#!/usr/bin/env bash
# The checks that need a CUDA GPU, one line each (PASS/FAIL/SKIP), on the transformers engine and the
# trainer: bf16, 8-bit and 4-bit loading (bitsandbytes), a short QLoRA run on a tiny Mistral built from
# its config (random weights: nothing is downloaded), its export, and a chat turn on the GPU.
#
# Run:   bash bench/gpu_check.sh            (from the repository root, after `make setup`)
# Env:   PY (default .venv/bin/python), MISTRALKIT_HOME (default: a fresh folder under /tmp)
# Exit:  0 when every check passed or there is no GPU (every check SKIP); 1 when one failed.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d /tmp/gpu-check.XXXXXX)
export MISTRALKIT_HOME=${MISTRALKIT_HOME:-$work/home}
failed=0

check() {  # check NAME COMMAND...: one line, the last line of the output when it fails
    local name=$1; shift
    local started=$SECONDS out
    if out=$("$@" 2>&1); then
        echo "PASS  $name ($((SECONDS - started)) s)"
    else
        echo "FAIL  $name ($((SECONDS - started)) s): $(printf '%s' "$out" | tail -n 1)"
        failed=1
    fi
}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    for name in "cuda" "transformers bf16" "transformers --quant 8" "transformers --quant 4" "qlora tune" \
                "export --gguf-adapter" "chat --device cuda"; do
        echo "SKIP  $name: no CUDA GPU here"
    done
    exit 0
fi

"$PY" - "$work/tiny-mistral" <<'EOF'
import sys, torch
from transformers import MistralConfig, MistralForCausalLM
torch.manual_seed(0)
config = MistralConfig(vocab_size=32768, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
MistralForCausalLM(config).save_pretrained(sys.argv[1])
EOF
printf '%s\n' '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}' \
    '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}' > "$work/train.jsonl"

MK=("$PY" -m mistralkit)
check "cuda" "$PY" -c "import torch; print(torch.cuda.get_device_name(0))"
check "transformers bf16" "${MK[@]}" run -m "$work/tiny-mistral" --device cuda -n 8 "Hello"
check "transformers --quant 8" "${MK[@]}" run -m "$work/tiny-mistral" --device cuda --quant 8 -n 8 "Hello"
check "transformers --quant 4" "${MK[@]}" run -m "$work/tiny-mistral" --device cuda --quant 4 -n 8 "Hello"
check "qlora tune" "${MK[@]}" tune --base "$work/tiny-mistral" --tokenizer v3 --qlora --data "$work/train.jsonl" \
    --out "$work/run" --max-steps 4 --rank 8 --json
check "export --gguf-adapter" "${MK[@]}" export "$work/run" --gguf-adapter --name gpu-check-adapter
check "chat --device cuda" "${MK[@]}" chat -m "$work/run" --device cuda -n 8 --prompt "Hello"
rm -rf "$work"
exit $failed
