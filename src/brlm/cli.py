"""`brlm <verb> …`: the verb table. Each verb is a module in brlm.verbs with `main(argv)`.

Imports are lazy so `brlm --help` stays fast. A BrlmError anywhere becomes one line on stderr
and exit code 2; so do argparse errors (unknown flags; prefixes of flags are not accepted) and
operating-system errors (read-only folder, disk full, a closed pipe).
"""

from __future__ import annotations

import importlib
import os
import sys

# verb -> (module, one-line description). tests/test_cli.py keeps this in sync with brlm/verbs/.
VERBS: dict[str, tuple[str, str]] = {
    "run": ("brlm.verbs.run", "run a whole preset: data -> tokenizer -> train -> eval -> samples -> report"),
    "data": ("brlm.verbs.data", "prepare a corpus: read, clean, deduplicate, split (data prepare)"),
    "tokenizer": ("brlm.verbs.tokenizer", "train a SentencePiece tokenizer on a run's training split"),
    "train": ("brlm.verbs.train", "tokenize into shards and train a model in a run folder"),
    "eval": ("brlm.verbs.eval", "evaluate a run's checkpoint (eval intrinsic): loss, ppl, accuracy, bits/byte"),
    "sample": ("brlm.verbs.sample", "generate text from a run's checkpoint"),
    "chat": ("brlm.verbs.chat", "talk to a model in the terminal (run, HF folder, + adapter), streamed"),
    "serve": ("brlm.verbs.serve", "OpenAI-compatible HTTP server with continuous batching and a web chat page"),
    "report": ("brlm.verbs.report", "render report.md from a run folder"),
    "estimate": ("brlm.verbs.estimate", "predict memory, compute and cost before a run (estimate memory|compute|fits)"),
    "runs": ("brlm.verbs.runs", "list run folders: status, preset, params, bits/byte, tokens, wall time (runs list)"),
    "export": ("brlm.verbs.export", "export a run's checkpoint and tokenizer as a Hugging Face folder (export hf)"),
    "finetune": ("brlm.verbs.finetune", "post-train a model with LoRA / QLoRA / full: finetune cpt|sft|dpo|merge"),
    "compare": ("brlm.verbs.compare", "side-by-side table of runs (Markdown + CSV) with loss/throughput plots"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    rows = "\n".join(f"  {v:<{width}}  {desc}" for v, (_, desc) in VERBS.items())
    return (
        "usage: brlm <verb> [options]\n\n"
        "brlm: modelos de linguagem em português do Brasil no hardware que você tem.\n\n"
        f"verbs:\n{rows}\n\n"
        "Run `brlm <verb> --help` for a verb's options. Example: brlm run demo"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        import brlm

        print(f"brlm {brlm.__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"brlm: error: unknown verb '{verb}'; expected one of: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    from brlm.errors import BrlmError

    module = importlib.import_module(VERBS[verb][0])
    try:
        code = int(module.main(rest) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handlers below
        return code
    except BrlmError as e:
        print(f"brlm {verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"brlm {verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `brlm … | head`: the reader left. Point stdout at /dev/null so the exit flush is quiet.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        print(f"brlm {verb}: error: output closed early (broken pipe)", file=sys.stderr)
        return 2
    except OSError as e:
        # The operating system said no (read-only folder, disk full, a file where a folder should be):
        # one line naming the file, as for any other bad input.
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"brlm {verb}: error: {where}{e.strerror or e.__class__.__name__ + ': ' + str(e)}", file=sys.stderr)
        return 2
