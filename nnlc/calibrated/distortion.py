"""Output distortions by model kind (what the optimiser minimises) and hold-out fidelity checks.

Distortions are smooth and quadratic near the original, so that a tensor's effect grows as a * step^2:
- classifier: mean KL(original || reconstructed) of the softmax over the last axis of output 0;
- embedding: mean (1 - cosine) of mask-mean-pooled output-0 embeddings (sentence-transformers style);
- vad: mean squared difference of output 0 (speech probabilities);
- mse: squared error of every float output over the original's energy (normalised MSE).
Fidelity on the hold-out uses the metrics of `nnlc.fidelity` for the kind (same thresholds as the
benchmarks, DESIGN §6); `mse` is transparent at a normalised MSE <= 1e-4 (40 dB). For embeddings with
a `gallery` (the optimisation sentences), each hold-out sentence's nearest neighbour is searched among
the other hold-out sentences and the gallery: a retrieval check over 64 sentences alone has few near
ties, and passed points that flipped neighbours among the benchmark's 300.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnlc import fidelity

KINDS = ("classifier", "embedding", "vad", "mse")
MSE_TRANSPARENT = 1e-4


def guess_kind(model) -> str:
    """classifier / embedding / vad from the graph's inputs (`nnlc.fidelity`), else mse."""
    try:
        kind = fidelity.guess_model_kind(model)
    except ValueError:
        return "mse"
    return "vad" if kind.startswith("vad") else kind


