"""Prompts: the subject slot, the placeholder, tokenisation limits and prompt files (docs/method.md, FDTE, Inference,
Evaluation).

``{}`` in a template is the subject slot: it becomes ``"<placeholder> <class noun>"`` ("a <new1> toy on the
beach"). The reference prompt and the CLIP-T text are the same prompt with the placeholder removed ("a toy on
the beach"). Prompt files hold one template per line (blank lines ignored, CRLF accepted).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from eqdiff.errors import DataError

SLOT = "{}"


def subject_prompt(template: str, placeholder: str, class_noun: str) -> str:
    """Fill the subject slot: ``"a {} on the beach"`` → ``"a <new1> toy on the beach"``."""
    if SLOT not in template:
        raise DataError(f"prompt {template!r}: missing the {{}} subject slot")
    return template.replace(SLOT, f"{placeholder} {class_noun}")


def remove_placeholder(prompt: str, placeholder: str) -> str:
    """The prompt without the placeholder token, spaces collapsed (class noun kept)."""
    return re.sub(r"\s+", " ", prompt.replace(placeholder, " ")).strip()


def training_reference_prompt(instance_template: str, placeholder: str, class_noun: str) -> str:
    """The reference rows' text in training, and by default at inference: the instance prompt without the
    placeholder (``"photo of a {}"`` → ``"photo of a toy"``)."""
    return remove_placeholder(subject_prompt(instance_template, placeholder, class_noun), placeholder)


def tokenize(tokenizer, prompts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 77) token ids padded to the model length; a prompt longer than that is an error, not a truncation."""
    limit = tokenizer.model_max_length
    for prompt in prompts:
        length = len(tokenizer(prompt).input_ids)
        if length > limit:
            raise DataError(f"prompt {prompt!r}: {length} tokens, the text encoder takes at most {limit}")
    ids = tokenizer(prompts, padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
    return ids.input_ids.to(device)


def read_prompt_file(path: str | Path) -> list[str]:
    """Templates of a prompt file; every line must contain the ``{}`` slot."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO or device would block or never end
        raise DataError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: prompt file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    templates = [line.strip() for line in text.splitlines() if line.strip()]
    if not templates:
        raise DataError(f"{path}: no prompts")
    for number, template in enumerate(templates, 1):
        if SLOT not in template:
            raise DataError(f"{path}:{number}: prompt {template!r} has no {{}} subject slot")
    return templates


def builtin_prompt_file(name: str) -> Path:
    """Path of a prompt list shipped with the package (``demo_unstylized``, ``demo_stylized``)."""
    return Path(__file__).resolve().parents[1] / "prompt_lists" / f"{name}.txt"
