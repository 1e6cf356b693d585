"""Conversations with a model: the chat template, sampling settings, streamed text and the state of
one conversation. The terminal chat (brlm.infer.repl, `brlm chat`) and the future HTTP server are
front ends over `ChatSession`.

    from brlm.infer.chat import ChatSession, ChatSettings
    from brlm.infer.load import load_model
    session = ChatSession(load_model("runs/sft"), mode="chat", system="Responda em português.")
    for piece in session.reply("Qual é a capital do Brasil?"):   # text as it is generated
        print(piece, end="", flush=True)
    session.messages   # [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]

Template: a Hugging Face tokenizer with a `chat_template` renders the conversation itself
(`apply_chat_template`); a brlm run uses `render_chat_text`, the Python twin of the PT-BR template
`brlm export hf` writes (brlm.tokenizers.hf.CHAT_TEMPLATE; a test keeps them equal), so a run
and its export see the same ids. In "continue" mode (base models) each message is a prompt to be
continued, without history.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from brlm.errors import BrlmError
from brlm.infer.engine import Engine, context_limit, stream_generate
from brlm.infer.sampling import make_sampler
from brlm.tokenizers.hf import ROLE_MARKERS

MODES = ("auto", "chat", "continue")


def render_chat_text(messages: list[dict[str, str]], eos_token: str = "</s>", add_generation_prompt: bool = True) -> str:
    """The PT-BR chat template as text: `<|papel|>` on its own line, then the content; an
    assistant turn ends with eos. Same output as brlm.tokenizers.hf.CHAT_TEMPLATE under jinja."""
    out = []
    for m in messages:
        role = m.get("role")
        if role not in ROLE_MARKERS:
            raise BrlmError(f"papel desconhecido: {role!r} (use system, user ou assistant)")
        end = eos_token if role == "assistant" else ""
        out.append(f"{ROLE_MARKERS[role]}\n{m['content']}{end}\n")
    if add_generation_prompt:
        out.append(f"{ROLE_MARKERS['assistant']}\n")
    return "".join(out)


def _hf_template_owner(tokenizer: Any) -> Any | None:
    """The transformers tokenizer behind brlm's HFTokenizer when it has a chat template."""
    inner = getattr(tokenizer, "tok", None)
    return inner if inner is not None and getattr(inner, "chat_template", None) else None


