"""`brlm report RUN`: render report.md (+ loss_curve.png) from the files in a run folder alone.

Stages only write figures (JSON / JSONL); this module is the only one that formats them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brlm.errors import BrlmError
from brlm.runs.artifacts import read_json, write_text
from brlm.runs.logging import format_seconds, read_metrics
from brlm.runs.plots import loss_curve
from brlm.runs.registry import RunPaths


def _load(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as e:
        raise BrlmError(f"{path}: unreadable JSON ({e})") from None


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def render_report(run_dir: str | Path) -> Path:
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise BrlmError(f"{paths.root}: run folder not found")
    record = _load(paths.record) or {}
    summary = _load(paths.train_summary) or {}
    ev = _load(paths.eval) or {}
    samples = _load(paths.samples) or []
    data_m = _load(paths.data / "manifest.json") or {}
    tok = _load(paths.tokenizer / "tokenizer.json") or {}
    rows = read_metrics(paths.metrics)
    png = loss_curve(rows, paths.root / "loss_curve.png", title=paths.root.name)

    lines = [f"# brlm — relatório da execução `{paths.root.name}`", ""]
    env = record.get("environment", {})
    lines += [
        f"- preset: `{record.get('preset', '—')}` (escala `{record.get('scale', '—')}`), status: **{record.get('status', '—')}**",
        f"- início / fim: {record.get('started', '—')} / {record.get('finished', '—')}",
        f"- código: brlm {env.get('brlm', '—')} @ `{env.get('git_sha') or 'sem git'}`; Python {env.get('python', '—')}, "
        f"torch {env.get('torch', '—')}; CPU: {env.get('cpu', '—')} ({env.get('cpu_count', '—')} núcleos); GPU: {env.get('gpu') or 'nenhuma'}",
    ]
    if record.get("error"):
        lines.append(f"- erro: `{record['error']}`")
    lines.append("")

    if data_m:
        c = data_m.get("counts", {})
        tr, va = c.get("train", {}), c.get("val", {})
        lines += [
            "## Dados",
            "",
            "| documentos lidos | curtos descartados | duplicados | treino (docs / bytes) | validação (docs / bytes) | bytes UTF-8 inválidos |",
            "|---|---|---|---|---|---|",
            f"| {_fmt(c.get('docs_in'))} | {_fmt(c.get('dropped_short'))} | {_fmt(c.get('dropped_duplicate'))} | "
            f"{_fmt(tr.get('docs'))} / {_fmt(tr.get('bytes'))} | {_fmt(va.get('docs'))} / {_fmt(va.get('bytes'))} | {_fmt(c.get('utf8_errors'))} |",
            "",
        ]
    if tok:
        tc = tok.get("config", {})
        lines += [
            "## Tokenizador",
            "",
            f"SentencePiece `{tc.get('model_type')}`, vocabulário {_fmt(tok.get('vocab_size'))}, byte fallback "
            f"{'sim' if tc.get('byte_fallback') else 'não'}; sha256 `{str(tok.get('sha256', ''))[:16]}`.",
            "",
        ]
    if summary:
        lines += [
            "## Treino",
            "",
            "| parâmetros | passos | tokens vistos | épocas | tempo total | tokens/s | memória de pico (RSS) |",
            "|---|---|---|---|---|---|---|",
            f"| {_fmt(summary.get('n_params'))} | {_fmt(summary.get('steps'))} | {_fmt(summary.get('tokens_seen'))} | "
            f"{_fmt(summary.get('epochs'), 2)} | {format_seconds(summary.get('wall_time_s', 0))} | "
            f"{_fmt(summary.get('tokens_per_s'), 0)} | {_fmt(summary.get('peak_rss_mb'), 0)} MB |",
            "",
            "| val loss inicial | melhor val loss | val loss final | passo do melhor |",
            "|---|---|---|---|",
            f"| {_fmt(summary.get('initial_val_loss'))} | {_fmt(summary.get('best_val_loss'))} | "
            f"{_fmt(summary.get('final_val_loss'))} | {_fmt(summary.get('best_step'))} |",
            "",
        ]
    if png:
        lines += [f"![curva de loss]({png.name})", ""]
    if ev:
        lines += [
            "## Avaliação intrínseca",
            "",
            f"Checkpoint `{ev.get('checkpoint', '—')}` (passo {_fmt(ev.get('step'))}), {_fmt(ev.get('windows'))} janelas fixas "
            f"de validação (hash `{str(ev.get('windows_sha256', ''))[:12]}`).",
            "",
            "| loss (nats/token) | perplexidade | acurácia | bits por byte | tokens | bytes |",
            "|---|---|---|---|---|---|",
            f"| {_fmt(ev.get('loss'))} | {_fmt(ev.get('perplexity'), 2)} | {_fmt(ev.get('accuracy'))} | "
            f"{_fmt(ev.get('bits_per_byte'))} | {_fmt(ev.get('tokens'))} | {_fmt(ev.get('bytes'))} |",
            "",
            "Perplexidade só compara modelos com o mesmo tokenizador; bits por byte compara quaisquer dois.",
            "",
        ]
    if samples:
        lines += ["## Amostras", ""]
        for s in samples:
            knobs = f"temperatura {s.get('temperature')}, top-k {s.get('top_k')}, top-p {s.get('top_p')}, semente {s.get('seed')}"
            lines += [f"**Prompt:** {s['prompt']}", "", f"> {s['prompt']}**{s['completion']}**".replace("\n", "\n> "), "", f"<sub>{knobs}</sub>", ""]
            if s.get("warning"):
                lines += [f"⚠️ {s['warning']}", ""]
    write_text(paths.report, "\n".join(lines).rstrip() + "\n")
    return paths.report
