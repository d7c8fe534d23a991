# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 11: Distributed search — one study, many workers, a crash, a resume
#
# When one process is not enough, run the same search in many processes — on one machine or many —
# against **one database**. That is optuna's RDB storage; tinyqml adds no scheduler. Every worker
# asks the storage for the next trial, and:
#
# - the study ends with **exactly N completed trials** however many workers race for them;
# - a worker killed in the middle of a trial stops sending heartbeats; another worker marks that
#   trial failed and re-enqueues it with the same parameters, so it is **retried**, and counted once;
# - stopping everything and rerunning the same command **resumes** the study;
# - heavy shared artefacts (here the trained SuperCircuit) are built once, written atomically and
#   loaded with `weights_only=True`.
#
# From a shell the same is `tinyqml search qnas --trials 40 --study demo --workers 2` (add
# `--storage postgresql://user@host/db` to share a server between machines). The measured speed-up is
# `benchmarks/distributed.py`. Set `TINYQML_FAST=1` for a quick run; files go to
# `TINYQML_TUTORIAL_OUT` (default `runs/tutorials`). If `TINYQML_TEST_POSTGRES_URL` points at a
# PostgreSQL server (as in `make test`), the study lives there; otherwise in a SQLite file.

# %%
import os
import signal
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState

from tinyqml.searches import run_builtin_search
from tinyqml.search.workers import SURPLUS_ATTR, WORKER_ATTR, count_states

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
optuna.logging.set_verbosity(optuna.logging.WARNING)
TRIALS = 12 if FAST else 40
PG = os.environ.get("TINYQML_TEST_POSTGRES_URL", "")
STORAGE = PG or f"sqlite:///{(OUT / '11_search.db').resolve()}"
STUDY = f"tutorial11-{os.getpid()}"  # a fresh study each run (a server may hold older ones)
ARTIFACTS = OUT / "11_artifacts"
print("storage:", STORAGE.split("@")[-1] if PG else STORAGE)

# %% [markdown]
# ## 1. One study, two workers
#
# `run_builtin_search("qnas", ...)` first builds the shared artefact — the QuantumNAS SuperCircuit,
# trained once on the 4-class digits — then starts two worker processes. Each loads the artefact and
# runs trials (a sub-circuit plus a qubit mapping on a fake 5-qubit backend, scored by its exact noisy
# validation accuracy) until the study has the requested number of completed trials.