def chat_prompt_ids(messages: list[dict[str, str]], tokenizer: Any, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the conversation in the model's chat template, ready for the assistant's turn."""
    hf = _hf_template_owner(tokenizer)
    if hf is not None:
        text = hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
        return tokenizer.encode(text)  # special tokens in the text (eos) become their ids
    eos = tokenizer.piece(tokenizer.eos_id) if tokenizer.eos_id >= 0 else ""
    text = render_chat_text(messages, eos, add_generation_prompt)
    if not eos:
        return tokenizer.encode(text)
    # SentencePiece spells a literal "</s>" out; the turn end must be the eos id, as in the
    # Hugging Face tokenizer, which also encodes the text between special tokens piece by piece.
    ids: list[int] = []
    for i, part in enumerate(text.split(eos)):
        if i:
            ids.append(tokenizer.eos_id)
        if part:
            ids += tokenizer.encode(part)
    return ids


def detect_mode(lm: Any) -> str:
    """"chat" for a model tuned to the chat template, "continue" for a base model.

    Chat: an adapter (SFT), a Hugging Face folder with a chat template that is not the plain
    export of a pretraining run (export.json), a run whose tokenizer has the role markers as
    single tokens. A run's pretraining checkpoint is a base model."""
    meta, tok = lm.meta, lm.tokenizer
    if meta.get("adapter"):
        return "chat"
    if meta.get("kind") == "hf":
        exported_base = (Path(meta["source"]) / "export.json").is_file()
        return "chat" if _hf_template_owner(tok) is not None and not exported_base else "continue"
    markers = ROLE_MARKERS.values()
    return "chat" if all(len(tok.encode(m)) == 1 for m in markers) else "continue"


@dataclass
class ChatSettings:
    """Sampling settings a conversation can change with `/set KEY VALUE`."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 50
    max_tokens: int = 200
    repetition_penalty: float = 1.1
    seed: int = 0

    _RANGES = {
        "temperature": (0.0, 10.0), "top_p": (0.0, 1.0), "top_k": (0, 1_000_000), "max_tokens": (1, 1_000_000),
        "repetition_penalty": (0.01, 10.0), "seed": (0, 2**63 - 1),
    }

    def set(self, key: str, value: str) -> None:
        """Parse and check `value` for `key`; BrlmError with the accepted range otherwise."""
        key = key.replace("-", "_")
        names = [f.name for f in dataclasses.fields(self)]
        if key not in names:
            raise BrlmError(f"/set {key}: desconhecido; use um de {', '.join(names)}")
        kind = type(getattr(self, key))
        try:
            parsed = kind(value) if kind is float else int(value)
        except ValueError:
            raise BrlmError(f"/set {key} {value}: esperava um {'número' if kind is float else 'inteiro'}") from None
        lo, hi = self._RANGES[key]
        if not lo <= parsed <= hi or (key == "top_p" and parsed == 0):
            raise BrlmError(f"/set {key} {value}: fora do intervalo [{lo}, {hi}]" + (" (e > 0)" if key == "top_p" else ""))
        setattr(self, key, parsed)

    def sampler(self):
        return make_sampler(self.temperature, self.top_k, self.top_p, self.repetition_penalty)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_run(cls, meta: dict[str, Any]) -> "ChatSettings":
        """Defaults, with the run's own sampling settings (sample.*) where it has them."""
        s = ((meta.get("config") or {}).get("sample")) or {}
        out = cls()
        for key, src in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                         ("repetition_penalty", "repetition_penalty"), ("seed", "seed")):
            if s.get(src) is not None:
                setattr(out, key, type(getattr(out, key))(s[src]))
        return out


class TextStream:
    """Token ids in, printable text out, as soon as it is safe to show: an incomplete UTF-8
    character (byte-fallback pieces) and the start of a stop string are held back until known."""

    def __init__(self, tokenizer: Any, stop_strings: list[str] | None = None):
        self.tok, self.stops = tokenizer, [s for s in (stop_strings or []) if s]
        self.ids: list[int] = []
        self.shown = 0  # characters of the decoded text already handed out
        self.stopped: str | None = None

    def text(self) -> str:
        """The whole answer so far, cut before a stop string."""
        full = self.tok.decode(self.ids)
        cut = min((i for i in (full.find(s) for s in self.stops) if i >= 0), default=-1)
        return full if cut < 0 else full[:cut]

    def push(self, token: int) -> str:
        self.ids.append(token)
        full = self.tok.decode(self.ids)
        for s in self.stops:
            if (i := full.find(s)) >= 0:
                self.stopped = s
                full = full[:i]
        safe = len(full) if self.stopped else len(full.rstrip("\ufffd"))
        if not self.stopped:  # hold back a tail that may grow into a stop string
            for s in self.stops:
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if full[:safe].endswith(s[:k]):
                        safe -= k
                        break
        piece, self.shown = full[self.shown:safe], max(self.shown, safe)
        return piece

    def flush(self) -> str:
        """What is left to show once the answer is over."""
        rest = self.text()[self.shown:]
        self.shown += len(rest)
        return rest


