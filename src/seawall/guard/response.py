"""What the proxy makes of an upstream answer: the text it checks, the fields it releases, and what it drops.

Answers are rebuilt from an allow-list, never forwarded: a field this module does not know cannot reach the client.

- Checked (each on its own and all of them joined): a chat message's `content`, `refusal`, `reasoning_content`,
  `reasoning`, each tool call's name and arguments, the legacy `function_call`, the audio `transcript`; a text
  completion's `text` (which holds the prompt too under `echo`).
- Released when the verdict is not `block`: those fields, plus ids that look like ids, token counts, known finish
  reasons, the audio data of a checked transcript, and logprobs of exactly the checked tokens (the alternatives,
  `top_logprobs`, are text no check covered: withheld).
- Dropped, and named in the report: everything else, every choice after the first, and on `block` everything but
  the refusal. In a stream, logprobs and audio deltas are dropped too (they cannot be held back with the text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

CHAT, COMPLETIONS = "/chat/completions", "/completions"

# Plain message fields that hold generated text; tool calls, function_call and audio are read separately.
MESSAGE_TEXT = ("content", "refusal", "reasoning_content", "reasoning")
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
# Ids and names set by the serving software, not generated text: released only when they look like one.
IDENTIFIER = re.compile(r"[\w.:/@+-]{1,256}")
BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
ENVELOPE_IDS = ("id", "model", "system_fingerprint", "service_tier")
FAMILIES = frozenset({"choices", "choice", "message", "logprobs", "usage", "chunk", "delta"})
SEPARATOR = (
    "\n"  # between the checked fields when they are joined (the streaming check joins them the same way)
)


class Dropped:
    """The fields left out of an answer, in order, each named once (`choices[1]`, `message.annotations`, …)."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}

    def add(self, name: str) -> None:
        """Record one dropped field (its name is cut to 80 characters: upstream keys can be anything)."""
        self.names.setdefault(name[:80], None)

    def unknown(self, where: str, obj: dict[str, Any], known: tuple[str, ...] | frozenset[str]) -> None:
        """Record every key of `obj` with a value (null is nothing lost) that is not in `known`."""
        for key, value in obj.items():
            if key not in known and value is not None:
                self.add(f"{where}.{key}" if where else str(key))

    @staticmethod
    def family(name: str) -> str:
        """The metric label of a dropped field: the part of the answer it was in (upstream keys are unbounded)."""
        head = re.split(r"[.\[]", name, maxsplit=1)[0]
        return head if head in FAMILIES else "response"

    def __bool__(self) -> bool:
        return bool(self.names)

    def __iter__(self):
        return iter(self.names)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def identifier(obj: dict[str, Any], key: str, where: str, dropped: Dropped) -> str | None:
    """`obj[key]` when it is an identifier-like string; anything else is dropped (and reported unless null)."""
    value = obj.get(key)
    if isinstance(value, str) and IDENTIFIER.fullmatch(value):
        return value
    if value is not None:
        dropped.add(f"{where}.{key}" if where else key)
    return None


