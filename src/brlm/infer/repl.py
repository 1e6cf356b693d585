"""The terminal chat loop behind `brlm chat`: read a line, answer it as it is generated, obey the
slash commands. Works the same on a terminal and through a pipe (`printf 'Olá\\n' | brlm chat …`):
the answer goes to stdout, the status line and messages to stderr, the prompt only on a terminal.

Ctrl-C during an answer stops that answer and keeps the conversation (SIGINT only sets a flag
while an answer streams; the loop checks it between tokens, so the model is never interrupted in
the middle of a step). Ctrl-C at the prompt only reminds how to leave; EOF (Ctrl-D) leaves.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, TextIO

from brlm.errors import BrlmError
from brlm.infer.chat import ChatSession

HELP = """comandos:
  /reset               começa uma conversa nova (a mensagem de sistema continua)
  /set                 mostra os ajustes; /set CHAVE VALOR muda um: temperature, top_p, top_k,
                       max_tokens, repetition_penalty, seed (ex.: /set temperature 0.7)
  /system TEXTO        mensagem de sistema (/system sozinho remove)
  /save ARQUIVO        grava a conversa em JSON
  /help                esta ajuda
  /sair                sai (também Ctrl-D)
Ctrl-C interrompe a resposta em andamento sem sair."""

EXIT_COMMANDS = ("/sair", "/exit", "/quit")


class _StopFlag:
    """SIGINT handler for the length of one answer: remember the interrupt instead of raising."""

    def __init__(self) -> None:
        self.hit = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.hit = True

    def __enter__(self) -> "_StopFlag":
        self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self.previous)


class Repl:
    def __init__(self, session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr):
        self.session, self.stdin, self.stdout, self.stderr = session, stdin, stdout, stderr
        self.interactive = stdin.isatty()
        if self.interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:
                pass

    def say(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def read_line(self) -> str | None:
        """The next line, or None at end of input."""
        if self.interactive:
            try:
                return input("você> ")  # readline editing and history when the module is there
            except EOFError:
                return None
        line = self.stdin.readline()
        return None if line == "" else line

    def answer(self, text: str) -> None:
        s = self.session
        with _StopFlag() as flag:
            stream = s.reply(text)
            try:
                for piece in stream:
                    self.stdout.write(piece)
                    self.stdout.flush()
                    if flag.hit:
                        break
            finally:
                stream.close()  # records the (partial) answer in the conversation
        self.stdout.write("\n")
        self.stdout.flush()
        info = s.last_info
        rate = info["new_tokens"] / info["seconds"] if info.get("seconds") else 0.0
        notes = ["interrompido"] if info.get("interrupted") else []
        if info.get("dropped_turns"):
            notes.append(f"{info['dropped_turns']} mensagens antigas fora do contexto")
        if info.get("warning"):
            notes.append(info["warning"])
        self.say(f"[{info['new_tokens']} tokens, {rate:.0f} tokens/s{''.join(' · ' + n for n in notes)}]")

    def command(self, line: str) -> bool:
        """Run a slash command; False means leave."""
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        s = self.session
        if cmd in EXIT_COMMANDS:
            return False
        if cmd == "/help":
            self.say(HELP)
        elif cmd == "/reset":
            s.reset()
            self.say("(conversa nova)")
        elif cmd == "/system":
            s.system = arg or None
            self.say(f"(mensagem de sistema: {arg!r})" if arg else "(sem mensagem de sistema)")
        elif cmd == "/set":
            if arg:
                key, _, value = arg.partition(" ")
                if not value.strip():
                    raise BrlmError(f"/set {key}: falta o valor (ex.: /set {key} 0.7)")
                s.settings.set(key, value.strip())
            self.say(" ".join(f"{k}={v}" for k, v in s.settings.as_dict().items()))
        elif cmd == "/save":
            if not arg:
                raise BrlmError("/save: falta o nome do arquivo (ex.: /save conversa.json)")
            self.say(f"(conversa gravada em {s.save(arg)})")
        else:
            raise BrlmError(f"{cmd}: comando desconhecido; /help lista os comandos")
        return True

    def run(self) -> int:
        s = self.session
        d = s.engine.describe()
        self.say(f"brlm chat · modo {s.mode} · {s.lm.meta.get('source')}"
                 f"{' · int8' if s.lm.meta.get('quantize') else ''} · pesos {d['dtype']}"
                 f"{' · passo compilado' if d['compiled'] else ''} · /help para os comandos, /sair para sair")
        while True:
            try:
                line = self.read_line()
            except KeyboardInterrupt:
                self.say("\n(use /sair ou Ctrl-D para sair)")
                continue
            if line is None:
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                try:
                    if not self.command(line):
                        return 0
                except BrlmError as e:
                    self.say(f"erro: {e}")
                continue
            try:
                self.answer(line)
            except KeyboardInterrupt:  # a second Ctrl-C outside the streaming window
                self.say("\n(interrompido)")


def run_chat(session: ChatSession, **streams: TextIO) -> int:
    return Repl(session, **streams).run()
