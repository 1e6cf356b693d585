"""Prompts for the extrinsic tasks: the model's chat template when its tokenizer has one, else a
plain Portuguese instruction format.

The user message is the seeds' (`rescore.seeds_user_prompt`): the instruction, then "Entrada:"
and the input when there is one, so brlm's numbers and the seeds' are measured on the same text.

    fmt = prompt_format(lm, "auto")           # 'chat' or 'plain'
    text = render_prompt(lm, item, fmt)

* chat, Hugging Face tokenizer: `apply_chat_template(..., add_generation_prompt=True)`;
* chat, brlm run: brlm's own template (brlm.tokenizers.hf.CHAT_TEMPLATE, which brlm's SFT and
  `brlm export hf` use): `<|usuario|>\\n…\\n<|assistente|>\\n`;
* plain: `Instrução:\\n…\\n\\nEntrada:\\n…\\n\\nResposta:\\n`.
"""

from __future__ import annotations

from typing import Any

from brlm.errors import BrlmError
from brlm.eval.extrinsic.rescore import seeds_user_prompt
from brlm.eval.extrinsic.tasks import Item
from brlm.tokenizers.hf import ROLE_MARKERS


def chat_template_of(lm: Any) -> str | None:
    """The Hugging Face tokenizer's chat template, or None (brlm's own tokenizers have none)."""
    tok = getattr(lm.tokenizer, "tok", None)
    template = getattr(tok, "chat_template", None) if tok is not None else None
    return template or None


def prompt_format(lm: Any, requested: str = "auto") -> str:
    """'chat' or 'plain': `auto` picks chat exactly when the tokenizer carries a chat template."""
    if requested == "auto":
        return "chat" if chat_template_of(lm) else "plain"
    if requested not in ("chat", "plain"):
        raise BrlmError(f"--prompt-format {requested!r}: expected auto, chat or plain")
    return requested


def plain_prompt(item: Item) -> str:
    instruction, inp = item.instruction.strip(), item.input.strip()
    body = f"Instrução:\n{instruction}\n\n" + (f"Entrada:\n{inp}\n\n" if inp else "")
    return body + "Resposta:\n"


def render_prompt(lm: Any, item: Item, fmt: str, system: str = "") -> str:
    """The exact text the model is given for `item` (tokenised without adding special tokens)."""
    if fmt == "plain":
        return plain_prompt(item)
    messages = ([{"role": "system", "content": system}] if system else [])
    messages.append({"role": "user", "content": seeds_user_prompt(item.instruction, item.input)})
    if chat_template_of(lm):
        try:
            return lm.tokenizer.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # jinja errors: a template that rejects a system message, for instance
            raise BrlmError(f"the model's chat template failed ({e.__class__.__name__}: {e}); try --prompt-format plain") from None
    text = "".join(f"{ROLE_MARKERS[m['role']]}\n{m['content']}\n" for m in messages)
    return text + f"{ROLE_MARKERS['assistant']}\n"