def text_of(obj: dict[str, Any], key: str, where: str, dropped: Dropped) -> str | None:
    """`obj[key]` when it is a string; another type (a list of parts, a number…) is dropped and reported."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    dropped.add(f"{where}.{key}")
    return None


def usage_of(value: Any, dropped: Dropped, where: str = "usage") -> dict[str, Any] | None:
    """Token counts only: numbers and nested objects of numbers (text in a usage object is dropped)."""
    if not isinstance(value, dict):
        if value is not None:
            dropped.add(where)
        return None
    out: dict[str, Any] = {}
    for key, item in value.items():
        if is_number(item):
            out[key] = item
        elif isinstance(item, dict):
            nested = usage_of(item, dropped, f"{where}.{key}")
            if nested is not None:
                out[key] = nested
        elif item is not None:
            dropped.add(f"{where}.{key}")
    return out


def envelope_of(path: str, obj: dict[str, Any], dropped: Dropped, chunk: bool) -> dict[str, Any]:
    """The allow-listed top-level fields of an answer or chunk (`object` is the proxy's own, not the upstream's)."""
    out: dict[str, Any] = {}
    for key in ENVELOPE_IDS:
        value = identifier(obj, key, "", dropped)
        if value is not None:
            out[key] = value
    out["object"] = (
        "text_completion" if path == COMPLETIONS else "chat.completion" + (".chunk" if chunk else "")
    )
    if is_number(obj.get("created")):
        out["created"] = int(obj["created"])
    return out


def finish_reason_of(choice: dict[str, Any], where: str, dropped: Dropped) -> str | None:
    """A known finish reason, else None (reported: an upstream could spell anything there)."""
    value = choice.get("finish_reason")
    if value is None or (isinstance(value, str) and value in FINISH_REASONS):
        return value
    dropped.add(f"{where}.finish_reason")
    return None


def tool_call_text(name: str, arguments: str) -> str:
    """What is checked for one tool call: its name and arguments, one per line."""
    return SEPARATOR.join(part for part in (name, arguments) if part)


def joined(texts: list[tuple[str, str]]) -> str:
    """The checked fields as one text (what the audit log hashes)."""
    return SEPARATOR.join(text for _, text in texts if text)


def checked_texts(texts: list[tuple[str, str]]) -> list[str]:
    """The texts the detector scores: each non-empty field, and all of them joined when there are several."""
    parts = [text for _, text in texts if text]
    return [*parts, SEPARATOR.join(parts)] if len(parts) > 1 else parts or [""]


@dataclass
class Answer:
    """A non-streamed upstream answer read through the allow-list."""

    envelope: dict[str, Any]
    choice: dict[str, Any]  # the first choice as released when the verdict is not `block`
    texts: list[tuple[str, str]]  # (field, text) of every text-bearing field: what is checked
    dropped: Dropped = field(default_factory=Dropped)

    def blocked(self, refusal: str) -> dict[str, Any]:
        """The answer sent instead: the envelope and one choice holding the refusal, nothing else."""
        if "message" in self.choice:
            choice = {"index": 0, "message": {"role": "assistant", "content": refusal}}
        else:
            choice = {"index": 0, "text": refusal, "logprobs": None}
        return {**self.envelope, "choices": [{**choice, "finish_reason": "content_filter"}]}

    def released(self) -> dict[str, Any]:
        """The answer sent when the verdict allows it (allow, flag, log)."""
        return {**self.envelope, "choices": [self.choice]}


class InvalidAnswer(ValueError):
    """The upstream's answer has no choice the proxy can read."""


def chunk_choices(chunk: dict[str, Any], dropped: Dropped) -> list[Any]:
    """A streamed chunk's `choices` when it is a list; anything else is dropped and reported, never iterated."""
    choices = chunk.get("choices")
    if choices is None or isinstance(choices, list):
        return choices or []
    dropped.add("choices")
    return []


def read_answer(path: str, obj: Any) -> Answer:
    """Read a non-streamed chat or text completion answer through the allow-list."""
    dropped = Dropped()
    if not isinstance(obj, dict):
        raise InvalidAnswer("upstream answer is not a JSON object")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InvalidAnswer("upstream answer has no choices")
    envelope = envelope_of(path, obj, dropped, chunk=False)
    dropped.unknown("", obj, (*ENVELOPE_IDS, "object", "created", "choices", "usage"))
    for i in range(1, len(choices)):
        dropped.add(f"choices[{i}]")  # the proxy asks for one choice (n=1); more are not checked
    first = choices[0]
    choice: dict[str, Any] = {"index": 0}
    if path == COMPLETIONS:
        text = text_of(first, "text", "choice", dropped) or ""
        texts = [("text", text)]
        choice["text"] = text
        if "logprobs" in first:
            choice["logprobs"] = completion_logprobs(first.get("logprobs"), text, dropped)
        known: tuple[str, ...] = ("index", "text", "logprobs", "finish_reason")
    else:
        message, texts = read_message(first.get("message"), dropped)
        choice["message"] = message
        if "logprobs" in first:
            choice["logprobs"] = chat_logprobs(first.get("logprobs"), message, dropped)
        known = ("index", "message", "logprobs", "finish_reason")
    dropped.unknown("choice", first, known)
    choice["finish_reason"] = finish_reason_of(first, "choice", dropped)
    if "usage" in obj:
        envelope["usage"] = usage_of(obj["usage"], dropped)
    return Answer(envelope, choice, texts, dropped)


