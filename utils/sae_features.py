"""Reading SAE features: dashboards, ground truth from the generator, steering vectors in features (chapter 6).

::

    sae = load_shipped_sae("resid_post.2")
    feature_dashboard(model, tokenizer, sae, 17, texts).show()     # contexts, histogram, logit effects
    probes = labelled_probes(tokenizer)                              # the generator's latent variables
    table = ground_truth_table(model, sae, probes)                   # best latent per variable, held-out AUROC
    plot_ground_truth(table).show()
    labels = label_features(model, sae, probes)                      # {latent: "sentiment=positive", ...}
    top = decompose_vector(sae, caa_vector, k=10)                    # which latents write along a steering vector
    variants = steering_variants(sae, caa_vector, relevant=[best])   # (a)-(d) of the chapter, same norm

How a variable's label meets a latent (:func:`labelled_probes`):

* **document-level** variables (a story's sentiment, topic, emotion): the latent's score for a document
  is its *maximum* over the document's tokens (a sentiment feature fires on the sentiment words, not on
  every token); positives are the documents with that value, negatives all the other stories;
* **token-level** variables: the subject noun's number is read at the subject's last token of an
  agreement sentence, the indirect object's gender at the last token of its name in an IOI sentence.

Each variable's documents are split in two: the best latent is *chosen* on the first half and its
AUROC *reported* on the second, so a latent that wins by chance among hundreds does not look better
than it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.course_model.evaluate import encode_batch
from utils.sae import AnySAE, check_feature_index, encode_documents, real_positions, sae_site, site_activations

#: Documents longer than this many tokens (BOS included) are cut when they are read.
MAX_LENGTH = 128

if TYPE_CHECKING:
    import plotly.graph_objects as go

Pooling = Literal["max", "token"]


# --------------------------------------------------------------------------------------------
# Batches of documents


def token_at_char(tokenizer: PreTrainedTokenizerBase, text: str, char: int) -> int:
    """The row position (BOS at 0) of the token of ``text`` that holds character ``char``."""
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    for index, (start, end) in enumerate(offsets):
        if start <= char < end:
            return index + 1
    raise ValueError(f"no token of {text!r} covers character {char}")


# --------------------------------------------------------------------------------------------
# Top activations and the dashboard


@dataclass(frozen=True)
class Context:
    """One place where a latent fires: the document row, the position, the activation, and the tokens around it."""

    row: int
    position: int
    activation: float
    tokens: list[str]           # the window of tokens, the firing token at index `focus`
    activations: list[float]    # the latent's activation on each token of the window
    focus: int


def top_activations(acts: Float[Tensor, "batch pos"], n: int) -> list[tuple[int, int, float]]:
    """Reference for Exercise 6.9: the ``n`` largest positive entries of one latent's activations.

    ``[(row, position, activation), ...]``, largest first; fewer than ``n`` when fewer are positive.
    """
    values, flat = acts.flatten().topk(min(n, acts.numel()))
    return [(index // acts.shape[1], index % acts.shape[1], value)
            for value, index in zip(values.tolist(), flat.tolist()) if value > 0]


def top_contexts(tokenizer: PreTrainedTokenizerBase, input_ids: Int[Tensor, "batch pos"],
                 feats: Float[Tensor, "batch pos d_sae"], feature: int, n: int = 8, before: int = 8, after: int = 3
                 ) -> list[Context]:
    """The ``n`` (row, position) pairs where ``feature`` is largest, with ``before``/``after`` tokens of context."""
    acts = feats[..., feature]                                        # [batch, pos]
    contexts = []
    for row, position, value in top_activations(acts, n):
        lo, hi = max(1, position - before), min(acts.shape[1], position + after + 1)
        ids = input_ids[row, lo:hi].tolist()
        contexts.append(Context(row, position, value, [tokenizer.decode([i]) for i in ids],
                                acts[row, lo:hi].tolist(), position - lo))
    return contexts


def logit_effect_tokens(direction: Float[Tensor, "d_model"], gamma: Float[Tensor, "d_model"],
                        W_U: Float[Tensor, "vocab d_model"], k: int) -> tuple[Int[Tensor, "k"], Int[Tensor, "k"]]:
    """Reference for Exercise 6.10: the ``k`` token ids whose logits ``direction`` raises most, and the ``k`` it
    lowers most (most negative first), read through the final norm's weight ``gamma`` and the unembedding."""
    effects = W_U @ (direction * gamma)                                           # [vocab]
    return effects.topk(k).indices, (-effects).topk(k).indices


