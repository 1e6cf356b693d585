"""A run's tokenizer as a Hugging Face fast tokenizer (`tokenizer.json` + `tokenizer_config.json`),
built with the `tokenizers` library from the SentencePiece model (or the char vocabulary), so
`AutoTokenizer.from_pretrained(folder)` works offline and gives brlm's ids exactly.

    from brlm.tokenizers.hf import save_hf_tokenizer
    save_hf_tokenizer("runs/demo/tokenizer", "out/", model_max_length=256)

What carries over from SentencePiece (trained with identity normalisation, no dummy prefix,
byte fallback; brlm.tokenizers.spm):
* the pieces, their ids and scores; unigram -> `models.Unigram`, bpe -> `models.BPE` with merges
  ranked by the merged piece's score (SentencePiece's BPE merge order);
* spaces become "▁" (SentencePiece's whitespace escape) and nothing else is normalised; no
  pre-tokenizer, so the lattice / merges see the whole text, as SentencePiece does at encode time;
* byte fallback: a character outside the vocabulary becomes its UTF-8 byte pieces <0xNN>;
* user-defined symbols (the newline, cleaning markers such as <|endoftext|>, <CPF>) are added
  tokens matched whole before the model, as SentencePiece matches them;
* <unk>, <s>, </s> (and <pad> when the run has one) are the special tokens. No bos/eos is added
  by `tokenizer(text)`: brlm trains on text without them (documents end with eos).

One deliberate difference: a literal "<s>" or "</s>" inside a text is the special token here (the
Hugging Face convention, which the chat template relies on for eos); SentencePiece spells it out.

The char tokenizer (brlm.tokenizers.char) becomes a `WordLevel` model over single characters
(a regex pre-tokenizer isolates each one), with its symbols as added tokens.

Chat template (CHAT_TEMPLATE, stored as `chat_template` in tokenizer_config.json): turns are
introduced by a Portuguese role marker on a line of its own and the assistant's turn ends with eos:

    <|sistema|>
    Você é um assistente prestativo.
    <|usuario|>
    Qual é a capital do Brasil?
    <|assistente|>
    A capital do Brasil é Brasília.</s>

`add_generation_prompt=True` ends the text with "<|assistente|>\\n". brlm's SFT trains with this
format. The markers are ordinary text unless the run's tokenizer was trained with them as
user-defined symbols (`tokenizer.user_defined_symbols=<|sistema|>,<|usuario|>,<|assistente|>`),
in which case each is one token; the exported model has no room for new ids, so none are added here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brlm.errors import BrlmError
from brlm.io.files import read_json, write_json

ROLE_MARKERS = {"system": "<|sistema|>", "user": "<|usuario|>", "assistant": "<|assistente|>"}

# No whitespace control ("{%-"): it would eat the newlines that end each turn. Hugging Face renders
# with trim_blocks, which drops only a newline right after a tag (there is none).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|sistema|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|usuario|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistente|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% else %}{{ raise_exception('papel desconhecido: ' ~ message['role'] ~ ' (use system, user ou assistant)') }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistente|>\n{% endif %}"
)

_SPECIAL_NAMES = {"unk_id": "unk_token", "bos_id": "bos_token", "eos_id": "eos_token", "pad_id": "pad_token"}


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise BrlmError("exporting a tokenizer to Hugging Face needs the tokenizers package: pip install 'brlm[hf]'") from None
    return tokenizers


def _user_symbols(config: dict[str, Any]) -> list[str]:
    """The user-defined symbols train_spm gave SentencePiece: the newline, then the configured ones."""
    given = [s for s in (x.strip() for x in str(config.get("user_defined_symbols", "")).split(",")) if s]
    return ["\n"] + [s for s in given if s != "\n"]


def _bpe_merges(vocab: dict[str, int], scores: list[float], skip: set[str]) -> list[tuple[str, str]]:
    """Every split of a piece into two pieces, ordered by the merged piece's score (higher first),
    which is the order SentencePiece's BPE applies merges in."""
    merges = []
    for piece, i in vocab.items():
        if piece in skip:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab and left not in skip and right not in skip:
                merges.append((-scores[i], i, vocab[left], vocab[right], left, right))
    merges.sort()
    return [(m[4], m[5]) for m in merges]