def read_message(message: Any, dropped: Dropped) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The allow-listed message and its texts."""
    out: dict[str, Any] = {"role": "assistant"}
    texts: list[tuple[str, str]] = []
    if not isinstance(message, dict):
        if message is not None:
            dropped.add("message")
        return {**out, "content": None}, texts
    for key in MESSAGE_TEXT:
        if key in message:
            value = text_of(message, key, "message", dropped)
            out[key] = value
            texts.append((key, value or ""))
    if isinstance(message.get("tool_calls"), list):
        calls = []
        for i, call in enumerate(message["tool_calls"]):
            read = read_tool_call(call, f"message.tool_calls[{i}]", dropped)
            if read is not None:
                calls.append(read)
                texts.append((f"tool_calls[{i}]", tool_call_text(**read["function"])))
        out["tool_calls"] = calls
    elif message.get("tool_calls") is not None:
        dropped.add("message.tool_calls")
    if isinstance(message.get("function_call"), dict):
        function = read_function(message["function_call"], "message.function_call", dropped)
        out["function_call"] = function
        texts.append(("function_call", tool_call_text(**function)))
    elif message.get("function_call") is not None:
        dropped.add("message.function_call")
    if isinstance(message.get("audio"), dict):
        audio = message["audio"]
        transcript = text_of(audio, "transcript", "message.audio", dropped) or ""
        released = {"transcript": transcript}
        if identifier(audio, "id", "message.audio", dropped):
            released["id"] = audio["id"]
        if isinstance(audio.get("data"), str) and BASE64.fullmatch(audio["data"]):
            released["data"] = audio["data"]  # the spoken form of the checked transcript
        elif audio.get("data") is not None:
            dropped.add("message.audio.data")  # not base64 audio: text no check covered
        if is_number(audio.get("expires_at")):
            released["expires_at"] = audio["expires_at"]
        dropped.unknown("message.audio", audio, ("id", "data", "expires_at", "transcript"))
        out["audio"] = released
        texts.append(("audio.transcript", transcript))
    elif message.get("audio") is not None:
        dropped.add("message.audio")
    dropped.unknown("message", message, ("role", *MESSAGE_TEXT, "tool_calls", "function_call", "audio"))
    return out, texts


def read_function(function: dict[str, Any], where: str, dropped: Dropped) -> dict[str, str]:
    """A function's name and arguments as strings (arguments given as an object are serialized, as sent)."""
    arguments = function.get("arguments")
    if isinstance(arguments, dict | list):
        arguments = json.dumps(arguments, ensure_ascii=False)
    elif not isinstance(arguments, str):
        if arguments is not None:
            dropped.add(f"{where}.arguments")
        arguments = ""
    name = function.get("name") if isinstance(function.get("name"), str) else ""
    dropped.unknown(where, function, ("name", "arguments"))
    return {"name": name, "arguments": arguments}


def read_tool_call(call: Any, where: str, dropped: Dropped) -> dict[str, Any] | None:
    """A function tool call (id, type, function); other kinds of tool call are dropped."""
    if (
        not isinstance(call, dict)
        or call.get("type", "function") != "function"
        or not isinstance(call.get("function"), dict)
    ):
        dropped.add(where)
        return None
    out: dict[str, Any] = {"type": "function"}
    call_id = identifier(call, "id", where, dropped)
    if call_id is not None:
        out["id"] = call_id
    out["function"] = read_function(call["function"], f"{where}.function", dropped)
    dropped.unknown(where, call, ("id", "type", "function", "index"))
    return out


def token_entries(
    entries: Any, text: str | None, where: str, dropped: Dropped
) -> list[dict[str, Any]] | None:
    """Chat logprob entries, released only when their tokens spell exactly the checked `text`."""
    if not isinstance(entries, list):
        if entries is not None:
            dropped.add(where)
        return None
    ok = all(
        isinstance(e, dict) and isinstance(e.get("token"), str) and is_number(e.get("logprob"))
        for e in entries
    )
    if not ok or "".join(e["token"] for e in entries) != (text or ""):
        dropped.add(where)
        return None
    out = []
    for e in entries:
        encoded = list(e["token"].encode())
        out.append(
            {
                "token": e["token"],
                "logprob": e["logprob"],
                "bytes": encoded if e.get("bytes") == encoded else None,
                "top_logprobs": [],
            }
        )
        if e.get("top_logprobs"):
            dropped.add(f"{where}.top_logprobs")
    return out


def chat_logprobs(logprobs: Any, message: dict[str, Any], dropped: Dropped) -> dict[str, Any] | None:
    """The logprobs of a chat choice for its checked content and refusal tokens."""
    if not isinstance(logprobs, dict):
        if logprobs is not None:
            dropped.add("logprobs")
        return None
    out = {
        key: token_entries(logprobs.get(key), message.get(key), f"logprobs.{key}", dropped)
        for key in ("content", "refusal")
        if key in logprobs
    }
    dropped.unknown("logprobs", logprobs, ("content", "refusal"))
    return out


