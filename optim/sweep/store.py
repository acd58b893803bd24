"""Results store: SQLite (WAL) for rows, a data directory for artifacts.

Layout under the store directory (``$OPTIM_DATA_DIR`` or ``<repo>/.optim_data``)::

    optim.sqlite3            models, datasets, sweeps, variants, layers
    artifacts/<sha256>.onnx  one file per distinct variant model (content-addressed)
    arrays/<name>.npy        small arrays a sweep needs to resume (baseline logits)

Durability: every finished variant is written in its own transaction (artifact first, renamed into
place, then the row), so a process killed with SIGKILL loses at most the variant it was working on.
Concurrency: one connection per call (SQLite connections are cheap), WAL so readers such as the
dashboard never block the single writer, and a busy timeout for the rare writer overlap.

Written here rather than with an ORM: the schema is five tables and the standard-library ``sqlite3``
module covers it without another dependency.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optim.errors import OptimError
from optim.paths import data_dir

VARIANT_COLUMNS = [
    "variant_id", "label", "status", "error", "prune_kind", "prune_ratio", "bits", "opt_level",
    "executable", "top1", "top1_lo", "top1_hi", "top5", "agreement", "cosine", "rel_error",
    "latency_ms", "latency_p90_ms", "size_bytes", "effective_size_bytes", "params", "macs",
    "artifact_path",
]  # fmt: skip
EXTRA_VARIANT_COLUMNS = ["sweep_id", "variant_key", "seq", "n_eval", "latency_runs", "sparsity", "compressed_bytes",
                         "build_s", "measure_s", "meta_json", "distilled", "notes",
                         "node", "node_hw", "node_json", "cosine_lo", "cosine_hi",
                         "fidelity_metric", "sqnr_db", "output_kinds", "worst_output", "fidelity_collapsed",
                         ]  # fmt: skip  # node*: optim.sweep.node; fidelity_*: optim.measure.fidelity
LAYER_COLUMNS = ["node", "op_type", "ms", "share", "provider", "macs", "flops", "params", "weight_bytes", "kernels"]
SENSITIVITY_COLUMNS = ["layer", "op_type", "params", "kind", "level", "metric", "drop", "agreement", "rel_error"]

_REAL = {"prune_ratio", "top1", "top1_lo", "top1_hi", "top5", "agreement", "cosine", "rel_error", "cosine_lo", "cosine_hi",
         "sqnr_db", "latency_ms", "latency_p90_ms", "build_s", "measure_s", "ms", "share", "flops", "sparsity", "level",
         "metric", "drop"}  # fmt: skip
_INT = {"bits", "executable", "size_bytes", "effective_size_bytes", "params", "macs", "seq", "n_eval",
        "latency_runs", "weight_bytes", "compressed_bytes", "distilled", "fidelity_collapsed"}  # fmt: skip


def _col_type(name: str) -> str:
    return "REAL" if name in _REAL else "INTEGER" if name in _INT else "TEXT"


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS models (
    hash TEXT PRIMARY KEY, name TEXT, source_format TEXT, size_bytes INTEGER, meta_json TEXT,
    artifact_path TEXT, created REAL);
CREATE TABLE IF NOT EXISTS datasets (
    hash TEXT PRIMARY KEY, name TEXT, n INTEGER, shape TEXT, labelled INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY, model_hash TEXT, data_hash TEXT, calib_hash TEXT, model_name TEXT,
    config_json TEXT, status TEXT, total INTEGER, created REAL, finished REAL);
CREATE TABLE IF NOT EXISTS variants (
    {", ".join(f"{c} {_col_type(c)}" + (" PRIMARY KEY" if c == "variant_id" else "")
               for c in VARIANT_COLUMNS + EXTRA_VARIANT_COLUMNS)},
    created REAL);
CREATE TABLE IF NOT EXISTS layers (
    variant_id TEXT, idx INTEGER, {", ".join(f"{c} {_col_type(c)}" for c in LAYER_COLUMNS)},
    PRIMARY KEY (variant_id, idx));
CREATE TABLE IF NOT EXISTS sensitivity_runs (
    model_hash TEXT, data_hash TEXT, settings_json TEXT, metric_name TEXT, baseline REAL, n_rows INTEGER,
    created REAL, PRIMARY KEY (model_hash, data_hash, settings_json));
CREATE TABLE IF NOT EXISTS sensitivity (
    model_hash TEXT, data_hash TEXT, settings_json TEXT, idx INTEGER,
    {", ".join(f'"{c}" {_col_type(c)}' for c in SENSITIVITY_COLUMNS)},
    PRIMARY KEY (model_hash, data_hash, settings_json, idx));
"""