def _from_spm(folder: Path, meta: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    import sentencepiece as spm

    tk = _tokenizers()
    from tokenizers import decoders, models, normalizers

    sp = spm.SentencePieceProcessor(model_file=str(folder / meta["model_file"]))
    config = meta.get("config") or {}
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]
    control = {i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)}
    byte_fallback = any(sp.is_byte(i) for i in range(n))
    if config.get("model_type", "unigram") == "bpe":
        vocab = {p: i for i, p in enumerate(pieces)}
        skip = {pieces[i] for i in range(n) if i in control or sp.is_byte(i)} | set(_user_symbols(config))
        model = models.BPE(vocab, _bpe_merges(vocab, scores, skip), unk_token=sp.id_to_piece(sp.unk_id()),
                           fuse_unk=True, byte_fallback=byte_fallback)
    else:
        model = models.Unigram(list(zip(pieces, scores)), unk_id=sp.unk_id(), byte_fallback=byte_fallback)
    tok = tk.Tokenizer(model)
    tok.normalizer = normalizers.Replace(" ", "\u2581")  # SentencePiece's whitespace escape; identity otherwise
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    symbols = []
    for s in _user_symbols(config):
        if sp.piece_to_id(s) == sp.unk_id():
            raise BrlmError(f"{folder / meta['model_file']}: user-defined symbol {s!r} is not a piece of the model")
        symbols.append(tk.AddedToken(s, normalized=False, special=False))
    tok.add_tokens(symbols)
    ids = {"unk_id": sp.unk_id(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "pad_id": sp.pad_id()}
    specials = {_SPECIAL_NAMES[k]: pieces[i] for k, i in ids.items() if i >= 0}
    tok.add_special_tokens([tk.AddedToken(p, normalized=False, special=True) for p in specials.values()])
    return tok, specials


def _from_char(folder: Path, meta: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    tk = _tokenizers()
    from tokenizers import Regex, decoders, models, pre_tokenizers

    vocab_meta = read_json(folder / meta["model_file"])
    pieces: list[str] = vocab_meta["pieces"]
    special = set(vocab_meta["special_ids"])
    unk = pieces[vocab_meta["unk_id"]]
    tok = tk.Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    # brlm decodes <unk> as U+FFFD and drops the other specials; pieces are joined without spaces.
    tok.decoder = decoders.Sequence([decoders.Replace(unk, "\ufffd"), decoders.Fuse()])
    tok.add_tokens([tk.AddedToken(s, normalized=False, special=False) for s in vocab_meta.get("symbols", [])])
    specials = {_SPECIAL_NAMES[k]: pieces[vocab_meta[k]] for k in _SPECIAL_NAMES if vocab_meta.get(k, -1) >= 0}
    tok.add_special_tokens([tk.AddedToken(pieces[i], normalized=False, special=True) for i in sorted(special)])
    return tok, specials


def build_fast_tokenizer(tokenizer_dir: str | Path) -> tuple[Any, dict[str, str]]:
    """(tokenizers.Tokenizer, {"unk_token": ..., "bos_token": ..., ...}) for a run's tokenizer folder."""
    folder = Path(tokenizer_dir)
    meta_path = folder / "tokenizer.json"
    if not meta_path.is_file():
        raise BrlmError(f"{folder}: no tokenizer here (tokenizer.json missing); run `brlm tokenizer train` first")
    meta = read_json(meta_path)
    kind = meta.get("kind")
    if kind == "spm":
        return _from_spm(folder, meta)
    if kind == "char":
        return _from_char(folder, meta)
    raise BrlmError(f"{meta_path}: unknown tokenizer kind {kind!r}; expected 'spm' or 'char'")


def save_hf_tokenizer(tokenizer_dir: str | Path, out_dir: str | Path, model_max_length: int | None = None) -> list[str]:
    """Write tokenizer.json, tokenizer_config.json (with CHAT_TEMPLATE) and the special-tokens map
    into out_dir. Returns the names of the files written."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        raise BrlmError("exporting to Hugging Face needs transformers: pip install 'brlm[hf]'") from None
    tok, specials = build_fast_tokenizer(tokenizer_dir)
    kwargs: dict[str, Any] = {"model_max_length": model_max_length} if model_max_length else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, clean_up_tokenization_spaces=False, chat_template=CHAT_TEMPLATE, **specials, **kwargs
    )
    out_dir = Path(out_dir)
    before = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    fast.save_pretrained(str(out_dir))
    # transformers 5 keeps the template in chat_template.jinja and names its own backend class;
    # older versions read `chat_template` from tokenizer_config.json and know PreTrainedTokenizerFast.
    config_path = out_dir / "tokenizer_config.json"
    write_json(config_path, {**read_json(config_path), "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE})
    return sorted({p.name for p in out_dir.iterdir()} - before)
