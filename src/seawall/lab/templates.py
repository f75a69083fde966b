"""Chat templates for base models that ship without one (`seawall lab instruct`, setting `chat_template`).

The one place for every template the lab gives a tokenizer:

- `gemma`: Gemma's own turns, `<start_of_turn>user` NL … `<end_of_turn>` NL `<start_of_turn>model` NL …
  `<end_of_turn>` NL (a system message opens the first user turn, as in Gemma's instruction-tuned models); a reply
  ends with `<end_of_turn>`.
- `chatml`: `<|im_start|>ROLE` NL … `<|im_end|>` NL; a reply ends with `<|im_end|>`.
- `plain`, the fallback that needs nothing but an EOS token: `### User:` NL … NL NL `### Assistant:` NL … EOS NL NL.
- a path to a `.jinja` file: whatever it writes; a reply must end with the tokenizer's EOS token (checked).

`auto` keeps a tokenizer's own template; without one it takes Gemma's format when the tokenizer knows
`<start_of_turn>` and `<end_of_turn>` as single tokens, else ChatML's when it knows `<|im_start|>` and `<|im_end|>`,
else `plain`. The token that ends a reply becomes the tokenizer's EOS token and the first of the model's
`generation_config.eos_token_id`, so generation stops where the model learned to end its turn (seawall's generators
stop on `tokenizer.eos_token_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seawall.errors import SeawallError

GEMMA = (
    "{{- bos_token -}}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] | trim -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{%- set prefix = system + '\\n\\n' if loop.first and system else '' -%}"
    "{{- '<start_of_turn>' + role + '\\n' + prefix + message['content'] | trim + '<end_of_turn>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)
CHATML = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
PLAIN = (
    "{{- bos_token if bos_token else '' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- message['content'] | trim + '\\n\\n' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '### User:\\n' + message['content'] | trim + '\\n\\n' -}}"
    "{%- else -%}{{- '### Assistant:\\n' + message['content'] | trim + eos_token + '\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '### Assistant:\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class ChatFormat:
    """A named template, the tokens it needs as single tokens, and the token that ends a reply (None: EOS)."""

    name: str
    template: str
    turn_tokens: tuple[str, ...] = ()
    end_of_turn: str | None = None


FORMATS = {
    "gemma": ChatFormat("gemma", GEMMA, ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>"),
    "chatml": ChatFormat("chatml", CHATML, ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
    "plain": ChatFormat("plain", PLAIN),
}
CHOICES = ("auto", *FORMATS)


def check_choice(choice: str) -> str:
    """`choice` if it names a template (`auto`, a format of FORMATS or a `.jinja` path), else a ValueError."""
    if choice in CHOICES or choice.endswith(".jinja"):
        return choice
    raise ValueError(
        f"chat_template must be one of {', '.join(CHOICES)} or a path to a .jinja file, got {choice!r}"
    )


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def _knows(tokenizer: Any, chat: ChatFormat) -> bool:
    return all(_single_token(tokenizer, token) is not None for token in chat.turn_tokens)


def chat_format(tokenizer: Any, choice: str) -> ChatFormat | None:
    """The format `choice` selects for `tokenizer`; None when `auto` keeps the tokenizer's own template."""
    check_choice(choice)
    if choice == "auto":
        if getattr(tokenizer, "chat_template", None):
            return None
        return next(
            (chat for chat in (FORMATS["gemma"], FORMATS["chatml"]) if _knows(tokenizer, chat)),
            FORMATS["plain"],
        )
    if choice in FORMATS:
        chat = FORMATS[choice]
        if not _knows(tokenizer, chat):
            missing = [t for t in chat.turn_tokens if _single_token(tokenizer, t) is None]
            raise SeawallError(
                f"chat_template {choice!r}: the tokenizer does not know {', '.join(missing)} as single tokens; "
                "use chat_template: auto or plain"
            )
        return chat
    path = Path(choice).expanduser()
    try:
        return ChatFormat(path.name, path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SeawallError(f"chat_template {choice}: cannot read the template file ({error})") from error


_PROBE = "Seawall probe reply."


def _check_reply_ends_with(tokenizer: Any, name: str, end: str) -> None:
    """The rendered reply must be followed by `end`, the token generation stops on."""
    messages = [
        {"role": "user", "content": "Seawall probe prompt."},
        {"role": "assistant", "content": _PROBE},
    ]
    try:
        prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as error:  # jinja2 raises its own TemplateError types
        raise SeawallError(f"chat template {name}: cannot render a conversation ({error})") from error
    after = full[len(prompt) :] if full.startswith(prompt) else ""
    if not after.startswith(_PROBE + end):
        raise SeawallError(
            f"chat template {name}: an assistant reply must be followed by {end!r} (the token generation stops "
            f"on) and the prompt with add_generation_prompt must be a prefix of the conversation; it renders "
            f"{full!r}"
        )


def give_chat_template(tokenizer: Any, model: Any, choice: str) -> dict[str, Any]:
    """Give `tokenizer` the template `choice` selects, make the token that ends a reply its EOS token and the
    model's generation stop token, and return what was done (for the run record)."""
    chat = chat_format(tokenizer, choice)
    if chat is None:
        return {"template": "own", "end_of_turn": tokenizer.eos_token}
    end = chat.end_of_turn or tokenizer.eos_token
    if end is None:
        raise SeawallError(f"chat template {chat.name}: the tokenizer has no EOS token to end a reply with")
    end_id = _single_token(tokenizer, end)
    if end_id is None:
        raise SeawallError(f"chat template {chat.name}: the end of a reply, {end!r}, is not a single token")
    previous, previous_id = tokenizer.eos_token, tokenizer.eos_token_id
    tokenizer.chat_template = chat.template
    tokenizer.eos_token = end
    _check_reply_ends_with(tokenizer, chat.name, end)
    stop = [end_id]
    if previous is not None and previous_id != end_id:
        # The base model's own EOS stays a stop token of the model and a special token (left out of decoded text).
        stop.append(previous_id)
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [previous]}, replace_extra_special_tokens=False
        )
    model.generation_config.eos_token_id = stop
    return {"template": chat.name, "end_of_turn": end, "eos_token_id": stop}
