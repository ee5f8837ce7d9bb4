#!/usr/bin/env python3
"""Generates crates/core/data/max-output-tokens.json from LiteLLM's maintained model table.

The pricing module needs each model's largest possible completion to bound a request that sets no
`max_tokens`/`max_completion_tokens`/`max_output_tokens` (SPEC §2.1). genai-prices has prices and
context windows but no output limits; LiteLLM keeps them up to date.

Run by hand when moving to a newer LiteLLM pin; commit the JSON it writes. CI never runs it: the
tests only read the committed JSON. The wheel is only unzipped, never installed or imported.

    python3 scripts/gen-max-output-tokens.py
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

LITELLM_VERSION = "1.109.1"
TABLE_IN_WHEEL = "litellm/model_prices_and_context_window_backup.json"
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/core/data/max-output-tokens.json"

# LiteLLM provider → the prefix its keys carry (stripped, so keys read like the model names that
# requests and genai-prices use). `None`: keys have no prefix.
PROVIDERS = {
    "openai": None,
    "text-completion-openai": None,
    "azure": "azure/",
    "azure_ai": "azure_ai/",
    "anthropic": None,
    "gemini": "gemini/",
    "vertex_ai-language-models": None,
    "vertex_ai-anthropic_models": "vertex_ai/",
    "mistral": "mistral/",
    "xai": "xai/",
    "deepseek": "deepseek/",
    "groq": "groq/",
    "cerebras": "cerebras/",
    "perplexity": "perplexity/",
    "cohere_chat": None,
    "moonshot": "moonshot/",
    "openrouter": "openrouter/",
    "together_ai": "together_ai/",
    "fireworks_ai": "fireworks_ai/accounts/fireworks/models/",
}
# Modes whose requests have an output-token bound that matters to a budget.
MODES = {"chat", "responses", "completion"}


def download_table(tmp: pathlib.Path) -> dict:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"litellm=={LITELLM_VERSION}", "--no-deps",
         "--only-binary=:all:", "--quiet", "-d", str(tmp)],
        check=True,
    )
    wheels = list(tmp.glob("litellm-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"expected one litellm wheel in {tmp}, found {wheels}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return json.loads(wheel.read(TABLE_IN_WHEEL))


def max_output(entry: dict):
    """The entry's output limit, or None. Old entries only have `max_tokens`, which LiteLLM
    documents as the output limit when `max_output_tokens` is absent."""
    for key in ("max_output_tokens", "max_tokens"):
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table = download_table(pathlib.Path(tmp))

    models: dict[str, int] = {}
    for key, entry in table.items():
        if not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        provider = entry.get("litellm_provider")
        if provider not in PROVIDERS:
            continue
        prefix = PROVIDERS[provider]
        name = key
        if prefix is not None:
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
        limit = max_output(entry)
        if limit is None or not name:
            continue
        name = name.lower()
        # The same model under several providers: keep the largest limit, the safe side for a bound.
        models[name] = max(limit, models.get(name, 0))

    out = {
        "source": f"litellm {LITELLM_VERSION} ({TABLE_IN_WHEEL})",
        "generated_by": "scripts/gen-max-output-tokens.py",
        "models": dict(sorted(models.items())),
    }
    OUT.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(models)} models to {OUT.relative_to(OUT.parent.parent.parent.parent)}")


if __name__ == "__main__":
    main()
