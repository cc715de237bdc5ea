"""One typed configuration object for the whole pipeline.

Defaults live here and nowhere else. Precedence: defaults < environment (``ECAT_<FIELD>``)
< DAG params (``--conf``). The DAG builds one Airflow ``Param`` per field from
:func:`param_schema`, so the JSON-schema bounds that refuse a bad ``--conf`` are declared
next to the default they guard. This module imports only the standard library: the DAG file
imports it at parse time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import logging
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ecat_tasks.errors import ConfigError, PermanentError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

BASELINES = ("target_only", "mixed", "mixed_scenario", "finetune", "teacher_finetune", "star")
# ECAT with one setting switched from its default; teacher_init and no_teacher_init switch
# student_init_from_teacher on and off (the default is off, so only teacher_init is trained by default)
DEFAULT_ABLATIONS = ("no_graph", "no_weights", "no_kd", "fixed_kd", "teacher_init", "no_scenario")
ABLATIONS = (*DEFAULT_ABLATIONS, "no_teacher_init")
SERVABLE = (*BASELINES, "teacher", *(f"ecat_{a}" for a in ABLATIONS))  # what the guard may serve besides ECAT


def _f(default: Any, doc: str, **schema: Any) -> Any:
    """A dataclass field carrying its JSON schema (bounds, enum) and a one-line doc."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata={"doc": doc, "schema": schema})
    return field(default=default, metadata={"doc": doc, "schema": schema})