def _embeddings(output: np.ndarray, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    hidden = np.asarray(output, np.float64)
    if hidden.ndim == 3:
        mask = feeds.get("attention_mask")
        mask = np.ones(hidden.shape[:2]) if mask is None else np.asarray(mask, np.float64)
        hidden = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
    hidden = hidden.reshape(len(hidden), -1)
    norms = np.linalg.norm(hidden, axis=1, keepdims=True)
    return hidden / np.where(norms > 0, norms, 1.0)


class Reference:
    """The original network's outputs on a list of feeds, and distortions of other outputs against them."""

    def __init__(self, kind: str, feeds: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Sequence[np.ndarray]],
                 groups: Sequence[str] | None = None, gallery: "Reference | None" = None):
        """`groups`: a label per feed (e.g. 'sr=8000'); the fidelity must then hold in every group.
        `gallery` (embeddings): more sentences among which neighbours are searched (see the module doc)."""
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}: one of {', '.join(KINDS)}")
        if gallery is not None and (kind != "embedding" or groups is not None):
            raise ValueError("a neighbour gallery is for embeddings without groups")
        self.gallery = gallery
        self.kind, self.feeds = kind, list(feeds)
        self.summaries = [self._summary(f, o) for f, o in zip(self.feeds, outputs, strict=True)]
        self._set_energy()
        self.groups: dict[str, tuple[list[int], Reference]] | None = None  # label -> (members, their Reference)
        if groups is not None and len(set(groups)) > 1:
            self.groups = {}
            for label in sorted(set(groups)):
                members = [i for i, g in enumerate(groups) if g == label]
                part = Reference.__new__(Reference)
                part.kind, part.feeds, part.groups = kind, [self.feeds[i] for i in members], None
                part.summaries = [self.summaries[i] for i in members]
                part._set_energy()
                self.groups[label] = (members, part)

    def _set_energy(self) -> None:
        if self.kind == "mse":
            self.energy = sum(float(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in s)) for s in self.summaries)

    def _summary(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[np.ndarray]) -> Any:
        if self.kind == "classifier":
            logits = np.asarray(outputs[0], np.float64)
            return logits.reshape(-1, logits.shape[-1])
        if self.kind == "embedding":
            return _embeddings(outputs[0], feeds)
        if self.kind == "vad":
            return np.asarray(outputs[0], np.float64).ravel()
        return [np.asarray(x, np.float64) for x in outputs if np.asarray(x).dtype.kind == "f"]

    def distortion(self, outputs: Sequence[Sequence[np.ndarray]]) -> float:
        """The kind's distortion of `outputs` (one entry per feed) against the original's; inf if not finite."""
        total, count = 0.0, 0
        for feeds, reference, output in zip(self.feeds, self.summaries, outputs, strict=True):
            summary = self._summary(feeds, output)
            if self.kind == "classifier":
                log_p = reference - _logsumexp(reference)
                log_q = summary - _logsumexp(summary)
                values = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
            elif self.kind == "embedding":
                values = 1.0 - (reference * summary).sum(axis=1)
            elif self.kind == "vad":
                values = (reference - summary) ** 2
            else:
                values = np.array([sum(float(np.sum((a - b) ** 2)) for a, b in zip(reference, summary, strict=True))])
            total += float(np.sum(values))
            count += values.size
        if self.kind == "mse":
            return total / max(self.energy, 1e-300) if np.isfinite(total) else float("inf")
        mean = total / max(1, count)
        return mean if np.isfinite(mean) else float("inf")

    def fidelity(self, outputs: Sequence[Sequence[np.ndarray]],
                 gallery_outputs: Sequence[Sequence[np.ndarray]] | None = None) -> dict[str, Any]:
        """The benchmark metrics of the kind (nnlc.fidelity), with `transparent` and `distortion`.

        With groups, each group is checked on its own: the metrics returned are the group's with the
        largest distortion, `transparent` only if every group is, and `groups` holds each group's.
        With a gallery, `gallery_outputs` are the network's outputs on the gallery's feeds."""
        if self.groups is None:
            metrics = self._fidelity(outputs)
            if self.gallery is not None:
                if gallery_outputs is None:
                    raise ValueError("this reference has a neighbour gallery: give gallery_outputs")
                self._gallery_neighbours(metrics, outputs, gallery_outputs)
            return metrics
        per_group = {label: part._fidelity([outputs[i] for i in members])
                     for label, (members, part) in self.groups.items()}
        worst = max(per_group, key=lambda label: per_group[label]["distortion"])
        metrics = dict(per_group[worst])
        metrics["transparent"] = all(bool(m.get("transparent")) for m in per_group.values())
        metrics["group"] = worst
        metrics["groups"] = per_group
        return metrics

    def _fidelity(self, outputs: Sequence[Sequence[np.ndarray]]) -> dict[str, Any]:
        summaries = [self._summary(f, o) for f, o in zip(self.feeds, outputs, strict=True)]
        if self.kind == "classifier":
            metrics = fidelity.classifier_metrics(np.concatenate(self.summaries), np.concatenate(summaries))
        elif self.kind == "embedding":
            metrics = fidelity.embedding_metrics(np.concatenate(self.summaries), np.concatenate(summaries))
        elif self.kind == "vad":
            metrics = fidelity.vad_metrics(np.concatenate(self.summaries), np.concatenate(summaries))
        else:
            nmse = self.distortion(outputs)
            metrics = {"nmse": nmse, "finite": bool(np.isfinite(nmse)),
                       "transparent": bool(np.isfinite(nmse) and nmse <= MSE_TRANSPARENT)}
        metrics["distortion"] = self.distortion(outputs)
        return metrics


    def _gallery_neighbours(self, metrics: dict[str, Any], outputs, gallery_outputs) -> None:
        """Neighbour agreement of the hold-out queries among themselves and the gallery; `transparent` anew."""
        queries = np.concatenate(self.summaries)
        reconstructed = np.concatenate([self._summary(f, o) for f, o in zip(self.feeds, outputs, strict=True)])
        gallery = np.concatenate(self.gallery.summaries)
        gallery_reconstructed = np.concatenate([self._summary(f, o) for f, o in
                                                zip(self.gallery.feeds, gallery_outputs, strict=True)])
        agreement = float(np.mean(_nearest(queries, gallery) == _nearest(reconstructed, gallery_reconstructed)))
        metrics["neighbour_agreement_holdout_only"] = metrics["neighbour_agreement"]
        metrics["neighbour_agreement"] = agreement
        metrics["neighbour_gallery"] = int(len(queries) + len(gallery))
        metrics["transparent"] = bool(metrics["finite"] and metrics["mean_cosine"] >= fidelity.EMBEDDING_MIN_COSINE
                                      and agreement >= fidelity.EMBEDDING_MIN_NEIGHBOUR_AGREEMENT)


def _nearest(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Index of each query's most similar unit vector among the other queries, then the gallery."""
    similarity = np.concatenate([queries @ queries.T, queries @ gallery.T], axis=1)
    np.fill_diagonal(similarity[:, :len(queries)], -np.inf)
    return similarity.argmax(axis=1)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=1, keepdims=True))