@torch.no_grad()
def logit_effects(model: PreTrainedModel, sae: AnySAE, feature: int, k: int = 10
                  ) -> tuple[list[tuple[int, float]], list[tuple[int, float]], Float[Tensor, "vocab"]]:
    """The tokens whose logits latent ``feature``'s decoder row raises and lowers most: ``W_dec[f] · (γ ⊙ W_U)``.

    ``γ`` is the final norm's weight; the norm's centring and scale are ignored (the usual first-order
    reading, as in the logit lens). Returns ``(top, bottom, effects)``: the ``k`` ``(token id, effect)`` pairs
    with the largest and the most negative effects, and ``effects`` ``[vocab]``.
    """
    feature = check_feature_index(sae, feature)
    direction = sae.W_dec[feature].float()                            # [d_model]
    gamma = architecture.final_norm(model).weight.float()
    W_U = architecture.unembedding(model).weight.float()              # [vocab, d_model]
    if W_U.shape[1] != direction.shape[0]:
        raise ValueError(f"the SAE writes {direction.shape[0]}-wide vectors, this model's unembedding reads "
                         f"{W_U.shape[1]}: use an SAE trained on this model")
    effects = W_U @ (direction * gamma)                               # [vocab]
    top, bottom = effects.topk(k), (-effects).topk(k)
    return ([(i, v) for i, v in zip(top.indices.tolist(), top.values.tolist())],
            [(i, -v) for i, v in zip(bottom.indices.tolist(), bottom.values.tolist())], effects)


@torch.no_grad()
def feature_dashboard(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sae: AnySAE, feature: int,
                      texts: Sequence[str], n_contexts: int = 8, label: str | None = None) -> go.Figure:
    """A plotly dashboard of one latent on ``texts``: top-activating contexts (tokens coloured by activation),
    the histogram of its non-zero activations, and its top logit effects."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    feature = check_feature_index(sae, feature)
    input_ids, mask, _ = encode_batch(tokenizer, texts, MAX_LENGTH)
    feats = encode_documents(model, sae, input_ids, mask)
    contexts = top_contexts(tokenizer, input_ids, feats, feature, n_contexts)
    top, bottom, _ = logit_effects(model, sae, feature)
    fired = feats[..., feature][feats[..., feature] > 0]
    frequency = float(fired.numel() / mask[:, 1:].sum())

    figure = make_subplots(rows=2, cols=2, row_heights=[0.6, 0.4], vertical_spacing=0.12,
                           specs=[[{"colspan": 2}, None], [{}, {}]],
                           subplot_titles=("top-activating contexts", f"non-zero activations ({frequency:.2%} of tokens)",
                                           "logit effects (W_dec · γ ⊙ W_U)"))
    width = max((len(c.tokens) for c in contexts), default=1)
    z = [[None] * width for _ in contexts]
    text = [[""] * width for _ in contexts]
    for i, context in enumerate(contexts):
        offset = width - len(context.tokens) if context.focus == len(context.tokens) - 1 else 0
        for j, (token, act) in enumerate(zip(context.tokens, context.activations)):
            z[i][j + offset] = act
            text[i][j + offset] = f"<b>{token!r}</b>" if j == context.focus else repr(token)
    figure.add_trace(go.Heatmap(z=z[::-1], text=text[::-1], texttemplate="%{text}", colorscale="Reds", zmin=0,
                                showscale=False, hovertemplate="%{text}: %{z:.2f}<extra></extra>",
                                y=[f"doc {c.row}, max {c.activation:.2f}" for c in contexts][::-1]), row=1, col=1)
    figure.add_trace(go.Histogram(x=fired.tolist(), nbinsx=40, marker_color="#d62728", showlegend=False), row=2, col=1)
    names = [tokenizer.decode([i]) for i, _ in bottom[::-1] + top[::-1]]
    values = [v for _, v in bottom[::-1] + top[::-1]]
    figure.add_trace(go.Bar(x=values, y=[repr(n) for n in names], orientation="h", showlegend=False,
                            marker_color=["#1f77b4" if v < 0 else "#d62728" for v in values]), row=2, col=2)
    figure.update_xaxes(showticklabels=False, row=1, col=1)
    title = f"latent {feature} of the SAE at {sae_site(sae) or 'an unknown site'}" + (f": {label}" if label else "")
    figure.update_layout(title=title, template="plotly_white", height=650)
    return figure


# --------------------------------------------------------------------------------------------
# AUROC


def auroc(scores: Float[Tensor, "n *latents"], labels: Bool[Tensor, "n"]) -> Float[Tensor, "*latents"]:
    """Reference for Exercise 6.11: area under the ROC curve of ``scores`` for ``labels`` (one AUROC per column),
    ties counted as half.

    The Mann-Whitney form: the probability that a random positive scores above a random negative.
    """
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs positives and negatives, got {n_pos} positives and {n_neg} negatives")
    columns = einops.rearrange(scores.float().reshape(len(scores), -1), "n latents -> latents n").contiguous()
    ordered = columns.sort(dim=-1).values
    below = torch.searchsorted(ordered, columns, right=False)          # scores strictly below
    not_above = torch.searchsorted(ordered, columns, right=True)       # scores below or equal
    ranks = (below + not_above + 1).float() / 2                          # average 1-based ranks
    positive_rank_sum = ranks[:, labels].sum(-1)
    result = (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return result.reshape(scores.shape[1:])


def split_aurocs(scores: Float[Tensor, "n latents"], labels: Bool[Tensor, "n"]
                 ) -> tuple[Float[Tensor, "latents"], Float[Tensor, "latents"]]:
    """Every latent's AUROC on the first half of the rows (``n // 2``, to select on) and on the others (held out)."""
    half = len(scores) // 2
    return auroc(scores[:half], labels[:half]), auroc(scores[half:], labels[half:])