# %%
t = time.perf_counter()
study = run_builtin_search("qnas", TRIALS // 2, STUDY, storage=STORAGE, workers=2, artifacts_dir=ARTIFACTS, fast=True)
print(f"{count_states(study)[TrialState.COMPLETE]} completed trials in {time.perf_counter() - t:.0f} s; "
      f"workers: {sorted({tr.user_attrs.get(WORKER_ATTR, '?') for tr in study.trials})}")
print("artefacts:", sorted(p.name for p in ARTIFACTS.rglob("*") if p.is_file()))

# %% [markdown]
# ## 2. A crash: SIGKILL one worker in the middle of a trial
#
# We continue the same study to `TRIALS` completed trials with two workers, and kill one of them with
# `SIGKILL` while it evaluates a trial. Nothing tells the storage; the trial just stops sending
# heartbeats. After the grace period the surviving worker marks it failed and optuna's retry callback
# enqueues a copy with the same parameters, which the survivor then runs.

# %%
result: dict = {}
runner = threading.Thread(target=lambda: result.setdefault("study", run_builtin_search(
    "qnas", TRIALS, STUDY, storage=STORAGE, workers=2, artifacts_dir=ARTIFACTS, fast=True)))
runner.start()
victim = None
while victim is None and runner.is_alive():
    time.sleep(0.2)
    running = optuna.load_study(study_name=STUDY, storage=STORAGE).get_trials(deepcopy=False,
                                                                               states=(TrialState.RUNNING,))
    mine = [tr for tr in running if tr.user_attrs.get(WORKER_ATTR, "").split(":")[-1] not in ("", str(os.getpid()))]
    if mine:
        victim = int(mine[0].user_attrs[WORKER_ATTR].split(":")[-1])
        os.kill(victim, signal.SIGKILL)
        print(f"killed worker pid {victim} during trial {mine[0].number}")
runner.join()
study = optuna.load_study(study_name=STUDY, storage=STORAGE)
states = count_states(study)
failed = [tr for tr in study.trials if tr.state == TrialState.FAIL]
retried = [tr for tr in study.trials if tr.system_attrs.get("failed_trial") in {f.number for f in failed}]
print(f"completed {states[TrialState.COMPLETE]} (wanted {TRIALS}), failed {states[TrialState.FAIL]}, "
      f"surplus {sum(1 for tr in study.trials if tr.user_attrs.get(SURPLUS_ATTR))}")
for f in failed:
    again = [tr for tr in retried if tr.system_attrs.get("failed_trial") == f.number]
    print(f"trial {f.number} (killed) -> retried as trial {again[0].number if again else '?'}, "
          f"{again[0].state.name if again else ''}, same parameters: {bool(again) and again[0].params == f.params}")
assert states[TrialState.COMPLETE] == TRIALS, "the study must end with exactly TRIALS completed trials"

# %% [markdown]
# ## 3. Resume: stop everything, run the same command again
#
# Asking for more trials continues the study where it is; asking again for the same number runs
# nothing. (Interrupting with Ctrl-C has the same effect as the timeout below: the running trials are
# failed or go stale, and the next run retries them.)

# %%
try:
    run_builtin_search("qnas", TRIALS + 4, STUDY, storage=STORAGE, workers=2, artifacts_dir=ARTIFACTS,
                       fast=True, timeout=3.0)  # stopped after 3 s, probably mid-way
except Exception as exc:  # the workers were stopped before the study had TRIALS + 4 trials
    print("interrupted:", " ".join(str(exc).split())[:160])
study = run_builtin_search("qnas", TRIALS + 4, STUDY, storage=STORAGE, workers=2, artifacts_dir=ARTIFACTS, fast=True)
print(f"resumed: {count_states(study)[TrialState.COMPLETE]} completed trials")
assert count_states(study)[TrialState.COMPLETE] == TRIALS + 4

# %% [markdown]
# ## 4. A dashboard-ready study
#
# The study is an ordinary optuna study: `optuna-dashboard <storage URL>` opens it (install
# `optuna-dashboard`; it reads the same SQLite file or PostgreSQL database), and every trial carries
# its parameters, value, state, timestamps and the worker (`host:pid`) that ran it — below as a CSV
# file (`study.trials_dataframe()` gives the same table when pandas is installed).

# %%
import csv  # noqa: E402

names = sorted({k for tr in study.trials for k in tr.params})
with (OUT / "11_study.csv").open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["number", "state", "value", "worker", "start", "complete", *names])
    for tr in study.trials:
        w.writerow([tr.number, tr.state.name, tr.value, tr.user_attrs.get(WORKER_ATTR, ""), tr.datetime_start,
                    tr.datetime_complete, *(tr.params.get(n, "") for n in names)])
for tr in study.trials[-6:]:
    print(f"trial {tr.number:3d} {tr.state.name:9s} value {tr.value if tr.value is not None else float('nan'):.3f} "
          f"worker {tr.user_attrs.get(WORKER_ATTR, '?')}")
print(f"open it with: optuna-dashboard {STORAGE if not PG else '<the postgresql:// URL>'}")
done = [tr for tr in study.trials if tr.state == TrialState.COMPLETE]
fig, ax = plt.subplots(figsize=(6, 3.2))
workers = sorted({tr.user_attrs.get(WORKER_ATTR, "?") for tr in done})
for k, w in enumerate(workers):
    mine = [tr for tr in done if tr.user_attrs.get(WORKER_ATTR) == w]
    ax.scatter([tr.datetime_complete for tr in mine], [tr.value for tr in mine], s=14, label=w.split(":")[-1])
ax.set_xlabel("completed at")
ax.set_ylabel("noisy validation accuracy")
ax.set_title("one study, several workers (legend: worker pid)")
ax.legend(fontsize=7)
fig.autofmt_xdate()
fig.tight_layout()
fig.savefig(OUT / "11_trials.png", dpi=120)
plt.close(fig)