@dataclass(frozen=True)
class EcatConfig:
    # --- data ---------------------------------------------------------------------------
    target_scenario: str = _f("mini_app", "Scenario value that is the target mini-app.", minLength=1, maxLength=64)
    feature_spec: str = _f("", "Feature spec (YAML) naming the warehouse table, its columns and features; empty: ECAT_FEATURE_SPEC, else specs/demo.yaml. Relative paths are from the checkout.", maxLength=1024, pattern=r"^([^\x00]*\.ya?ml)?$")
    label: str = _f("click", "Label that trains and evaluates (the feature spec must declare it).", enum=["click", "conversion"])
    lookback_days: int = _f(7, "Days of history for the graph and a teacher cold start.", minimum=1, maximum=60)
    holdout_pct: float = _f(0.2, "Share of target users (or samples) held out as the cold-start view (reported, never trained on, never decides).", minimum=0.05, maximum=0.5)
    validation_pct: float = _f(0.15, "Share of the target rows, disjoint from the holdout, that every decision reads (promotion, guards); never trained on.", minimum=0.05, maximum=0.4)
    validation_by: str = _f("time", "How the validation slice is cut from the non-holdout target rows: time (each day's latest rows, of the users the models train on: the next day production scores is those users, later) or user (by the holdout's key: whole users, never trained on, or single samples under holdout_by=sample).", enum=["time", "user"])
    holdout_by: str = _f("user", "Hold out whole users or single samples.", enum=["user", "sample"])
    extract_batch_rows: int = _f(250_000, "Rows per Parquet batch when extracting.", minimum=1_000, maximum=5_000_000)
    # --- validation ---------------------------------------------------------------------
    validate_chunk_rows: int = _f(250_000, "Rows per chunk that validate's Great Expectations suite sees at once: its memory is bounded by this, not by the day's rows.", minimum=100, maximum=5_000_000)
    min_target_rows: int = _f(200, "A target day with fewer rows fails validation.", minimum=1, maximum=100_000_000)
    min_source_rows: int = _f(1_000, "A source day with fewer rows fails validation.", minimum=1, maximum=1_000_000_000)
    label_rate_min: float = _f(0.0005, "Lowest plausible positive rate of the label.", minimum=0.0, maximum=1.0)
    label_rate_max: float = _f(0.6, "Highest plausible positive rate of the label.", minimum=0.0, maximum=1.0)
    drift_psi_warn: float = _f(0.25, "Validate warns when a dense feature's PSI against the warm-start teacher's profile exceeds this.", minimum=0.0, maximum=100.0)
    drift_psi_fail: float = _f(3.0, "Validate fails when a dense feature's PSI exceeds this (0 switches the failure off).", minimum=0.0, maximum=100.0)
    # --- graph selection ----------------------------------------------------------------
    graph_enabled: bool = _f(True, "Coarse graph selection on; off keeps a random sample of the same cap.")
    graph_selection: str = _f("soft", "How the graph's scores choose the source rows: soft keeps every source row of the day within max_source_rows (coverage first) and turns the scores into weights (graph_weight_power), which multiply the domain weights; top_k keeps the max_source_ratio x target rows nearest the mini-app (weight 1). Chosen on the validation slice (bench/RESULTS.md, issue 14).", enum=["top_k", "soft"])
    max_source_ratio: float = _f(20.0, "top_k: keep at most this many source samples per target sample.", minimum=0.1, maximum=100.0)
    max_source_rows: int = _f(600_000, "soft: compute budget, the most source rows a day's student trains on (over it, a seeded random sample of this many, each keeping its graph weight). 600,000: what the top-k selection trained on in the 1M-row cost day, so that day costs what it did (bench/RESULTS.md).", minimum=1_000, maximum=1_000_000_000)
    graph_weight_power: float = _f(1.0, "soft: a row's graph weight is (score / mean positive score) ** this, clipped to [weight_floor, weight_max] and normalised to mean 1 (an unreached row keeps the floor); 0 weighs every row 1.", minimum=0.0, maximum=4.0)
    graph_score_norm: str = _f("degree", "Graph score of a node: share (its share of its type's visits; hubs score high for being hubs) or degree (visits over the visits its weighted degree alone would draw, smoothed: nearness to the mini-app beyond popularity). A row scores the sum of its user's and item's shares, or the geometric mean of their degree ratios.", enum=["share", "degree"])
    walk_length: int = _f(6, "Steps per random walk (user-item hops).", minimum=1, maximum=64)
    walks_per_seed: int = _f(8, "Random walks started from each seed node.", minimum=1, maximum=256)
    restart_prob: float = _f(0.3, "Probability a walk restarts at its seed at each step.", minimum=0.0, maximum=0.95)
    edge_weight_impression: float = _f(1.0, "Edge weight of an impression.", minimum=0.0, maximum=100.0)
    edge_weight_click: float = _f(3.0, "Extra edge weight of a click.", minimum=0.0, maximum=100.0)
    edge_weight_conversion: float = _f(6.0, "Extra edge weight of a conversion.", minimum=0.0, maximum=100.0)
    # --- domain reweighting -------------------------------------------------------------
    reweight_enabled: bool = _f(True, "Domain weights on; off gives every candidate weight 1.")
    reweight_epochs: int = _f(3, "Epochs of the domain classifier (per fold, over its fit sample).", minimum=1, maximum=50)
    reweight_folds: int = _f(5, "Cross-fitting folds of the domain classifier: no candidate is scored by a model that trained on it.", minimum=2, maximum=20)
    reweight_fit_rows: int = _f(100_000, "Rows the domain classifiers fit on (a seeded sample: up to half target-train rows, the rest candidates); every candidate is still scored.", minimum=1_000, maximum=10_000_000)
    reweight_min_ess: float = _f(0.5, "Floor on the effective sample size of the weights, as a share of the candidates (tempers the density ratio).", minimum=0.0, maximum=1.0)
    weight_max: float = _f(5.0, "Upper clip of an importance weight.", minimum=1.0, maximum=100.0)
    weight_floor: float = _f(0.1, "Lowest importance weight: the least target-like candidates keep it instead of being dropped.", minimum=0.0, maximum=1.0)
    reweight_per_label: bool = _f(True, "Normalise the weights within each label class (keeps the candidates' label mix).")
    reweight_min_auc: float = _f(0.6, "Out-of-fold discriminator AUC below which its weights are noise: every candidate keeps weight 1.", minimum=0.0, maximum=1.0)
    # --- models -------------------------------------------------------------------------
    norm_momentum: float = _f(0.3, "Weight of each day's dense statistics in the normalisation a model keeps (EMA across days); 0 freezes the first day's.", minimum=0.0, maximum=1.0)
    embed_dim: int = _f(8, "Embedding size of every categorical feature.", minimum=2, maximum=256)
    teacher_hidden: list = _f([128, 64], "Teacher MLP layer sizes.", type="array", items={"type": "integer", "minimum": 4, "maximum": 4096}, minItems=1, maxItems=6)
    student_hidden: list = _f([64, 32], "Student MLP layer sizes (also every baseline).", type="array", items={"type": "integer", "minimum": 4, "maximum": 4096}, minItems=1, maxItems=6)
    teacher_lr: float = _f(0.01, "Teacher learning rate (Adam).", minimum=1e-6, maximum=1.0)
    student_lr: float = _f(0.01, "Student and baselines learning rate (Adam).", minimum=1e-6, maximum=1.0)
    teacher_epochs: int = _f(3, "Teacher epochs of a cold start (no earlier teacher: it trains on the whole lookback window).", minimum=1, maximum=50)
    teacher_warm_epochs: int = _f(1, "Teacher epochs of a warm-start day (continual training: the day's entire space, seen once, on top of yesterday's teacher; chosen on validation, bench/RESULTS.md issue 16).", minimum=1, maximum=50)
    student_epochs: int = _f(2, "Student epochs per day.", minimum=1, maximum=100)
    teacher_scenario: bool = _f(True, "The teacher reads the scenario as one more sparse field: it learns where the entire space's scenarios differ, so what it distils into the student is its prediction for the mini-app's rows, not the average over scenarios.")
    student_scenario: bool = _f(True, "The student (and its ablations) reads the scenario as one more sparse field, as mixed_scenario does: the mini-app gets its own embedding, which enters the pairwise products, so the source rows' scenarios do not pull the target's predictions towards theirs.")
    student_schedule: str = _f("joint", "How a student day orders its rows: joint (student_epochs over the target and the weighted source together, then student_target_epochs on the target alone) or pretrain_finetune (one pass over the weighted source alone, then student_epochs on the target alone, as the finetune baseline orders them); distillation throughout.", enum=["joint", "pretrain_finetune"])
    student_target_epochs: int = _f(0, "Epochs on the target's training rows alone that close each student day (target specialisation, distillation still on); 0 = none.", minimum=0, maximum=20)
    batch_size: int = _f(256, "Mini-batch size of every training but the teacher's (teacher_batch_size); the smallest one: a phase with many rows trains in larger batches (max_batch_size).", minimum=16, maximum=131_072)
    max_batch_size: int = _f(1024, "Largest mini-batch of a phase that is not the teacher's: a phase trains in batches of its rows // min_steps_per_epoch rounded down to a power of two, at least batch_size and at most this (per-step costs, such as Adam's dense update of every embedding row, are paid once per batch; a small phase keeps batch_size and its steps). batch_size or lower: every phase trains at batch_size.", minimum=16, maximum=131_072)
    min_steps_per_epoch: int = _f(256, "Optimiser steps per epoch a phase keeps before its batch grows beyond batch_size (see max_batch_size).", minimum=1, maximum=1_000_000)
    teacher_batch_size: int = _f(1024, "Mini-batch size of the teacher, which trains on the whole entire space every day (per-step costs, such as Adam's dense update of every embedding row, are paid once per batch; chosen on validation, bench/RESULTS.md issue 16).", minimum=16, maximum=131_072)
    shuffle_buffer_rows: int = _f(1_048_576, "Training reads the lake in blocks of this many rows and shuffles within a block (bounds memory); a phase that fits in one block is encoded once and shuffled whole each epoch.", minimum=1_024, maximum=100_000_000)
    user_dropout: float = _f(0.0, "Share of every model's training rows (a salted hash of the row) that train as if their user were unseen (the unseen-id row instead of the user's own), so a model learns what to predict for a user it never trained on: most of MovieLens' next-day rows. 0 = none (0.2 was level to behind on the validation slice: bench/RESULTS.md, issue 14).", minimum=0.0, maximum=0.9)
    student_init_from_teacher: bool = _f(False, "Student embeddings (and vocabularies) start from the teacher's rows of the same ids. Off: chosen on the validation slice (bench/RESULTS.md, issue 14: the initialisation cost 0.010 AUC on synthetic and was level on MovieLens); the ablation teacher_init trains it on.")
    # --- distillation -------------------------------------------------------------------
    kd_enabled: bool = _f(True, "Distil the teacher into the student.")
    kd_lambda: float = _f(0.5, "Weight of the distillation term.", minimum=0.0, maximum=100.0)
    kd_temperature: float = _f(1.0, "Temperature T of the adaptive weight exp(-BCE(y, t)/T).", minimum=0.01, maximum=100.0)
    kd_adaptive: bool = _f(True, "Per-sample adaptive KD weight; off uses a fixed weight of 1.")
    kd_hidden: bool = _f(True, "Include the hidden-representation term ||h_s - g(h_t)||^2.")
    kd_logit: bool = _f(True, "Include the KL term between teacher and student probabilities.")
    # --- evaluation and promotion -------------------------------------------------------
    baselines: list = _f(list(BASELINES), "Baselines trained side by side.", type="array", items={"type": "string", "enum": list(BASELINES)}, uniqueItems=True)
    ablations: list = _f(list(DEFAULT_ABLATIONS), "ECAT ablations trained side by side: ECAT with one setting switched from its default (teacher_init and no_teacher_init set student_init_from_teacher).", type="array", items={"type": "string", "enum": list(ABLATIONS)}, uniqueItems=True)
    compare_every_days: int = _f(1, "Comparison models (baselines, ablations) retrain when their newest checkpoint is this many days old; in between, evaluation scores that checkpoint and the report names its day.", minimum=1, maximum=365)
    guard_enabled: bool = _f(True, "Negative-transfer guard: serve and promote the best on the validation slice of ECAT and the comparison models trained today that it may serve (guard_candidates), simplest first.")
    guard_margin: float = _f(0.002, "Validation AUC lift a more complex candidate needs over a simpler one to be served (unless its bootstrap interval is above 0); the served model trails the best candidate, every baseline included, by at most this.", minimum=0.0, maximum=0.1)
    guard_rule: str = _f("evidence", "When the guard replaces its current choice: margin (simplest candidate first; a more complex one wins when its validation AUC lift is ahead or above guard_margin), evidence (ECAT the incumbent; a candidate, simplest first, replaces the choice only when its paired-bootstrap lift is ahead and above guard_margin), se_margin (as evidence, lift above guard_margin plus one bootstrap standard error). evidence chosen on validation folds (bench/RESULTS.md, issue 14: with 8 candidates on a few hundred validation rows, margin serves a noisy point-best).", enum=["margin", "evidence", "se_margin"])
    guard_candidates: list = _f([*BASELINES, "teacher"], "Models the guard may serve besides ECAT, among those trained today (the others, by default the ablations, are still trained, scored and reported): every candidate the guard compares adds a chance that a noisy point-best wins on a few hundred validation rows. Chosen on the validation slice (bench/RESULTS.md, issue 14).", type="array", items={"type": "string", "enum": list(SERVABLE)}, uniqueItems=True)
    guard_slice: str = _f("previous_day", "Whose scores of the window's validation rows the guard compares: previous_day (each day's validation rows scored by each candidate's checkpoint of the day before, the models that served that day and never saw it: a sample of what the next day is to today's models, its new users included) or today (today's checkpoints on the same rows: later rows of users they trained on). previous_day by design: on MovieLens 84-87% of a next day's rows come from users no earlier day holds; 76-78% of the previous-day slice's rows (every guard window, the first day's included) come from users its models never trained on, and none of today's slice (bench/RESULTS.md, issue 14). A window without an earlier day (the first day) reads today's.", enum=["previous_day", "today"])
    guard_window_days: int = _f(7, "Days of validation rows the guard scores (the last ones of the lookback window). Chosen on validation folds against 3 and 1 days, scored on the newest day's rows (bench/RESULTS.md, issue 14): level, so the longer window stays.", minimum=1, maximum=60)
    serve_calibration: bool = _f(True, "Calibrate the served model: sigmoid(slope * logit + intercept), slope > 0 so rankings are unchanged, fitted on the guard's validation rows and kept only when a cross-fit by user folds lowers their logloss; applied to its next-day scores, the report and the registered model.")
    calibration_strength: float = _f(20.0, "L2 penalty (in rows' worth of logloss) pulling the calibration's slope and intercept towards identity (1, 0): with few validation rows the map stays near identity.", minimum=0.1, maximum=1_000_000.0)
    promote_min_lift: float = _f(0.0, "Student validation AUC must beat target-only's by more than this.", minimum=-1.0, maximum=1.0)
    promote_tolerance: float = _f(0.005, "Student validation AUC may trail the current champion's by at most this; the next day, a champion whose next-day AUC trails the version it replaced by more is rolled back.", minimum=0.0, maximum=1.0)
    registered_model: str = _f("ecat_student", "MLflow registered model name.", minLength=1, maxLength=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # --- runtime ------------------------------------------------------------------------
    seed: int = _f(42, "Seed of every random choice and of training.", minimum=0, maximum=2**31 - 1)
    device: str = _f("cpu", "Torch device for training: cpu, cuda or cuda:N.", pattern="^(cpu|cuda(:[0-9]+)?)$")
    health_min_pred_std: float = _f(1e-4, "A trained model whose validation predictions have a smaller standard deviation is constant: not published.", minimum=0.0, maximum=0.5)
    deterministic: bool = _f(True, "Deterministic kernels on CPU and CUDA (a rerun reproduces its checkpoints); off allows faster non-deterministic CUDA kernels.")
    torch_threads: int = _f(1, "Torch intra-op threads of each training task; 0 keeps torch's default (one per core). One: a task's small kernels gain nothing from a second thread, whose barrier waits for a free core on a busy worker (a training step took 2-6x as long on 2 cores; bench/RESULTS.md, issue 16), tasks run side by side instead, and a checkpoint does not depend on the worker's core count.", minimum=0, maximum=256)

    def __post_init__(self) -> None:
        if self.label_rate_min > self.label_rate_max:
            raise ValueError(f"label_rate_min ({self.label_rate_min}) exceeds label_rate_max ({self.label_rate_max})")
        if self.holdout_pct + self.validation_pct > 0.8:
            raise ValueError(f"holdout_pct ({self.holdout_pct}) + validation_pct ({self.validation_pct}) exceed 0.8: "
                             f"too few target users would be left to train on")
        for f in fields(self):  # the params' patterns and enums hold for the environment and direct callers too
            pattern, allowed = f.metadata["schema"].get("pattern"), f.metadata["schema"].get("enum")
            if pattern and not re.fullmatch(pattern, getattr(self, f.name)):
                raise ValueError(f"config field {f.name!r}: {getattr(self, f.name)!r} does not match {pattern}")
            if allowed and getattr(self, f.name) not in allowed:
                raise ValueError(f"config field {f.name!r}: {getattr(self, f.name)!r} is not one of {allowed}")
        bad = set(self.baselines) - set(BASELINES)
        if bad:
            raise ValueError(f"baselines: unknown {sorted(bad)}; known {list(BASELINES)}")
        bad = set(self.ablations) - set(ABLATIONS)
        if bad:
            raise ValueError(f"ablations: unknown {sorted(bad)}; known {list(ABLATIONS)}")

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None) -> "EcatConfig":
        """Build from defaults, then ``ECAT_<FIELD>`` environment values, then ``values``.

        Unknown keys are an error naming the key, so a typo in ``--conf`` never passes silently.
        """
        env = os.environ if env is None else env
        merged: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for name, f in known.items():
            raw = env.get(f"ECAT_{name.upper()}")
            if raw is not None:
                merged[name] = _coerce(name, f, raw)
        for key, value in (values or {}).items():
            if key not in known:
                raise ConfigError(unknown_field_message(key, known))
            merged[key] = _coerce(key, known[key], value) if isinstance(value, str) else value
        try:
            return cls(**merged)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "EcatConfig":
        return dataclasses.replace(self, **changes)