def best_latent(scores: Float[Tensor, "n latents"], labels: Bool[Tensor, "n"]) -> tuple[int, float, float]:
    """Reference for Exercise 6.12: ``(latent, selection AUROC, held-out AUROC)`` of the best single latent.

    The latent is chosen by its AUROC on the first half of the rows (``n // 2``) and reported on the others
    (:func:`split_aurocs`), so that picking the best of many latents does not flatter the number reported.
    """
    select, held_out = split_aurocs(scores, labels)
    latent = int(select.argmax())
    return latent, float(select[latent]), float(held_out[latent])


# --------------------------------------------------------------------------------------------
# The generator's latent variables, as labelled probes


@dataclass(frozen=True)
class Probe:
    """Documents with one latent variable, and where in each document a latent's score is read.

    ``values[i]`` is document ``i``'s value of ``variable``; ``positions[i]`` is ``None`` for a document-level
    variable (the latent's maximum over the document) or the row position (BOS at 0) of the token that
    carries it.
    """

    variable: str
    texts: list[str]
    values: list[str]
    positions: list[int | None]

    @property
    def pooling(self) -> Pooling:
        return "max" if self.positions[0] is None else "token"


def labelled_probes(tokenizer: PreTrainedTokenizerBase, n: int = 400, seed: int = 0) -> list[Probe]:
    """The generator's latent variables as :class:`Probe` s: story sentiment, topic and emotion (document level),
    agreement subject number (subject token) and the IOI indirect object's gender (its name's token)."""
    from utils.world import eval_set

    stories = eval_set("story", n, seed=1000 + seed)
    agreements = eval_set("agreement", n, seed=2000 + seed)
    iois = eval_set("ioi", n, seed=3000 + seed)
    probes = [Probe(variable, [d.text for d in stories], [d.labels[variable] for d in stories], [None] * len(stories))
              for variable in ("sentiment", "topic", "emotion")]
    probes.append(Probe("subject number", [d.text for d in agreements], [d.labels["number"] for d in agreements],
                        [token_at_char(tokenizer, d.text, d.spans_of("subject")[-1].end - 1) for d in agreements]))
    probes.append(Probe("indirect object gender", [d.text for d in iois],
                        [d.labels["indirect_object_gender"] for d in iois],
                        [token_at_char(tokenizer, d.text, d.spans_of("ioi_indirect_object")[-1].end - 1) for d in iois]))
    return probes