def completion_logprobs(logprobs: Any, text: str, dropped: Dropped) -> dict[str, Any] | None:
    """A text completion's logprobs, released only when their tokens spell exactly the checked text."""
    if not isinstance(logprobs, dict):
        if logprobs is not None:
            dropped.add("logprobs")
        return None
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens) or "".join(tokens) != text:
        dropped.add("logprobs")
        return None
    out: dict[str, Any] = {"tokens": tokens}
    for key, valid in (
        ("token_logprobs", lambda v: v is None or is_number(v)),
        ("text_offset", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    ):
        values = logprobs.get(key)
        if isinstance(values, list) and len(values) == len(tokens) and all(valid(v) for v in values):
            out[key] = values
        elif values is not None:
            dropped.add(f"logprobs.{key}")
    out["top_logprobs"] = None
    if logprobs.get("top_logprobs") and any(logprobs["top_logprobs"]):
        dropped.add("logprobs.top_logprobs")
    dropped.unknown("logprobs", logprobs, ("tokens", "token_logprobs", "top_logprobs", "text_offset"))
    return out


class ChunkFields:
    """Reads the text pieces of one streamed choice's deltas and writes released pieces back as deltas.

    Fields are keys of `FieldStreamGuard`: ("content",), ("tool", index, "name"), ("tool", index, "arguments"),
    ("function_call", "arguments"), ("text",) for a text completion. A tool call's id and type are held with
    its text and sent with its first released piece.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.tool_ids: dict[int, str | None] = {}
        self.announced: set[int] = set()
        self.started = False

    def pieces(self, choice: dict[str, Any], dropped: Dropped) -> list[tuple[Hashable, str]]:
        """The (field, text) pieces of one chunk's choice; anything else in it is dropped and reported."""
        if choice.get("logprobs") is not None:
            dropped.add("chunk.logprobs")
        if self.path == COMPLETIONS:
            dropped.unknown("chunk", choice, ("index", "text", "logprobs", "finish_reason"))
            return [(("text",), text_of(choice, "text", "chunk", dropped) or "")]
        dropped.unknown("chunk", choice, ("index", "delta", "logprobs", "finish_reason"))
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            if delta is not None:
                dropped.add("chunk.delta")
            return []
        out: list[tuple[Hashable, str]] = []
        for key in MESSAGE_TEXT:
            out.append(((key,), text_of(delta, key, "delta", dropped) or ""))
        for call in delta.get("tool_calls") or []:
            index = call.get("index") if isinstance(call, dict) else None
            if (
                not isinstance(index, int)
                or isinstance(index, bool)
                or call.get("type", "function") != "function"
            ):
                dropped.add("delta.tool_calls")
                continue
            if "id" in call:
                self.tool_ids[index] = identifier(call, "id", "delta.tool_calls", dropped)
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            for part in ("name", "arguments"):
                out.append(
                    (
                        ("tool", index, part),
                        text_of(function, part, "delta.tool_calls.function", dropped) or "",
                    )
                )
            dropped.unknown("delta.tool_calls", call, ("index", "id", "type", "function"))
        if isinstance(delta.get("function_call"), dict):
            function = delta["function_call"]
            for part in ("name", "arguments"):
                out.append(
                    (("function_call", part), text_of(function, part, "delta.function_call", dropped) or "")
                )
        dropped.unknown("delta", delta, ("role", *MESSAGE_TEXT, "tool_calls", "function_call"))
        return [(key, text) for key, text in out if text]

    def choice(self, pieces: list[tuple[Hashable, str]], finish_reason: str | None) -> dict[str, Any]:
        """One outgoing choice (index 0) holding the released pieces, merged per field."""
        if self.path == COMPLETIONS:
            text = "".join(text for _, text in pieces)
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        delta: dict[str, Any] = {}
        if not self.started:
            delta["role"] = "assistant"
            self.started = True
        calls: dict[int, dict[str, Any]] = {}
        for key, text in pieces:
            if key[0] == "tool":
                _, index, part = key
                call = calls.setdefault(index, {"index": index, "function": {}})
                if index not in self.announced:
                    self.announced.add(index)
                    call["type"] = "function"
                    if self.tool_ids.get(index):
                        call["id"] = self.tool_ids[index]
                call["function"][part] = call["function"].get(part, "") + text
            elif key[0] == "function_call":
                function = delta.setdefault("function_call", {})
                function[key[1]] = function.get(key[1], "") + text
            else:
                delta[key[0]] = delta.get(key[0], "") + text
        if calls:
            delta["tool_calls"] = [calls[i] for i in sorted(calls)]
        return {"index": 0, "delta": delta, "finish_reason": finish_reason}
