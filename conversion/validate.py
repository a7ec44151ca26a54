"""The gate: the artifact (onnxruntime) against its source (PyTorch fp32) on real data, within budgets."""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from conversion.data.homedepot import load_homedepot
from conversion.data.interactions import load_interactions
from conversion.data.ranking import load_ranking
from conversion.data.sentiment import LABEL_NAMES, load_sentiment
from conversion.errors import ConversionError
from conversion.metrics import classification_scores
from conversion.parity import row_cosine
from conversion.recipe import UNTUNED_SOURCE, Recipe, package_source_path
from conversion.recommendation import RecommendationTask, baseline_scores, content_scores
from conversion.recommendation import report as rec_report
from conversion.relevance import (
    SETTINGS,
    RelevanceSet,
    Setting,
    bm25_scores,
    catalog_ndcg,
    embedding_scores,
    ndcg_at_k,
    rerank_ndcg,
    shortlist,
    two_stage_scores,
)
from conversion.runners import BatchFn, TextInput, ort_batch_fn, ort_session, run_texts, torch_batch_fn

BudgetKind = Literal["max_drop", "min", "none"]
K = 10


@dataclass(frozen=True)
class Metric:
    dataset: str
    metric: str
    source: float
    artifact: float
    delta: float
    budget: float | None
    budget_kind: BudgetKind
    passed: bool


def metric(
    dataset: str, name: str, source: float, artifact: float, budget: float | None, kind: BudgetKind
) -> Metric:
    delta = artifact - source
    if budget is None or kind == "none":
        passed = True
    elif kind == "max_drop":
        passed = delta >= -budget - 1e-12
    else:
        passed = artifact >= budget
    return Metric(dataset, name, float(source), float(artifact), float(delta), budget, kind, passed)


@dataclass
class ValidationReport:
    metrics: list[Metric]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.metrics)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "metrics": [asdict(m) for m in self.metrics], **self.extra}


def format_table(report: ValidationReport) -> str:
    lines = [f"{'dataset':<29} {'metric':<26} {'source':>9} {'artifact':>9} {'delta':>9} {'budget':>12}  ok"]
    for m in report.metrics:
        budget = (
            "-"
            if m.budget is None
            else (f"drop<={m.budget:g}" if m.budget_kind == "max_drop" else f">={m.budget:g}")
        )
        numbers = f"{m.source:>9.4f} {m.artifact:>9.4f} {m.delta:>+9.4f}"
        lines.append(
            f"{m.dataset:<29} {m.metric:<26} {numbers} {budget:>12}  " + ("yes" if m.passed else "NO")
        )
    for name, scores in report.extra.get("baselines", {}).items():
        numbers = ", ".join(f"homedepot-{setting} ndcg@10 {value:.4f}" for setting, value in scores.items())
        lines.append(f"baseline {name}: {numbers}")
    for name, cells in report.extra.get("recommendation_baselines", {}).items():
        numbers = ", ".join(f"{cell} hr@10 {hr:.4f} ndcg@10 {ndcg:.4f}" for cell, (hr, ndcg) in cells.items())
        lines.append(f"baseline {name}: {numbers}")
    balance = report.extra.get("class_balance")
    if balance:
        counts = "; ".join(f"{name} " + "/".join(str(n) for n in c.values()) for name, c in balance.items())
        lines.append(f"class balance ({'/'.join(next(iter(balance.values())))}): {counts}")
    return "\n".join(lines)