@torch.no_grad()
def probe_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sae: AnySAE, probe: Probe,
                 batch_size: int = 100) -> Float[Tensor, "n d_sae"]:
    """Every latent's score on each document of ``probe``: its max over the document, or its value at the labelled token."""
    scores = []
    for start in range(0, len(probe.texts), batch_size):
        input_ids, mask, _ = encode_batch(tokenizer, probe.texts[start:start + batch_size], MAX_LENGTH)
        feats = encode_documents(model, sae, input_ids, mask)           # [batch, pos, d_sae]
        if probe.pooling == "max":
            scores.append(feats.max(1).values)
        else:
            rows = torch.arange(len(input_ids))
            scores.append(feats[rows, torch.tensor(probe.positions[start:start + batch_size])])
    return torch.cat(scores)


@dataclass(frozen=True)
class GroundTruthRow:
    """The best single latent for ``variable = value`` (one vs the rest): chosen on one half, AUROC on the other."""

    variable: str
    value: str
    latent: int
    auroc_select: float
    auroc_held_out: float
    n_positive: int
    n_negative: int


@torch.no_grad()
def probe_aurocs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sae: AnySAE, probe: Probe
                 ) -> dict[str, tuple[Float[Tensor, "d_sae"], Float[Tensor, "d_sae"]]]:
    """For each value of the probe's variable: every latent's AUROC on the selection half and on the held-out half."""
    scores = probe_scores(model, tokenizer, sae, probe)
    half = len(scores) // 2
    values = [str(v) for v in probe.values]
    out = {}
    for value in sorted(set(values)):
        labels = torch.tensor([v == value for v in values])
        if labels[:half].all() or not labels[:half].any() or labels[half:].all() or not labels[half:].any():
            continue
        out[value] = split_aurocs(scores, labels)
    return out


ProbeAUROCs = dict[str, dict[str, tuple[Tensor, Tensor]]]


def all_probe_aurocs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sae: AnySAE,
                     probes: Sequence[Probe]) -> ProbeAUROCs:
    """:func:`probe_aurocs` of every probe, ``{variable: {value: (select, held_out)}}``: compute it once and pass it
    as ``aurocs=`` to :func:`ground_truth_table` and :func:`label_features`, which otherwise each run the model."""
    return {probe.variable: probe_aurocs(model, tokenizer, sae, probe) for probe in probes}


def ground_truth_table(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sae: AnySAE,
                       probes: Sequence[Probe], aurocs: ProbeAUROCs | None = None) -> list[GroundTruthRow]:
    """For every variable and value of ``probes``, the single latent with the highest AUROC (chosen on the first
    half of the documents) and its AUROC on the second half (``aurocs``: from :func:`all_probe_aurocs`)."""
    aurocs = aurocs if aurocs is not None else all_probe_aurocs(model, tokenizer, sae, probes)
    rows = []
    for probe in probes:
        values = [str(v) for v in probe.values]
        half = len(values) // 2
        for value, (select, held_out) in aurocs[probe.variable].items():
            latent = int(select.argmax())
            rows.append(GroundTruthRow(probe.variable, value, latent, float(select[latent]), float(held_out[latent]),
                                       sum(v == value for v in values[half:]), sum(v != value for v in values[half:])))
    return rows


def recovered_variables(table: Sequence[GroundTruthRow], threshold: float = 0.9) -> dict[str, list[str]]:
    """``{variable: [values whose best latent reaches threshold on held-out documents]}``, variables with at least one."""
    out: dict[str, list[str]] = {}
    for row in table:
        if row.auroc_held_out >= threshold:
            out.setdefault(row.variable, []).append(row.value)
    return out


def label_features(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sae: AnySAE, probes: Sequence[Probe],
                   threshold: float = 0.9, aurocs: ProbeAUROCs | None = None) -> dict[int, tuple[str, float]]:
    """Automatic labels: each latent's best ``"variable=value"`` by selection-half AUROC, kept when the held-out
    AUROC of that label reaches ``threshold``: ``{latent: (label, held-out AUROC)}`` (``aurocs``: from
    :func:`all_probe_aurocs`)."""
    aurocs = aurocs if aurocs is not None else all_probe_aurocs(model, tokenizer, sae, probes)
    best: dict[int, tuple[str, float, float]] = {}
    for probe in probes:
        for value, (select, held_out) in aurocs[probe.variable].items():
            for latent in (select >= threshold).nonzero().squeeze(-1).tolist():
                if latent not in best or select[latent] > best[latent][1]:
                    best[latent] = (f"{probe.variable}={value}", float(select[latent]), float(held_out[latent]))
    return {latent: (label, held) for latent, (label, _, held) in sorted(best.items()) if held >= threshold}