def unknown_field_message(key: str, known: Mapping[str, Any] | None = None) -> str:
    """``unknown config field 'x'; did you mean 'y'?`` (the closest valid name, when one is close)."""
    names = sorted(known if known is not None else EcatConfig.__dataclass_fields__)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid fields: {names}"
    return f"unknown config field {key!r}; {hint}"


def _coerce(name: str, f: dataclasses.Field, raw: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            value = json.loads(raw)
            if not isinstance(value, list):
                raise ValueError(raw)
            return value
        return raw
    except ValueError as exc:
        raise ConfigError(f"config field {name!r}: cannot read {raw!r} as {type(default).__name__}") from exc


def param_schema(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """JSON schema per field, with the current (env-aware) default, for Airflow Params."""
    current = EcatConfig.from_mapping(env=env)
    out: dict[str, dict[str, Any]] = {}
    for f in fields(EcatConfig):
        schema = dict(f.metadata["schema"])
        value = getattr(current, f.name)
        if "type" not in schema:
            schema["type"] = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
        out[f.name] = {"default": value, "description": f.metadata["doc"], **schema}
    return out


def check_conf(ds: str, cfg: EcatConfig, connection: Any = None) -> dict[str, Any]:
    """The run's first task: by now the params built ``cfg`` (an unknown or invalid key failed
    at once, naming it). Loads the feature spec ``cfg`` names and, given a warehouse
    ``connection``, checks the table against it (every missing column, wrong type and unknown
    label in one :class:`~ecat_tasks.spec.SpecError`, before anything is written); logs what
    the run changes from the defaults.

    A warehouse that cannot answer here (down, locked) is not this task's failure: extract,
    which has retries, runs the same check first.
    """
    from ecat_tasks.spec import require_warehouse, spec_of

    spec = spec_of(cfg)  # SpecError (a PermanentError) names the file, the key, the line
    warehouse = "not checked (no connection)"
    if connection is not None:
        try:
            start = (dt.date.fromisoformat(ds) - dt.timedelta(days=cfg.lookback_days - 1)).isoformat()
            require_warehouse(spec, connection, cfg.label, (start, ds))
            warehouse = "follows the spec"
        except PermanentError:
            raise
        except Exception as exc:  # noqa: BLE001 - extract checks again, with retries
            warehouse = f"not checked ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); extract checks it"
            log.warning("check_conf ds=%s: warehouse table %r %s", ds, spec.table, warehouse)
    defaults = EcatConfig.from_mapping(env={}).to_dict()
    changed = {k: v for k, v in cfg.to_dict().items() if v != defaults[k]}
    log.info("check_conf ds=%s: %d params valid, %d differ from the defaults: %s; feature spec %s (table %r, "
             "%d sparse, %d dense, labels %s); warehouse %s", ds, len(defaults), len(changed),
             json.dumps(changed, sort_keys=True), spec.path, spec.table, len(spec.all_sparse), len(spec.dense),
             spec.label_names, warehouse)
    return {"ds": ds, "changed": changed, "feature_spec": spec.summary(), "warehouse": warehouse}


# --- locations ------------------------------------------------------------------------
def ecat_home() -> Path:
    """Root of everything a run writes (``ECAT_HOME``; ``.ecat_home`` in the checkout by default)."""
    return Path(os.environ.get("ECAT_HOME", REPO_ROOT / ".ecat_home")).resolve()


def warehouse_path() -> Path:
    """The embedded DuckDB warehouse file (``ECAT_WAREHOUSE``)."""
    return Path(os.environ.get("ECAT_WAREHOUSE", ecat_home() / "warehouse.duckdb")).resolve()


def params_markdown() -> str:
    """The README's parameter table, generated so the docs cannot drift from the code."""
    rows = ["| param | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for name, spec in param_schema(env={}).items():
        allowed = []
        if "enum" in spec:
            allowed.append(" / ".join(map(str, spec["enum"])))
        if "items" in spec and "enum" in spec["items"]:
            allowed.append("subset of " + ", ".join(spec["items"]["enum"]))
        if "minimum" in spec or "maximum" in spec:
            allowed.append(f"{spec.get('minimum', '')} .. {spec.get('maximum', '')}")
        if "pattern" in spec:
            allowed.append(f"`{spec['pattern']}`")
        if spec["type"] == "array" and "items" in spec and "minimum" in spec["items"]:
            allowed.append(f"{spec.get('minItems', 1)}-{spec.get('maxItems', '')} ints {spec['items']['minimum']} .. {spec['items']['maximum']}")
        allowed_text = "; ".join(allowed) or spec["type"]
        cells = [f"`{name}`", f"`{json.dumps(spec['default'])}`", allowed_text, spec["description"]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


README_MARKERS = ("<!-- params:start -->", "<!-- params:end -->")


def readme_with_params(text: str) -> str:
    """The README text with its parameter table (between the markers) regenerated."""
    start, end = README_MARKERS
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{params_markdown()}\n{end}{tail}"


if __name__ == "__main__":  # python -m ecat_tasks.config [--update-readme]: the parameter table
    import sys

    if "--update-readme" in sys.argv:
        readme = REPO_ROOT / "README.md"
        readme.write_text(readme_with_params(readme.read_text()))
    else:
        sys.stdout.write(params_markdown() + "\n")
