"""`python -m brlm <verb>` (also under `torchrun -m brlm <verb>`)."""

from brlm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