def plot_ground_truth(table: Sequence[GroundTruthRow], threshold: float = 0.9) -> go.Figure:
    """A plotly bar chart of each variable's best single latent's held-out AUROC, the threshold drawn."""
    import plotly.graph_objects as go

    names = [f"{r.variable} = {r.value} (latent {r.latent})" for r in table]
    figure = go.Figure(go.Bar(x=[r.auroc_held_out for r in table], y=names, orientation="h",
                              marker_color=["#2ca02c" if r.auroc_held_out >= threshold else "#999" for r in table],
                              hovertemplate="%{y}: AUROC %{x:.3f}<extra></extra>"))
    figure.add_vline(x=threshold, line_dash="dash")
    figure.update_layout(title="Best single SAE latent per latent variable (held-out AUROC)", xaxis_range=[0.5, 1],
                         xaxis_title="AUROC", template="plotly_white", height=120 + 22 * len(table))
    return figure


def ground_truth_records(table: Sequence[GroundTruthRow]) -> list[dict[str, Any]]:
    """The table as a list of dicts (``pandas.DataFrame(records)`` shows it as a table)."""
    return [{"variable": r.variable, "value": r.value, "latent": r.latent, "AUROC (select)": round(r.auroc_select, 3),
             "AUROC (held out)": round(r.auroc_held_out, 3), "positives": r.n_positive, "negatives": r.n_negative}
            for r in table]


# --------------------------------------------------------------------------------------------
# Steering vectors in SAE features


def _check_vector(sae: AnySAE, vector: Tensor) -> Float[Tensor, "d_in"]:
    if vector.ndim != 1 or vector.shape[0] != sae.W_dec.shape[1]:
        raise ValueError(f"the vector has shape {tuple(vector.shape)}, the SAE's decoder rows are {sae.W_dec.shape[1]} wide: "
                         "pass one [d_model] vector of the SAE's site")
    return vector.float()


def aligned_latents(W_dec: Float[Tensor, "d_sae d_in"], vector: Float[Tensor, "d_in"], k: int) -> list[tuple[int, float]]:
    """Reference for Exercise 6.13: the ``k`` latents whose decoder rows have the largest |cosine| with ``vector``,
    ``[(latent, cosine), ...]`` by |cosine|, the cosine keeping its sign."""
    cosines = torch.nn.functional.normalize(W_dec, dim=-1) @ torch.nn.functional.normalize(vector, dim=0)   # [d_sae]
    top = cosines.abs().topk(min(k, len(cosines))).indices
    return [(int(i), float(cosines[i])) for i in top]


def decompose_vector(sae: AnySAE, vector: Float[Tensor, "d_in"], k: int = 10) -> list[tuple[int, float]]:
    """The ``k`` latents whose decoder rows are most aligned with ``vector``: ``[(latent, cosine), ...]``, by |cosine|.

    A steering vector is a *direction* (a difference of means), not an activation, so it is compared with the
    directions the latents write (their decoder rows) rather than passed through the encoder, whose biases
    are tuned for real activations.
    """
    return aligned_latents(sae.W_dec.float(), _check_vector(sae, vector), k)


def decoder_matches(decoder_a: Float[Tensor, "d_a d_in"], decoder_b: Float[Tensor, "d_b d_in"]
                    ) -> tuple[Float[Tensor, "d_a"], Int[Tensor, "d_a"]]:
    """Reference for bonus exercise 6.16: for each decoder row of one SAE, its closest row in another's, by cosine
    similarity (a row and its negation are opposite features, not the same one): ``(cosines, indices)``."""
    if decoder_a.ndim != 2 or decoder_b.ndim != 2 or decoder_a.shape[1] != decoder_b.shape[1]:
        raise ValueError(f"decoders of shapes {tuple(decoder_a.shape)} and {tuple(decoder_b.shape)}: pass two "
                         "[d_sae, d_in] matrices of the same d_in, two SAEs of the same site")
    cosines = F.normalize(decoder_a, dim=-1) @ F.normalize(decoder_b, dim=-1).T       # [d_a, d_b]
    return cosines.max(dim=-1)


