"""brlm: Brazilian-Portuguese language models on the hardware people actually have.

Run `brlm --help` for the verbs, or `python -m brlm run demo` for the whole pipeline on the
built-in demo corpus.
"""

__version__ = "0.1.0"

from brlm.errors import BrlmError  # noqa: E402

__all__ = ["BrlmError", "__version__"]