class ChatSession:
    """One conversation: messages, settings, and `reply` streaming the next assistant turn."""

    def __init__(self, lm: Any, mode: str = "auto", settings: ChatSettings | None = None, system: str | None = None,
                 device: str | torch.device = "cpu", compile: bool = False, dtype: str = "fp32"):
        if mode not in MODES:
            raise BrlmError(f"--mode {mode}: expected one of {', '.join(MODES)}")
        self.lm, self.device = lm, device
        # One batch-1 engine for the whole conversation (cache, compiled step, bf16 weights made once).
        self.engine = Engine(lm.model, 1, device=device, compile=compile, dtype=dtype)
        if compile:
            self.engine.warm_up()  # captured now, not in the middle of the first answer
        self.mode = detect_mode(lm) if mode == "auto" else mode
        self.settings = settings or ChatSettings.from_run(lm.meta)
        self.system = system
        self.messages: list[dict[str, Any]] = []
        self.turns = 0  # answers given so far: answer i samples with seed + i
        self.last_info: dict[str, Any] = {}

    def reset(self) -> None:
        self.messages, self.turns = [], 0

    def conversation(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def prompt_ids(self, user_text: str) -> tuple[list[int], int]:
        """(ids, turns dropped): the conversation with the new message; the oldest exchanges are
        dropped (the system message kept) while it leaves less than half the context to answer."""
        if self.mode == "continue":
            return self.lm.tokenizer.encode(user_text), 0
        convo = self.conversation() + [{"role": "user", "content": user_text}]
        limit = context_limit(self.lm.model)
        room = min(self.settings.max_tokens, limit // 2) if limit else 0
        first = 1 if self.system else 0
        dropped = 0
        ids = chat_prompt_ids(convo, self.lm.tokenizer)
        while limit and len(ids) > limit - room and len(convo) - first > 1:
            del convo[first]
            dropped += 1
            ids = chat_prompt_ids(convo, self.lm.tokenizer)
        return ids, dropped

    def reply(self, user_text: str) -> Iterator[str]:
        """Yield the answer's text as it is generated. Closing the iterator early (Ctrl-C, a client
        that went away) keeps what was shown as the answer, marked `interrupted`."""
        ids, dropped = self.prompt_ids(user_text)
        s = self.settings
        stops = list(ROLE_MARKERS.values()) if self.mode == "chat" else []
        stream = TextStream(self.lm.tokenizer, stops)
        gen = torch.Generator(device=self.device).manual_seed(s.seed + self.turns)
        tokens = stream_generate(self.lm.model, ids, s.max_tokens, s.sampler(), generator=gen,
                                 eos_id=self.lm.tokenizer.eos_id, device=self.device, engine=self.engine,
                                 stop=(lambda _new: f"stop string {stream.stopped!r}" if stream.stopped else None))
        info: dict[str, Any] = {"prompt_tokens": len(ids), "dropped_turns": dropped, "interrupted": True}
        try:
            while True:
                try:
                    token = next(tokens)
                except StopIteration as done:
                    info.update(done.value or {}, interrupted=False)
                    break
                if piece := stream.push(token):
                    yield piece
            if rest := stream.flush():
                yield rest
        finally:
            tokens.close()
            info["new_tokens"] = len(stream.ids)
            self.last_info = info
            self.turns += 1
            self.messages.append({"role": "user", "content": user_text})
            answer = {"role": "assistant", "content": stream.text()}
            if info["interrupted"]:
                answer["interrupted"] = True
            self.messages.append(answer)

    def to_json(self) -> dict[str, Any]:
        """What `/save` writes: enough to read the conversation back and know how it was made."""
        meta = self.lm.meta
        return {
            "model": meta.get("source"), "checkpoint": meta.get("checkpoint"), "step": meta.get("step"),
            "adapter": meta.get("adapter"), "quantize": meta.get("quantize"), "mode": self.mode,
            "settings": self.settings.as_dict(), "system": self.system, "messages": self.messages,
        }

    def save(self, path: str | Path) -> Path:
        from brlm.io.files import write_json

        path = Path(path)
        try:
            write_json(path, self.to_json())
        except OSError as e:
            raise BrlmError(f"/save {path}: {e.strerror or e}") from None
        return path