def canonical_json(obj: Any) -> str:
    """Stable JSON (sorted keys, no spaces, tuples as lists) used for hashing configurations."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def stable_id(*parts: Any) -> str:
    """A short, stable id (sha256 hex prefix) of the canonical JSON of ``parts``."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:24]


class Store:
    """Sweeps, variants and per-layer rows in SQLite; variant models as content-addressed files."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else data_dir()
        self.path.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir = self.path / "artifacts"
        self.arrays_dir = self.path / "arrays"
        self.artifacts_dir.mkdir(exist_ok=True)
        self.arrays_dir.mkdir(exist_ok=True)
        self.db_path = self.path / "optim.sqlite3"
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            _add_missing_columns(conn)
            conn.execute("CREATE INDEX IF NOT EXISTS variants_by_sweep ON variants (sweep_id, seq)")
        self.clean_partial()

    # --- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection; the ``with`` body is one transaction (committed on success)."""
        with closing(sqlite3.connect(self.db_path, timeout=30.0, check_same_thread=False)) as conn:
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                yield conn

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> pd.DataFrame:
        with self._connect() as conn:
            return pd.read_sql_query(sql, conn, params=params)

    # --- models and data -------------------------------------------------------------------------
    def put_model(self, handle: Any, keep_artifact: bool = False) -> str:
        """Record a model by content hash (and, optionally, its ONNX file); returns the hash."""
        path = self.put_artifact(handle.model_bytes, handle.content_hash) if keep_artifact else None
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?, ?, ?, ?)",
                (handle.content_hash, handle.name, handle.source_format, handle.size_bytes,
                 canonical_json(jsonable(handle.meta)), str(path) if path else None, time.time()),
            )  # fmt: skip
        return handle.content_hash

    def put_dataset(self, dataset: Any) -> str:
        """Record a data set by content hash (rows only, the arrays stay with the caller)."""
        x = dataset.x
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
                (dataset.content_hash, dataset.name, len(x), canonical_json(list(x.shape[1:])),
                 int(dataset.y is not None), time.time()),
            )  # fmt: skip
        return dataset.content_hash

    def put_artifact(self, data: bytes, content_hash: str | None = None) -> Path:
        """Write ``data`` to ``artifacts/<sha256>.onnx`` (atomically; kept if already there)."""
        digest = content_hash or hashlib.sha256(data).hexdigest()
        dest = self.artifacts_dir / f"{digest}.onnx"
        if not dest.exists():
            tmp = dest.with_suffix(f".tmp{os.getpid()}")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, dest)
            except BaseException:  # a full disk or a kill leaves no partial file behind
                tmp.unlink(missing_ok=True)
                raise
        return dest

    def read_artifact(self, path: Path | str) -> bytes:
        """An artifact's bytes, checked against the sha256 in its name (a damaged file is refused, not served)."""
        path = Path(path)
        data = path.read_bytes()
        if len(path.stem) == 64 and hashlib.sha256(data).hexdigest() != path.stem:
            raise OptimError(f"The stored model {path.name[:20]}... is damaged (its content no longer matches its "
                             "hash). Delete the sweep and run it again.")
        return data

    def clean_partial(self, older_than_s: float = 3600.0) -> int:
        """Remove ``*.tmp*`` files a killed writer left behind (older than ``older_than_s``); returns how many."""
        cutoff, n = time.time() - older_than_s, 0
        for folder in (self.artifacts_dir, self.arrays_dir):
            for p in folder.glob("*.tmp*"):
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def put_array(self, name: str, array: np.ndarray) -> Path:
        dest = self.arrays_dir / f"{name}.npy"
        tmp = self.arrays_dir / f"{name}.tmp{os.getpid()}.npy"
        np.save(tmp, array)
        os.replace(tmp, dest)
        return dest

    def get_array(self, name: str) -> np.ndarray | None:
        path = self.arrays_dir / f"{name}.npy"
        return np.load(path, allow_pickle=False) if path.exists() else None

    # --- sweeps ----------------------------------------------------------------------------------
    def create_sweep(
        self, sweep_id: str, model_hash: str, data_hash: str | None, calib_hash: str | None,
        model_name: str, config: Mapping[str, Any], total: int,
    ) -> None:  # fmt: skip
        """Register a sweep (no-op when it exists, except that status goes back to 'running')."""
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sweeps VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, NULL)",
                (sweep_id, model_hash, data_hash, calib_hash, model_name, canonical_json(config), total, time.time()),
            )
            conn.execute("UPDATE sweeps SET status='running', finished=NULL WHERE sweep_id=? AND status!='done'",
                         (sweep_id,))  # fmt: skip

    def finish_sweep(self, sweep_id: str, status: str = "done") -> None:
        with self._connect() as conn:
            conn.execute("UPDATE sweeps SET status=?, finished=? WHERE sweep_id=?", (status, time.time(), sweep_id))

    def sweep(self, sweep_id: str) -> dict[str, Any] | None:
        """The sweep's row as a dict (``config`` parsed), or None when unknown."""
        df = self._query("SELECT * FROM sweeps WHERE sweep_id=?", (sweep_id,))
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["config"] = json.loads(row.pop("config_json"))
        return row

    def sweeps(self) -> pd.DataFrame:
        """All sweeps, newest first, with counts of ok and failed variants."""
        return self._query(
            "SELECT s.*, SUM(v.status='ok') AS n_ok, SUM(v.status='failed') AS n_failed "
            "FROM sweeps s LEFT JOIN variants v USING (sweep_id) GROUP BY s.sweep_id ORDER BY s.created DESC"
        )

    # --- variants --------------------------------------------------------------------------------
    def finished_keys(self, sweep_id: str) -> set[str]:
        """Variant keys of a sweep that are already stored (ok or failed)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT variant_key FROM variants WHERE sweep_id=?", (sweep_id,)).fetchall()
        return {r[0] for r in rows}

    def put_variant(
        self, row: Mapping[str, Any], layers: pd.DataFrame | None = None, model_bytes: bytes | None = None
    ) -> str:
        """Store one finished variant (and its per-layer rows, and its model file) in one transaction.

        ``row`` holds ``variant_id`` and ``sweep_id`` plus any of the variant columns; missing columns
        are NULL. Storing the same ``variant_id`` again replaces it.
        """
        values = dict(row)
        if model_bytes is not None:
            values["artifact_path"] = str(self.put_artifact(model_bytes))
        columns = [c for c in VARIANT_COLUMNS + EXTRA_VARIANT_COLUMNS if c in values]
        params = [_plain(values[c]) for c in columns]
        vid = values["variant_id"]
        with self._connect() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO variants ({', '.join(columns)}, created) "
                f"VALUES ({', '.join('?' * len(columns))}, ?)",
                (*params, time.time()),
            )
            conn.execute("DELETE FROM layers WHERE variant_id=?", (vid,))
            if layers is not None and len(layers):
                cols = [c for c in LAYER_COLUMNS if c in layers.columns]
                rows = [
                    (vid, i, *(_plain(v) for v in rec))
                    for i, rec in enumerate(layers[cols].itertuples(index=False, name=None))
                ]
                conn.executemany(
                    f"INSERT INTO layers (variant_id, idx, {', '.join(cols)}) "
                    f"VALUES (?, ?, {', '.join('?' * len(cols))})",
                    rows,
                )
        return vid

    def variants(self, sweep_id: str) -> pd.DataFrame:
        """One row per stored variant of ``sweep_id`` in grid order (contract columns first)."""
        cols = VARIANT_COLUMNS + EXTRA_VARIANT_COLUMNS
        df = self._query(f"SELECT {', '.join(cols)} FROM variants WHERE sweep_id=? ORDER BY seq", (sweep_id,))
        df["executable"] = df["executable"].astype("boolean")
        return df

    def layers(self, variant_id: str) -> pd.DataFrame:
        """Per-node rows of one variant: profile time (ms, share, provider) beside MACs/params/bytes."""
        return self._query(f"SELECT {', '.join(LAYER_COLUMNS)} FROM layers WHERE variant_id=? ORDER BY idx",
                           (variant_id,))  # fmt: skip

    def delete_sweep(self, sweep_id: str) -> None:
        """Forget a sweep's rows (artifacts stay: they are content-addressed and may be shared)."""
        with self._connect() as conn:
            conn.execute("DELETE FROM layers WHERE variant_id IN (SELECT variant_id FROM variants WHERE sweep_id=?)",
                         (sweep_id,))  # fmt: skip
            conn.execute("DELETE FROM variants WHERE sweep_id=?", (sweep_id,))
            conn.execute("DELETE FROM sweeps WHERE sweep_id=?", (sweep_id,))

    # --- per-layer sensitivity -------------------------------------------------------------------
    def put_sensitivity(self, model_hash: str, data_hash: str, settings: Mapping[str, Any],
                        df: pd.DataFrame) -> None:
        """Store one measured sensitivity table (``optim.analysis.sensitivity.analyze`` rows, plus its
        ``metric_name`` / ``baseline`` attrs), replacing any earlier one with the same key."""
        key = (model_hash, data_hash, canonical_json(settings))
        cols = [c for c in SENSITIVITY_COLUMNS if c in df.columns]
        rows = [(*key, i, *(_plain(v) for v in rec))
                for i, rec in enumerate(df[cols].itertuples(index=False, name=None))]
        baseline = df.attrs.get("baseline")
        quoted = ", ".join(f'"{c}"' for c in cols)  # "drop" is an SQL keyword
        with self._connect() as conn:
            conn.execute("DELETE FROM sensitivity WHERE model_hash=? AND data_hash=? AND settings_json=?", key)
            conn.executemany(
                f"INSERT INTO sensitivity (model_hash, data_hash, settings_json, idx, {quoted}) "
                f"VALUES (?, ?, ?, ?, {', '.join('?' * len(cols))})",
                rows,
            )
            conn.execute(
                "INSERT OR REPLACE INTO sensitivity_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, df.attrs.get("metric_name"), None if baseline is None else float(baseline), len(rows),
                 time.time()),
            )  # fmt: skip

    def sensitivity(self, model_hash: str, data_hash: str,
                    settings: Mapping[str, Any] | None = None) -> pd.DataFrame | None:
        """The stored table for this model and data (``settings`` None: the newest one), or None.

        ``attrs`` carry ``metric_name``, ``baseline`` and ``settings`` (parsed) as stored."""
        sql = "SELECT * FROM sensitivity_runs WHERE model_hash=? AND data_hash=?"
        params: tuple[Any, ...] = (model_hash, data_hash)
        if settings is not None:
            sql, params = sql + " AND settings_json=?", (*params, canonical_json(settings))
        runs = self._query(sql + " ORDER BY created DESC LIMIT 1", params)
        if runs.empty:
            return None
        run = runs.iloc[0]
        cols = ", ".join(f'"{c}"' for c in SENSITIVITY_COLUMNS)
        df = self._query(f"SELECT {cols} FROM sensitivity WHERE model_hash=? AND data_hash=? AND settings_json=? "
                         "ORDER BY idx", (model_hash, data_hash, run["settings_json"]))  # fmt: skip
        if len(df) != int(run["n_rows"]):
            return None  # a partial write cannot happen (one transaction), but never show half a table
        baseline = None if pd.isna(run["baseline"]) else float(run["baseline"])
        df.attrs.update(metric_name=run["metric_name"], baseline=baseline,
                        settings=json.loads(run["settings_json"]), created=float(run["created"]))
        return df


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older version up to the current variant and layer columns (additive only)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(variants)")}
    for col in VARIANT_COLUMNS + EXTRA_VARIANT_COLUMNS:
        if col not in have:
            conn.execute(f"ALTER TABLE variants ADD COLUMN {col} {_col_type(col)}")
    have = {row[1] for row in conn.execute("PRAGMA table_info(layers)")}
    for col in LAYER_COLUMNS:
        if col not in have:
            conn.execute(f"ALTER TABLE layers ADD COLUMN {col} {_col_type(col)}")


def _plain(value: Any) -> Any:
    """A value SQLite accepts: NumPy scalars unwrapped, NaN → NULL, containers → JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (dict, list, tuple)):
        return canonical_json(jsonable(value))
    if value is pd.NA or value is None:
        return None
    return value


def jsonable(obj: Any) -> Any:
    """Meta dicts as JSON-safe values (arrays summarised by shape, unknown objects by repr)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"array_shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)
