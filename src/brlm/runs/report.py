"""`brlm report RUN`: render report.md and a self-contained report.html (images embedded as
base64) from the files in a run folder alone.

Stages only write figures (JSON / JSONL); this module is the only one that formats them. The
report is built once as a list of blocks (heading, paragraph, table, image, sample) and each
block is rendered to Markdown and to HTML, so the two files always say the same thing.

    brlm report runs/demo    # -> runs/demo/report.md, runs/demo/report.html
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brlm.errors import BrlmError
from brlm.io.files import read_json, write_text
from brlm.io.logging import format_seconds, read_metrics
from brlm.io.run_folder import RunPaths, live_status
from brlm.runs.plots import loss_curve

# Keys of <run>/cost.json (written by the cost ledger), with their labels and formats.
COST_FIELDS = [
    ("flops_per_token", "FLOPs por token", "sci"),
    ("flops_per_token_6n", "FLOPs por token (6N)", "sci"),
    ("total_flops", "FLOPs totais", "sci"),
    ("achieved_flops_per_s", "FLOP/s alcançados", "sci"),
    ("mfu", "MFU", "pct"),
    ("peak_flops_per_s", "FLOP/s de pico", "sci"),
    ("device_name", "dispositivo", "str"),
    ("price_usd_per_hour", "preço (US$/h)", "money"),
    ("estimated_cost_usd", "custo estimado (US$)", "money"),
    ("estimated_cost_brl", "custo estimado (R$)", "money"),
    ("price_as", "preço como", "str"),
]


def _load(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as e:
        raise BrlmError(f"{path}: unreadable JSON ({e})") from None


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "sim" if x else "não"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def fmt_kind(x: Any, kind: str) -> str:
    if x is None or x == "":
        return "—"
    if kind == "sci" and isinstance(x, (int, float)):
        return f"{x:.3g}"
    if kind == "pct" and isinstance(x, (int, float)):
        return f"{100 * x:.2f}%"
    if kind == "money" and isinstance(x, (int, float)):
        return f"{x:,.4f}"
    return _fmt(x)


def _pass(ok: Any) -> str:
    return "—" if ok is None else ("passa" if ok else "FALHA")


@dataclass
class Report:
    """Blocks of a report, rendered to Markdown and to HTML."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def h3(self, text: str) -> None:
        self.blocks.append(("h3", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def sample(self, prompt: str, completion: str, note: str, warning: str | None = None) -> None:
        self.blocks.append(("sample", prompt, completion, note, warning))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            kind = b[0]
            if kind == "h2":
                out += [f"## {b[1]}", ""]
            elif kind == "h3":
                out += [f"### {b[1]}", ""]
            elif kind == "p":
                out += [b[1], ""]
            elif kind == "ul":
                out += [f"- {item}" for item in b[1]] + [""]
            elif kind == "table":
                cell = lambda s: _md_text(str(s)).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                out += ["| " + " | ".join(map(cell, b[1])) + " |", "|" + "---|" * len(b[1])]
                out += ["| " + " | ".join(map(cell, row)) + " |" for row in b[2]] + [""]
            elif kind == "img":
                out += [f"![{b[2]}]({b[1].name})", ""]
            elif kind == "sample":
                _, prompt, completion, note, warning = b
                prompt, completion = _md_text(prompt), _md_text(completion)
                out += [f"**Prompt:** {prompt}", "", f"> {prompt}**{completion}**".replace("\n", "\n> "), "",
                        f"<sub>{_md_text(note)}</sub>", ""]
                if warning:
                    out += [f"**Aviso:** {_md_text(warning)}", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{_inline(self.title)}</h1>"]
        for b in self.blocks:
            kind = b[0]
            if kind in ("h2", "h3"):
                body.append(f"<{kind}>{e(b[1])}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}"><figcaption>{e(b[2])}</figcaption></figure>')
            elif kind == "sample":
                _, prompt, completion, note, warning = b
                warn = f'<p class="warn">Aviso: {e(warning)}</p>' if warning else ""
                body.append(
                    f'<div class="sample"><p class="prompt">{e(prompt)}</p><blockquote>{e(prompt)}<b>{e(completion)}</b>'
                    f'</blockquote><p class="note">{e(note)}</p>{warn}</div>'
                )
        return HTML_PAGE.format(title=e(self.title.replace("`", "")), body="\n".join(body))


def _md_text(text: str) -> str:
    """Text from the corpus or the model, for report.md: raw HTML in it (a `<script>` a news page
    carried, or that a model learned) is shown, not rendered, as report.html does."""
    return html.escape(text, quote=False)


def _inline(text: str) -> str:
    """Escape, then turn `code` and **bold** from the Markdown text into HTML."""
    import re

    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)


HTML_PAGE = """<!DOCTYPE html>
<html lang="pt-BR"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #1d1d1f; background: #fff; }}
h1 {{ font-size: 1.6em; border-bottom: 2px solid #0a7d3b; padding-bottom: .3em; }}
h2 {{ margin-top: 1.6em; color: #0a5d2f; }}
table {{ border-collapse: collapse; margin: .6em 0; font-size: .92em; }}
th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: right; }}
th {{ background: #eef6f0; }}
td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
blockquote {{ border-left: 4px solid #0a7d3b; margin: .3em 0; padding: .3em .8em; background: #f7f7f7; white-space: pre-wrap; }}
.note {{ color: #666; font-size: .85em; margin-top: 0; }}
.warn {{ color: #a15c00; }}
code {{ background: #f2f2f2; padding: 0 .2em; }}
</style></head>
<body>
{body}
</body></html>
"""


def _config_summary(r: Report, cfg: dict[str, Any]) -> None:
    m, t, tk = cfg.get("model", {}), cfg.get("train", {}), cfg.get("tokenizer", {})
    r.h2("Configuração")
    r.table(
        ["arquitetura", "camadas", "cabeças (kv)", "n_embd", "contexto", "passos", "lote", "lr", "tokenizador"],
        [[
            _fmt(m.get("arch")), _fmt(m.get("n_layer")), f"{_fmt(m.get('n_head'))} ({_fmt(m.get('n_kv_head') or m.get('n_head'))})",
            _fmt(m.get("n_embd")), _fmt(m.get("block_size")), _fmt(t.get("max_steps")), _fmt(t.get("batch_size")),
            _fmt(t.get("lr"), 5), f"{_fmt(tk.get('kind'))} {_fmt(tk.get('model_type'))} {_fmt(tk.get('vocab_size'))}",
        ]],
    )


def _intrinsic(r: Report, ev: dict[str, Any]) -> None:
    r.h2("Avaliação intrínseca")
    r.p(
        f"Checkpoint `{ev.get('checkpoint', '—')}` (passo {_fmt(ev.get('step'))}), {_fmt(ev.get('windows'))} janelas fixas "
        f"de validação de {_fmt(ev.get('block_size'))} tokens, passo {_fmt(ev.get('stride'))} "
        f"(hash `{str(ev.get('windows_sha256', ''))[:12]}`)."
    )
    header = ["recorte", "bits por byte", "bits por caractere", "loss (nats/token)", "perplexidade", "acurácia", "tokens", "bytes"]

    def row(name: str, x: dict[str, Any]) -> list[str]:
        return [name, _fmt(x.get("bits_per_byte")), _fmt(x.get("bits_per_char")), _fmt(x.get("loss")), _fmt(x.get("perplexity"), 2),
                _fmt(x.get("accuracy")), _fmt(x.get("tokens")), _fmt(x.get("bytes"))]

    rows = [row("tudo", ev)] + [row(f"categoria: {k}", v) for k, v in sorted((ev.get("categories") or {}).items())]
    r.table(header, rows)
    if ev.get("tokens_per_s"):
        r.p(f"Vazão da avaliação: {_fmt(ev['tokens_per_s'], 0)} tokens/s.")
    r.p("Perplexidade só compara modelos com o mesmo tokenizador; bits por byte compara quaisquer dois.")


def _guardrails(r: Report, g: dict[str, Any]) -> None:
    a = g.get("aggregate", {})
    th = a.get("thresholds", {})
    r.h2("Guardrails das amostras")
    r.p(
        f"{_fmt(a.get('samples'))} amostras ({_fmt(g.get('num_seeds'))} sementes por prompt); "
        f"resultado: **{_pass(a.get('passed'))}** ({_fmt(a.get('samples_passed'))} de {_fmt(a.get('samples'))} amostras passam)."
    )
    r.table(
        ["verificação", "valor", "limite", "resultado"],
        [
            ["byte fallback (peças de byte / peças)", _fmt(a.get("byte_fallback_ratio")), f"≤ {_fmt(th.get('max_byte_fallback'))}", _pass(a.get("byte_fallback_pass"))],
            ["peças curtas (alfabéticas ≤ 2 caracteres / peças)", _fmt(a.get("short_piece_ratio")), f"≤ {_fmt(th.get('max_short_piece'))}", _pass(a.get("short_piece_pass"))],
            ["distinct-1 / 2 / 3", f"{_fmt(a.get('distinct_1'), 3)} / {_fmt(a.get('distinct_2'), 3)} / {_fmt(a.get('distinct_3'), 3)}", "—", "—"],
            ["maior n-grama repetido (palavras)", _fmt(a.get("longest_repeated_ngram")), "—", "—"],
            ["palavras nunca vistas no treino", _fmt(a.get("unseen_word_ratio")), "—", "—"],
        ],
    )


def _extrinsic(r: Report, ext: dict[str, Any]) -> None:
    """The section `brlm eval extrinsic run` left in extrinsic.json (tables built by its summary module)."""
    from brlm.eval.extrinsic.summary import agreement_table, comparison_table, judge_table, results_table

    r.h2("Avaliação extrínseca")
    if ext.get("notes"):
        r.bullets([str(n) for n in ext["notes"]])
    r.table(*results_table(ext))
    header, rows = comparison_table(ext)
    if rows:
        r.h3("Base × adaptado (mesmos itens)")
        r.table(header, rows)
    judge = ext.get("judge") or {}
    header, rows = judge_table(judge)
    if rows:
        r.h3("Juiz (LLM)")
        r.table(header, rows)
        header, rows = agreement_table(judge)
        if rows:
            r.table(header, rows)
    counts = ext.get("counts") or {}
    empty = {m: c["empty_outputs"] for m, c in counts.items() if c.get("empty_outputs")}
    cut = {m: c["truncated_prompts"] for m, c in counts.items() if c.get("truncated_prompts")}
    if empty or cut:
        r.p("; ".join([f"respostas vazias: {_fmt(v)} ({m})" for m, v in empty.items()]
                      + [f"prompts cortados à esquerda: {_fmt(v)} ({m})" for m, v in cut.items()]) + ".")


def _cost(r: Report, cost: dict[str, Any] | None) -> None:
    r.h2("Custo")
    cost = cost or {}
    r.table(["grandeza", "valor"], [[label, fmt_kind(cost.get(key), kind)] for key, label, kind in COST_FIELDS])
    if not cost:
        r.p("Sem `cost.json` nesta execução: os números de custo aparecem como —.")


def build_report(paths: RunPaths) -> tuple[Report, Path | None]:
    record = _load(paths.record) or {}
    summary = _load(paths.train_summary) or {}
    ev = _load(paths.eval) or {}
    samples = _load(paths.samples) or []
    guard = _load(paths.root / "guardrails.json")
    cost = _load(paths.root / "cost.json")
    data_m = _load(paths.data / "manifest.json") or {}
    shard_m = _load(paths.shards / "manifest.json") or {}
    tok = _load(paths.tokenizer / "tokenizer.json") or {}
    cfg = yaml.safe_load(paths.config.read_text(encoding="utf-8")) if paths.config.is_file() else {}
    rows = read_metrics(paths.metrics)
    png = loss_curve(rows, paths.root / "loss_curve.png", title=paths.root.name)

    r = Report(f"brlm — relatório da execução `{paths.root.name}`")
    env = record.get("environment", {})
    items = [
        f"preset: `{record.get('preset', '—')}` (escala `{record.get('scale', '—')}`), status: **{live_status(record) or '—'}**",
        f"início / fim: {record.get('started', '—')} / {record.get('finished', '—')}",
        f"código: brlm {env.get('brlm', '—')} @ `{env.get('git_sha') or 'sem git'}`; Python {env.get('python', '—')}, "
        f"torch {env.get('torch', '—')}; CPU: {env.get('cpu', '—')} ({env.get('cpu_count', '—')} núcleos); GPU: {env.get('gpu') or 'nenhuma'}",
    ]
    if record.get("error"):
        items.append(f"erro: `{record['error']}`")
    r.bullets(items)
    if cfg:
        _config_summary(r, cfg)

    if data_m:
        c = data_m.get("counts", {})
        tr, va = c.get("train", {}), c.get("val", {})
        r.h2("Dados")
        r.table(
            ["documentos lidos", "curtos descartados", "duplicados", "treino (docs / bytes)", "validação (docs / bytes)", "bytes UTF-8 inválidos"],
            [[_fmt(c.get("docs_in")), _fmt(c.get("dropped_short")), _fmt(c.get("dropped_duplicate")),
              f"{_fmt(tr.get('docs'))} / {_fmt(tr.get('bytes'))}", f"{_fmt(va.get('docs'))} / {_fmt(va.get('bytes'))}", _fmt(c.get("utf8_errors"))]],
        )
    if tok:
        tc = tok.get("config", {})
        r.h2("Tokenizador")
        text = (f"SentencePiece `{tc.get('model_type')}`, vocabulário {_fmt(tok.get('vocab_size'))}, byte fallback "
                f"{'sim' if tc.get('byte_fallback') else 'não'}; sha256 `{str(tok.get('sha256', ''))[:16]}`.")
        splits = shard_m.get("splits", {})
        if splits.get("train", {}).get("n_tokens"):
            s = splits["train"]
            text += f" Treino: {_fmt(s['n_tokens'])} tokens, {_fmt(s['n_bytes'] / s['n_tokens'], 2)} bytes por token."
        r.p(text)
    if summary:
        r.h2("Treino")
        r.table(
            ["parâmetros", "passos", "tokens vistos", "épocas", "tempo total", "tokens/s", "memória de pico (RSS)"],
            [[_fmt(summary.get("n_params")), _fmt(summary.get("steps")), _fmt(summary.get("tokens_seen")), _fmt(summary.get("epochs"), 2),
              format_seconds(summary.get("wall_time_s", 0)), _fmt(summary.get("tokens_per_s"), 0), f"{_fmt(summary.get('peak_rss_mb'), 0)} MB"]],
        )
        r.table(
            ["val loss inicial", "melhor val loss", "val loss final", "passo do melhor"],
            [[_fmt(summary.get("initial_val_loss")), _fmt(summary.get("best_val_loss")), _fmt(summary.get("final_val_loss")), _fmt(summary.get("best_step"))]],
        )
    if png:
        r.image(png, "curva de loss")
    if ev:
        _intrinsic(r, ev)
    if guard:
        _guardrails(r, guard)
    extrinsic = _load(paths.root / "extrinsic.json")
    if extrinsic:
        _extrinsic(r, extrinsic)
    _cost(r, cost)
    if samples:
        r.h2("Amostras")
        by_prompt: dict[str, list[dict[str, Any]]] = {}
        for s in samples:
            by_prompt.setdefault(s["prompt"], []).append(s)
        for group in by_prompt.values():
            for s in group:
                knobs = f"temperatura {s.get('temperature')}, top-k {s.get('top_k')}, top-p {s.get('top_p')}, semente {s.get('seed')}"
                r.sample(s["prompt"], s["completion"], knobs, s.get("warning"))
    return r, png


def render_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html into the run folder; returns the report.md path."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise BrlmError(f"{paths.root}: run folder not found")
    from brlm.runs import posttrain_report as pt

    if pt.is_track2(paths.root):
        for phase in ("base", "cpt", "sft", "dpo"):  # each phase is a run folder with its own report
            if (paths.root / phase / "run.json").is_file():
                render_report(paths.root / phase)
        r = pt.build_track2_report(paths)
    elif pt.is_posttrain(paths.root):
        r = pt.build_posttrain_report(paths)
    else:
        r, _ = build_report(paths)
    write_text(paths.report, r.markdown())
    write_text(paths.root / "report.html", r.html())
    return paths.report