def _span(sae: AnySAE, features: Sequence[int]) -> Float[Tensor, "n d_in"]:
    return sae.W_dec[[check_feature_index(sae, f) for f in features]].float()


def projection_on_rows(rows: Float[Tensor, "n d_in"], vector: Float[Tensor, "d_in"]) -> Float[Tensor, "d_in"]:
    """Reference for Exercise 6.15: the combination of ``rows`` closest to ``vector`` (least squares), i.e. the
    orthogonal projection of ``vector`` on their span; rows need not be orthogonal or of unit norm."""
    coefficients = torch.linalg.lstsq(rows.T, vector.unsqueeze(-1)).solution     # [n, 1]
    return (rows.T @ coefficients).squeeze(-1)


def reconstruct_with_features(sae: AnySAE, vector: Float[Tensor, "d_in"], features: Sequence[int]
                              ) -> Float[Tensor, "d_in"]:
    """The least-squares combination of the ``features``' decoder rows closest to ``vector``."""
    vector = _check_vector(sae, vector)
    if not features:
        return torch.zeros_like(vector)
    return projection_on_rows(_span(sae, features), vector)


def remove_features(sae: AnySAE, vector: Float[Tensor, "d_in"], features: Sequence[int]) -> Float[Tensor, "d_in"]:
    """``vector`` minus its projection on the span of the ``features``' decoder rows."""
    return _check_vector(sae, vector) - reconstruct_with_features(sae, vector, features)


def steering_variants(sae: AnySAE, vector: Float[Tensor, "d_in"], relevant: Sequence[int], k: int = 10
                      ) -> dict[str, Float[Tensor, "d_in"]]:
    """The chapter's four steering vectors, all rescaled to ``vector``'s norm so that one scale compares them:

    (a) ``"vector"``: the vector itself; (b) ``"sae reconstruction"``: its reconstruction from its ``k`` top latents
    (:func:`decompose_vector`); (c) ``"best feature"``: the decoder row of the first ``relevant`` latent, signed
    like the vector; (d) ``"irrelevant removed"``: the vector without what the top latents that are not
    ``relevant`` add to it: its projection on the ``relevant`` rows plus its part outside the span of all the top
    rows, ``P_rel v + (v - P_top v)``. (Subtracting the projection of ``v`` on the irrelevant rows alone would also
    remove the part of the relevant direction that those rows share, and that part steers.)
    """
    vector = _check_vector(sae, vector)
    if not relevant:
        raise ValueError("relevant is empty: pass the latents that the labels predict, e.g. the best latent of "
                         "ground_truth_table(...) for the steered variable")
    top = [latent for latent, _ in decompose_vector(sae, vector, k)]
    best = sae.W_dec[check_feature_index(sae, relevant[0])].float()
    variants = {
        "vector": vector,
        "sae reconstruction": reconstruct_with_features(sae, vector, top),
        "best feature": best * torch.sign(best @ vector),
        "irrelevant removed": reconstruct_with_features(sae, vector, list(relevant))
                              + remove_features(sae, vector, sorted(set(top) | set(relevant))),
    }
    return {name: v * vector.norm() / v.norm().clamp_min(1e-12) for name, v in variants.items()}


@torch.no_grad()
def mean_difference(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, site: str,
                    positive: Sequence[str], negative: Sequence[str]) -> Float[Tensor, "d_model"]:
    """A contrastive direction at ``site``: the mean activation over the real tokens of ``positive`` texts minus
    that of ``negative`` texts (a stand-in for a CAA vector, without the A/B prompt format)."""
    means = []
    for texts in (positive, negative):
        input_ids, mask, _ = encode_batch(tokenizer, list(texts), MAX_LENGTH)
        means.append(site_activations(model, input_ids, mask, site)[real_positions(mask)].mean(0))
    return means[0] - means[1]


__all__ = [
    "Context", "GroundTruthRow", "Probe", "ProbeAUROCs", "all_probe_aurocs", "auroc", "decompose_vector",
    "feature_dashboard", "ground_truth_records", "ground_truth_table", "label_features", "labelled_probes",
    "logit_effects", "mean_difference", "plot_ground_truth", "probe_aurocs", "probe_scores", "reconstruct_with_features",
    "recovered_variables", "remove_features", "steering_variants", "token_at_char", "top_contexts",
]