class _Pair:
    """Source and artifact runners over the same tokenizer."""

    def __init__(
        self, loaded: Any, onnx_path: Path, provider: str, max_length: int, batch_size: int, untuned: bool
    ) -> None:
        self.loaded = loaded
        self.source: BatchFn = torch_batch_fn(loaded.module)
        self.artifact: BatchFn = ort_batch_fn(ort_session(onnx_path, provider, threads=os.cpu_count() or 1))
        self.untuned = untuned  # the source is the untuned MiniLM as the baselines read it
        self.batch_size = batch_size
        self.kwargs = {
            "max_length": max_length,
            "input_names": loaded.module.input_names,
            "batch_size": batch_size,
        }
        self._done: dict[TextInput, tuple[np.ndarray, np.ndarray]] = {}

    def run(self, texts: Sequence[TextInput], desc: str) -> tuple[np.ndarray, np.ndarray]:
        """Source and artifact outputs of `texts`, in order. A text already run is not run again (the
        MovieLens titles serve two checks)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._done]
        if new:
            tokenizer = self.loaded.tokenizer
            src = run_texts(self.source, tokenizer, new, desc=f"{desc} (source)", **self.kwargs)
            art = run_texts(self.artifact, tokenizer, new, desc=f"{desc} (artifact)", **self.kwargs)
            self._done.update(zip(new, zip(src, art, strict=True), strict=True))
            if self.untuned:
                _UNTUNED.update((t, v) for t, v in zip(new, src, strict=True) if isinstance(t, str))
        rows = [self._done[t] for t in texts]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def ndcg_agreement(reference: np.ndarray, candidate: np.ndarray, k: int = K) -> float:
    """NDCG@k of the candidate's ranking, the reference's top k as graded relevance (k, k-1, ..., 1)."""
    ref_top = np.argsort(-reference, kind="stable")[:k]
    gain = np.zeros(len(reference))
    gain[ref_top] = np.arange(len(ref_top), 0, -1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    cand_top = np.argsort(-candidate, kind="stable")[:k]
    ideal = float((gain[ref_top] * discounts[: len(ref_top)]).sum())
    return float((gain[cand_top] * discounts[: len(cand_top)]).sum()) / ideal if ideal else 1.0


def hit_and_ndcg(scores: np.ndarray, relevant: int = 0, k: int = K) -> tuple[float, float]:
    rank = int((scores > scores[relevant]).sum())
    return (1.0, 1.0 / float(np.log2(rank + 2))) if rank < k else (0.0, 0.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def validate_sentiment(pair: _Pair, recipe: Recipe) -> ValidationReport:
    cfg = recipe.validation.sentiment
    labels = recipe.labels or pair.loaded.labels or []
    missing = [name for name in LABEL_NAMES if name not in labels]
    if missing:
        raise ConversionError(f"sentiment validation needs labels {LABEL_NAMES}; the model has {labels}")
    to_model = np.array([labels.index(name) for name in LABEL_NAMES])
    metrics: list[Metric] = []
    balance: dict[str, dict[str, int]] = {}
    f1_kind: BudgetKind = "none" if cfg.f1_drop_budget is None else "max_drop"
    floor_kind: BudgetKind = "none" if cfg.min_balanced_accuracy is None else "min"
    for name in cfg.datasets:
        data = load_sentiment(name, cfg.max_examples)
        balance[name] = dict(zip(LABEL_NAMES, data.class_counts(), strict=True))
        gold = to_model[np.array(data.labels)]
        src, art = pair.run(data.texts, name)
        s = classification_scores(src.argmax(axis=1), gold, len(labels))
        a = classification_scores(art.argmax(axis=1), gold, len(labels))
        metrics += [
            metric(
                name, "accuracy", 100 * s.accuracy, 100 * a.accuracy, cfg.accuracy_drop_budget, "max_drop"
            ),
            metric(name, "macro_f1", 100 * s.macro_f1, 100 * a.macro_f1, cfg.f1_drop_budget, f1_kind),
            metric(
                name,
                "balanced_accuracy",
                100 * s.balanced_accuracy,
                100 * a.balanced_accuracy,
                cfg.min_balanced_accuracy,
                floor_kind,
            ),
            metric(
                name, "label_agreement", 1.0, float((src.argmax(1) == art.argmax(1)).mean()), None, "none"
            ),
        ]
    return ValidationReport(metrics, {"class_balance": balance})


def validate_bi_encoder(pair: _Pair, recipe: Recipe) -> ValidationReport:
    cfg = recipe.validation.ranking
    data = load_ranking(cfg.queries, cfg.pool_reviews)
    q_src, q_art = pair.run(data.queries, "wands queries")
    p_src, p_art = pair.run(data.pool, "product pool")
    cos = row_cosine(np.concatenate([q_src, p_src]), np.concatenate([q_art, p_art]))
    metrics = [
        metric(
            "wands+pool",
            "cosine_mean",
            1.0,
            float(cos.mean()),
            cfg.min_cosine_budget,
            "none" if cfg.min_cosine_budget is None else "min",
        ),
        metric("wands+pool", "cosine_min", 1.0, float(cos.min()), None, "none"),
    ]
    s_scores, a_scores = q_src @ p_src.T, q_art @ p_art.T
    ndcg = [ndcg_agreement(s, a) for s, a in zip(s_scores, a_scores, strict=True)]
    metrics.append(metric("wands", "ndcg@10_vs_source", 1.0, float(np.mean(ndcg)), cfg.ndcg_budget, "min"))
    class_index = {name: i for i, name in enumerate(data.pool)}
    labelled = [(n, class_index[c]) for n, c in enumerate(data.query_classes) if c in class_index]
    s_hits = np.mean([hit_and_ndcg(s_scores[n], t)[0] for n, t in labelled]) if labelled else 0.0
    a_hits = np.mean([hit_and_ndcg(a_scores[n], t)[0] for n, t in labelled]) if labelled else 0.0
    metrics.append(metric("wands", "class_hit@10", float(s_hits), float(a_hits), None, "none"))
    report = ValidationReport(metrics)
    if recipe.validation.relevance.enabled:
        relevance_metrics, baselines = _relevance(pair, recipe)
        report.metrics.extend(relevance_metrics)
        report.extra["baselines"] = baselines
    if recipe.validation.recommendation.enabled:
        next_item, recommenders = _next_item(pair, recipe)
        report.metrics.extend(next_item)
        report.extra["recommendation_baselines"] = recommenders
    return report


def _next_item(pair: _Pair, recipe: Recipe) -> tuple[list[Metric], dict[str, dict[str, list[float]]]]:
    """Next-item HR@10 / NDCG@10 of the source's and the artifact's embeddings through the recipe's user tower
    (what /v1/recommend computes), and of the baselines, on the recipe's catalogs and protocols. The
    artifact's HR@10 may drop at most `hr_drop_budget` below the source's in every cell, and must reach each
    baseline named in `must_beat` in the cells named there."""
    cfg = recipe.validation.recommendation
    half_life = recipe.user_tower.recency_half_life
    metrics: list[Metric] = []
    baselines: dict[str, dict[str, list[float]]] = {}
    for catalog in cfg.catalogs:
        task = RecommendationTask.build(
            load_interactions(catalog), cfg.split, cfg.negatives, cfg.seed, cfg.users
        )
        src, art = pair.run(task.texts, f"{catalog} items")
        s = rec_report(task, content_scores(task, src, cfg.history, half_life), cfg.protocols)
        a = rec_report(task, content_scores(task, art, cfg.history, half_life), cfg.protocols)
        for protocol in cfg.protocols:
            cell = f"{catalog}/{protocol}"
            metrics.append(
                metric(cell, "hr@10", s[protocol][0], a[protocol][0], cfg.hr_drop_budget, "max_drop")
            )
            metrics.append(metric(cell, "ndcg@10", s[protocol][1], a[protocol][1], None, "none"))
        for name in cfg.baselines:
            if name == "untuned-content":
                scores = content_scores(
                    task, _untuned_vectors(task.texts, f"{catalog} items", pair.batch_size)
                )
            else:
                scores = baseline_scores(task, name, cfg.seed)
            scored = rec_report(task, scores, cfg.protocols)
            baselines.setdefault(name, {}).update({f"{catalog}/{p}": list(scored[p]) for p in cfg.protocols})
    for name, cells in cfg.must_beat.items():
        for cell in cells:
            artifact = next(m.artifact for m in metrics if m.dataset == cell and m.metric == "hr@10")
            metrics.append(
                metric(cell, f"hr@10_vs_{name}", baselines[name][cell][0], artifact, 0.0, "max_drop")
            )
    return metrics, baselines


# The untuned MiniLM's embeddings by text, read as product-embedder serves it (its source, up to 128 tokens).
# One `build-defaults` computes each text once: the embedder's gate (whose source this is) fills it, and the
# reranker's first stage (Home Depot) and the recommender's baseline (MovieLens titles) read it.
_UNTUNED: dict[str, np.ndarray] = {}
UNTUNED_MAX_LENGTH = 128


@functools.cache
def _untuned_checkpoint() -> Any:
    """The packaged MiniLM as a bi-encoder, loaded once per process."""
    from conversion.checkpoint import load_checkpoint

    return load_checkpoint(package_source_path(UNTUNED_SOURCE), "bi-encoder")


def _untuned_vectors(texts: Sequence[str], what: str, batch_size: int) -> np.ndarray:
    """fp32 embeddings of `texts` by the packaged MiniLM (the untuned baseline)."""
    new = [t for t in dict.fromkeys(texts) if t not in _UNTUNED]
    if new:
        untuned = _untuned_checkpoint()
        vectors = run_texts(
            torch_batch_fn(untuned.module),
            untuned.tokenizer,
            new,
            max_length=UNTUNED_MAX_LENGTH,
            input_names=untuned.module.input_names,
            batch_size=batch_size,
            desc=f"{what} (untuned MiniLM)",
        )
        _UNTUNED.update(zip(new, vectors, strict=True))
    return np.stack([_UNTUNED[t] for t in texts])


def _relevance(pair: _Pair, recipe: Recipe) -> tuple[list[Metric], dict[str, dict[Setting, float]]]:
    """Home Depot NDCG@10 of source and artifact in both settings, and of the baselines beside them."""
    cfg = recipe.validation.relevance
    data = RelevanceSet.from_judgements(load_homedepot("validation")).sample_queries(cfg.queries, cfg.seed)
    q_src, q_art = pair.run(data.queries, "home depot queries")
    t_src, t_art = pair.run(data.catalog, "home depot titles")
    source = ndcg_at_k(data, embedding_scores(q_src, t_src))
    artifact = ndcg_at_k(data, embedding_scores(q_art, t_art))
    baselines: dict[str, dict[Setting, float]] = {}
    for name in cfg.baselines:
        if name == "bm25":
            baselines[name] = ndcg_at_k(data, bm25_scores(data.queries, data.catalog))
        elif recipe.source == UNTUNED_SOURCE:
            baselines[name] = dict(source)
        else:
            baselines[name] = ndcg_at_k(data, _untuned_scores(data, pair.batch_size))
    metrics = _ndcg_drops(source, artifact, cfg.ndcg_drop_budget)
    if cfg.must_beat_baselines:
        metrics += [
            metric(
                f"homedepot-{setting}",
                f"ndcg@10_vs_{name}",
                scores[setting],
                artifact[setting],
                0.0,
                "max_drop",
            )
            for name, scores in baselines.items()
            for setting in SETTINGS
        ]
    return metrics, baselines


def _ndcg_drops(source: dict[Setting, float], artifact: dict[Setting, float], budget: float) -> list[Metric]:
    """Home Depot NDCG@10 of the artifact against its source in each setting, within `budget`."""
    return [
        metric(f"homedepot-{setting}", "ndcg@10", source[setting], artifact[setting], budget, "max_drop")
        for setting in SETTINGS
    ]


def _untuned_scores(data: RelevanceSet, batch_size: int) -> np.ndarray:
    return embedding_scores(
        _untuned_vectors(data.queries, "home depot queries", batch_size),
        _untuned_vectors(data.catalog, "home depot titles", batch_size),
    )


def _cross_relevance(pair: _Pair, recipe: Recipe) -> tuple[list[Metric], dict[str, dict[Setting, float]]]:
    """Home Depot NDCG@10 of a cross-encoder's source and artifact: rerank (each query's judged titles) and
    catalog, two-stage (the untuned MiniLM's best `shortlist` titles re-scored, the rest in its order), with
    the baselines and the first stage alone beside them."""
    cfg = recipe.validation.relevance
    data = RelevanceSet.from_judgements(load_homedepot("validation")).sample_queries(cfg.queries, cfg.seed)
    first = _untuned_scores(data, pair.batch_size)
    top = shortlist(first, cfg.shortlist)
    judged = [(q, int(j)) for q, rows in enumerate(data.judged) for j in rows]
    cells = list(dict.fromkeys(judged + [(q, int(j)) for q, row in enumerate(top) for j in row]))
    src, art = pair.run(
        [(data.queries[q], data.catalog[j]) for q, j in cells], "home depot (query, title) pairs"
    )
    index = {cell: i for i, cell in enumerate(cells)}
    rows, cols = np.array([c[0] for c in cells]), np.array([c[1] for c in cells])
    shortlisted = np.array([[index[(q, int(j))] for j in row] for q, row in enumerate(top)])

    def ndcg(scores: np.ndarray) -> dict[Setting, float]:
        matrix = np.zeros(first.shape)
        matrix[rows, cols] = scores[:, 0]
        return {
            "rerank": rerank_ndcg(data, matrix),
            "catalog": catalog_ndcg(data, two_stage_scores(first, top, scores[shortlisted, 0])),
        }

    source, artifact = ndcg(src), ndcg(art)
    baselines: dict[str, dict[Setting, float]] = {}
    for name in cfg.baselines:
        scores = bm25_scores(data.queries, data.catalog) if name == "bm25" else first
        baselines[name] = ndcg_at_k(data, scores)
    metrics = _ndcg_drops(source, artifact, cfg.ndcg_drop_budget)
    if cfg.must_beat_baselines:
        metrics += [
            metric(
                "homedepot-rerank",
                f"ndcg@10_vs_{name}",
                scores["rerank"],
                artifact["rerank"],
                0.0,
                "max_drop",
            )
            for name, scores in baselines.items()
        ]
        alone = catalog_ndcg(data, first)
        metrics.append(
            metric("homedepot-catalog", "ndcg@10_vs_first_stage", alone, artifact["catalog"], 0.0, "max_drop")
        )
    return metrics, baselines


def validate_cross_encoder(pair: _Pair, recipe: Recipe) -> ValidationReport:
    report = _wands_pairs(pair, recipe)
    if recipe.validation.relevance.enabled:
        relevance_metrics, baselines = _cross_relevance(pair, recipe)
        report.metrics.extend(relevance_metrics)
        report.extra["baselines"] = baselines
    return report


def _wands_pairs(pair: _Pair, recipe: Recipe) -> ValidationReport:
    """Fidelity on WANDS: each query with its own class name and `candidates - 1` others, artifact vs
    source."""
    cfg = recipe.validation.cross_encoder
    data = load_ranking(cfg.queries, pool_reviews=0, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    classes = data.pool
    pairs: list[TextInput] = []
    queries = [(q, c) for q, c in zip(data.queries, data.query_classes, strict=True) if c]
    for query, own in queries:
        others = rng.sample([c for c in classes if c != own], min(cfg.candidates - 1, len(classes) - 1))
        pairs.extend((query, c) for c in [own, *others])
    src, art = pair.run(pairs, "query/class pairs")
    s, a = src[:, 0].reshape(len(queries), -1), art[:, 0].reshape(len(queries), -1)
    ndcg = [ndcg_agreement(x, y) for x, y in zip(s, a, strict=True)]
    s_hit = np.mean([hit_and_ndcg(x, 0, k=1)[0] for x in s])
    a_hit = np.mean([hit_and_ndcg(y, 0, k=1)[0] for y in a])
    return ValidationReport(
        [
            metric("wands-pairs", "ndcg@10_vs_source", 1.0, float(np.mean(ndcg)), cfg.ndcg_budget, "min"),
            metric("wands-pairs", "spearman", 1.0, spearman(src[:, 0], art[:, 0]), None, "none"),
            metric("wands-pairs", "class_hit@1", float(s_hit), float(a_hit), None, "none"),
        ]
    )


def validate_artifact(
    loaded: Any, onnx_path: Path, recipe: Recipe, provider: str = "CPUExecutionProvider"
) -> ValidationReport:
    """Runs the kind's validation; the caller decides what a failed report means (the pipeline refuses)."""
    untuned = (
        recipe.kind == "bi-encoder"
        and recipe.source == UNTUNED_SOURCE
        and recipe.max_sequence_length == UNTUNED_MAX_LENGTH
    )
    pair = _Pair(
        loaded, onnx_path, provider, recipe.max_sequence_length, recipe.validation.batch_size, untuned
    )
    if recipe.kind == "sequence-classification":
        return validate_sentiment(pair, recipe)
    if recipe.kind == "bi-encoder":
        return validate_bi_encoder(pair, recipe)
    return validate_cross_encoder(pair, recipe)
