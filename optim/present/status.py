"""What a sweep's status box says: counts from the store (ok, failed, reused), an ETA from the measured time
per variant, and the failures in full. Plain values in, plain values out; the page only draws them."""

from __future__ import annotations

from typing import Any

import pandas as pd


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def live_eta(snap: dict[str, Any], now: float) -> float | None:
    """Seconds left: the wall time per variant computed by this job so far × variants left, minus the time
    already spent on the current one; None until one variant was computed."""
    computed = int(snap.get("done", 0)) - int(snap.get("reused", 0))
    last = snap.get("last_done_at")
    if computed <= 0 or last is None:
        return None
    per = (float(last) - float(snap["started"])) / computed
    left = int(snap.get("total", 0)) - int(snap.get("done", 0))
    return max(per * left - (now - float(last)), 0.0)


def failures(df: pd.DataFrame | None) -> pd.DataFrame:
    """(variant, reason) of every failed variant, reasons in full."""
    if df is None or df.empty or "status" not in df:
        return pd.DataFrame(columns=["variant", "reason"])
    bad = df[df["status"].ne("ok")]
    reason = bad["error"].fillna("no reason was recorded") if "error" in bad else "no reason was recorded"
    return pd.DataFrame({"variant": bad["label"].fillna(bad["variant_id"]).astype(str),
                         "reason": pd.Series(reason, index=bad.index).astype(str)}).reset_index(drop=True)


def sweep_status(snap: dict[str, Any] | None, df: pd.DataFrame | None, now: float) -> dict[str, Any]:
    """The status of a sweep job (``snap`` = ``SweepJob.snapshot()``; None when only stored results remain).

    Returns ``state`` (running | done | cancelled | failed | stored), ``kind`` (the box to draw: running |
    success | warning | error), ``headline``, ``detail`` (progress line), ``ok``, ``failed``, ``reused``,
    ``done``, ``total``, ``fraction``, ``eta_s`` and ``failures`` (DataFrame variant, reason)."""
    rows = df if df is not None else pd.DataFrame(columns=["status"])
    n_ok = int(rows["status"].eq("ok").sum()) if len(rows) else 0
    n_failed = int(rows["status"].ne("ok").sum()) if len(rows) else 0
    state = snap["state"] if snap else "stored"
    total = int(snap["total"]) if snap else len(rows)
    done = max(int(snap["done"]) if snap else 0, n_ok + n_failed)
    reused = int(snap.get("reused", 0)) if snap else 0
    counts = f"{n_ok} ok" + (f", {n_failed} failed" if n_failed else "")
    reuse = f" · {reused} reused from the store" if reused else ""
    eta = live_eta(snap, now) if snap and state == "running" else None
    out: dict[str, Any] = {"state": state, "ok": n_ok, "failed": n_failed, "reused": reused, "done": done,
                           "total": total, "fraction": done / total if total else 0.0, "eta_s": eta,
                           "failures": failures(rows), "detail": ""}
    if state == "running":
        left = ("estimating the time left…" if eta is None else
                f"about {eta:.0f} s left" if eta >= 1 else "finishing the current variant…")
        out.update(kind="running", headline=f"Sweep running: {done}/{total} variants ({counts}){reuse} · {left}",
                   detail=(f"working on {snap['current']}" if snap.get("current") else "preparing…"))
    elif state == "failed":
        out.update(kind="error", headline=f"The sweep stopped after {_plural(done, 'variant')} ({counts}): "
                                          f"{snap.get('error') or 'unknown error'}")
    elif state == "cancelled":
        out.update(kind="warning", headline=f"Sweep cancelled after {done}/{total} variants ({counts}){reuse}; "
                                            "finished variants are kept, run it again to resume.")
    else:
        verb = "Sweep finished" if state == "done" else "Stored sweep"
        out.update(kind="warning" if n_failed else "success",
                   headline=f"{verb}: {counts}{reuse}" + (" (reasons below)" if n_failed else "."))
    return out
