"""Reports of post-training runs (posttrain.json in the folder) and of track2 runs (track2.json):
base versus adapted, as the seeds reported them, from the run folder's files alone.
`brlm.runs.report.render_report` calls these when it finds those files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from brlm.io.logging import format_seconds, read_metrics
from brlm.io.run_folder import RunPaths
from brlm.runs.plots import loss_curve
from brlm.runs.report import COST_FIELDS, Report, _extrinsic, _fmt, _load, fmt_kind

TASK_TITLE = {"cpt": "pré-treinamento continuado (CPT)", "sft": "ajuste supervisionado (SFT)", "dpo": "otimização direta de preferências (DPO)"}


def _delta(a: Any, b: Any, nd: int = 3) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or (isinstance(a, float) and math.isnan(a)):
        return "—"
    return f"{b - a:+.{nd}f}"


def figures_table(r: Report, ev: dict[str, Any]) -> None:
    """The base-vs-adapted table of one eval.json."""
    task = ev.get("task")
    b, a = ev.get("base") or {}, ev.get("adapted") or {}
    if task == "dpo":
        rows = [["loss DPO (referência = base)", _fmt(b.get("loss")), _fmt(a.get("loss")), _delta(b.get("loss"), a.get("loss"), 4)],
                ["acurácia de recompensa", _fmt(b.get("reward_accuracy")), _fmt(a.get("reward_accuracy")),
                 _delta(b.get("reward_accuracy"), a.get("reward_accuracy"))],
                ["margem média log p(escolhida) − log p(rejeitada)", _fmt(b.get("mean_logp_margin"), 3), _fmt(a.get("mean_logp_margin"), 3),
                 _delta(b.get("mean_logp_margin"), a.get("mean_logp_margin"))],
                ["escolhida mais provável (por token)", _fmt(b.get("preference_accuracy_per_token")),
                 _fmt(a.get("preference_accuracy_per_token")),
                 _delta(b.get("preference_accuracy_per_token"), a.get("preference_accuracy_per_token"))],
                ["escolhida mais provável (total)", _fmt(b.get("preference_accuracy")), _fmt(a.get("preference_accuracy")),
                 _delta(b.get("preference_accuracy"), a.get("preference_accuracy"))]]
        r.table(["métrica", "base", "adaptado", "diferença"], rows)
        r.p(f"{_fmt(ev.get('rows'))} pares de validação. Na base, política e referência coincidem: loss ln 2 e recompensas 0. "
            "A comparação total favorece respostas curtas; a por token não.")
        return
    what = "perplexidade só das respostas" if task == "sft" else "perplexidade (texto bruto)"
    rows = [[what, _fmt(b.get("perplexity"), 3), _fmt(a.get("perplexity"), 3), _delta(b.get("perplexity"), a.get("perplexity"))],
            ["loss (nats/token)", _fmt(b.get("loss")), _fmt(a.get("loss")), _delta(b.get("loss"), a.get("loss"), 4)],
            ["bits por byte", _fmt(b.get("bits_per_byte")), _fmt(a.get("bits_per_byte")), _delta(b.get("bits_per_byte"), a.get("bits_per_byte"), 4)],
            ["acurácia do próximo token", _fmt(b.get("accuracy")), _fmt(a.get("accuracy")), _delta(b.get("accuracy"), a.get("accuracy"), 4)]]
    r.table(["métrica", "base", "adaptado", "diferença"], rows)
    r.p(f"{_fmt(a.get('targets'))} tokens avaliados ({_fmt(ev.get('rows'))} linhas de validação"
        + ("; só os tokens de resposta contam" if task == "sft" else "") + ").")


def _samples(r: Report, samples: list[dict[str, Any]], limit: int = 6) -> None:
    by_prompt: dict[str, dict[str, dict[str, Any]]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt"], {})[s.get("model", "adaptado")] = s
    for prompt, pair in list(by_prompt.items())[:limit]:
        for label in ("base", "adapted"):
            s = pair.get(label)
            if s:
                r.sample(prompt, " " + s["completion"].strip(), f"{'base' if label == 'base' else 'adaptado'}, temperatura "
                         f"{s.get('temperature')}, semente {s.get('seed')}", s.get("warning"))


def _train_table(r: Report, tr: dict[str, Any]) -> None:
    r.table(["método", "parâmetros treinados", "passos", "épocas", "tokens", "tokens/s", "tempo", "memória de pico (RSS)", "loss"],
            [[_fmt(tr.get("method")), f"{_fmt(tr.get('trainable_params'))} de {_fmt(tr.get('n_params'))}", _fmt(tr.get("steps")),
              _fmt(tr.get("epochs"), 2), _fmt(tr.get("tokens_seen")), _fmt(tr.get("tokens_per_s"), 0),
              format_seconds(tr.get("wall_time_s", 0)), f"{_fmt(tr.get('peak_rss_mb'), 0)} MB", _fmt(tr.get("loss_path"))]])


def build_posttrain_report(paths: RunPaths) -> Report:
    record = _load(paths.record) or {}
    marker = _load(paths.root / "posttrain.json") or {}
    tr = _load(paths.train_summary) or {}
    ev = _load(paths.eval) or {}
    cost = _load(paths.root / "cost.json") or {}
    data = _load(paths.data / "manifest.json") or {}
    base = _load(paths.root / "base.json") or {}
    samples = _load(paths.samples) or []
    task = marker.get("task", "?")
    r = Report(f"brlm — {TASK_TITLE.get(task, task)}: `{paths.root.name}`")
    env = record.get("environment", {})
    items = [f"preset `{record.get('preset', '—')}` (escala `{record.get('scale', '—')}`), status **{record.get('status', '—')}**",
             f"base: `{base.get('base', '—')}` ({base.get('origin', '—')}; pasta `{base.get('folder', '—')}`), "
             f"método {marker.get('method', '—')}",
             f"código: brlm {env.get('brlm', '—')} @ `{env.get('git_sha') or 'sem git'}`; torch {env.get('torch', '—')}"]
    if record.get("error"):
        items.append(f"erro: `{record['error']}`")
    r.bullets(items)
    if ev:
        r.h2("Base versus adaptado")
        figures_table(r, ev)
    if data.get("splits"):
        r.h2("Dados")
        rows = []
        for split, c in data["splits"].items():
            dropped = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("examples", "tokens", "target_tokens", "records", "kept", "documents")) or "nada"
            rows.append([split, _fmt(c.get("records", c.get("documents"))), _fmt(c.get("examples")), _fmt(c.get("tokens")),
                         _fmt(c.get("target_tokens")), dropped])
        r.table(["recorte", "registros", "exemplos", "tokens", "tokens com alvo", "descartados / truncados"], rows)
        if data.get("template"):
            r.p(f"Formato do prompt: {'template de chat do tokenizador' if data['template'] == 'chat' else '### Instrução / ### Resposta'}.")
    if tr:
        r.h2("Treino")
        _train_table(r, tr)
    png = loss_curve(read_metrics(paths.metrics), paths.root / "loss_curve.png", title=paths.root.name)
    if png:
        r.image(png, "curva de loss")
    r.h2("Custo")
    r.table(["grandeza", "valor"], [[label, fmt_kind(cost.get(key), kind)] for key, label, kind in COST_FIELDS])
    if samples:
        r.h2("Amostras (base e adaptado, mesma semente)")
        _samples(r, samples)
    return r


def build_track2_report(paths: RunPaths) -> Report:
    record = _load(paths.record) or {}
    t2 = _load(paths.root / "track2.json") or {}
    r = Report(f"brlm — trilha 2: do zero ou adaptar? `{paths.root.name}`")
    src = t2.get("sources", {})
    env = record.get("environment", {})
    r.bullets([
        f"status **{record.get('status', '—')}**; tempo total {format_seconds(t2.get('wall_time_s') or 0)}",
        f"base: `{(t2.get('base') or {}).get('base', '—')}` ({(t2.get('base') or {}).get('origin', '—')})",
        f"CPT em `{src.get('cpt', '—')}`" + (" (os dados compartilhados não existem: corpus de demonstração)" if src.get("cpt_fallback_used") else ""),
        f"SFT em `{src.get('sft', '—')}`" + (" (os dados compartilhados não existem: instruções do brlm)" if src.get("sft_fallback_used") else ""),
        f"DPO em `{src.get('dpo', '—')}`",
        f"código: brlm {env.get('brlm', '—')} @ `{env.get('git_sha') or 'sem git'}`; CPU: {env.get('cpu', '—')}",
    ])
    base = t2.get("base") or {}
    if base.get("eval"):
        be, bt = base["eval"], base.get("train") or {}
        r.h2("Base treinada do zero")
        r.table(["arquitetura", "parâmetros", "passos", "tempo", "val loss", "perplexidade", "bits por byte"],
                [[_fmt(bt.get("arch")), _fmt(bt.get("n_params")), _fmt(bt.get("steps")), format_seconds(bt.get("wall_time_s", 0)),
                  _fmt(be.get("loss")), _fmt(be.get("perplexity"), 2), _fmt(be.get("bits_per_byte"))]])
    rows = []
    for phase, ph in (t2.get("phases") or {}).items():
        ev, tr, cost = ph.get("eval") or {}, ph.get("train") or {}, ph.get("cost") or {}
        b, a = ev.get("base") or {}, ev.get("adapted") or {}
        if phase == "dpo":
            metric, vb, va = "loss DPO (val)", _fmt(b.get("loss")), _fmt(a.get("loss"))
        else:
            metric = "ppl só respostas" if phase == "sft" else "ppl texto bruto"
            vb, va = _fmt(b.get("perplexity"), 3), _fmt(a.get("perplexity"), 3)
        rows.append([phase.upper(), ph.get("method", "—"), metric, vb, va,
                     _fmt(b.get("bits_per_byte")) + " → " + _fmt(a.get("bits_per_byte")) if phase != "dpo" else "—",
                     _fmt(tr.get("steps")), format_seconds(tr.get("wall_time_s", 0)), _fmt(tr.get("tokens_per_s"), 0),
                     fmt_kind(cost.get("estimated_cost_usd"), "money")])
    if rows:
        r.h2("Base versus adaptado, fase a fase")
        r.table(["fase", "método", "métrica", "base", "adaptado", "bits por byte", "passos", "tempo", "tokens/s", "custo (US$)"], rows)
        r.p("Cada fase parte do modelo da anterior com o adaptador fundido (CPT → SFT → DPO); a coluna base é esse "
            "ponto de partida, avaliado nos mesmos dados de validação da fase.")
    for phase, ph in (t2.get("phases") or {}).items():
        r.h2(f"{phase.upper()}: {TASK_TITLE.get(phase, phase)}")
        figures_table(r, ph.get("eval") or {})
        samples = _load(paths.root / phase / "samples.json") or []
        if samples:
            r.h3("Amostras (base e adaptado)")
            _samples(r, samples, limit=3)
    extrinsic = _load(paths.root / "extrinsic.json")
    if extrinsic:
        _extrinsic(r, extrinsic)
    elif skipped := _load(paths.root / "extrinsic_skipped.json"):
        r.h2("Avaliação extrínseca")
        r.p(f"Não executada: {skipped.get('reason', '—')}.")
    return r


def is_posttrain(root: Path) -> bool:
    return (root / "posttrain.json").is_file()


def is_track2(root: Path) -> bool:
    return (root / "track2.json").is_file() or (root / "track2_base.json").is_file()
