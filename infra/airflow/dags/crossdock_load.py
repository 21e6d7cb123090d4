"""crossdock: load each table of a pipeline as soon as its `_SUCCESS` marker lands.

One task group per table of the pipeline file:

    wait_for_marker  deferrable GCS sensor on gs://BUCKET/BATCH/TABLE/*/_SUCCESS
    marker           resolves the newest marker of the batch (skips the table when a
                     `_LOADED` record already sits next to it, unless `reload`)
    load             crossdock load --marker … --pipeline … --output json --force
                     (BashOperator on the worker, or KubernetesPodOperator)

Success and failure of every load (and a sensor timing out) are posted to a
Slack-compatible webhook. Trigger one run per batch:

    airflow dags trigger crossdock_load --conf '{"batch": "2026-11-23"}'

Configuration (environment of the scheduler/workers, or Airflow Variables with the
same names; Variables win):

    CROSSDOCK_PIPELINE          pipeline TOML read at parse time for the table list and
                                bucket (default: pipeline.toml beside this file)
    CROSSDOCK_RUNNER_PIPELINE   path of the same file where the load runs
                                (default: CROSSDOCK_PIPELINE; /etc/crossdock/pipeline.toml
                                for the kubernetes runner)
    CROSSDOCK_RUNNER            bash (default) | kubernetes
    CROSSDOCK_BIN               crossdock binary for the bash runner (default: crossdock)
    CROSSDOCK_IMAGE             image for the kubernetes runner
    CROSSDOCK_K8S_NAMESPACE     namespace for the kubernetes runner (default: crossdock)
    CROSSDOCK_K8S_SERVICE_ACCOUNT  service account (default: crossdock-load)
    CROSSDOCK_K8S_CONFIGMAP     ConfigMap holding pipeline.toml, mounted at /etc/crossdock
                                (default: crossdock-pipeline; infra/k8s)
    CROSSDOCK_MAX_ERRORS        --max-errors (default: 0)
    CROSSDOCK_MAX_PARALLEL_LOADS  loads running at once (default: 4)
    CROSSDOCK_WAIT_HOURS        how long a table's sensor waits for its marker (default: 48)
    CROSSDOCK_NOTIFY_URL        Slack-compatible incoming-webhook URL (empty: no posts)
    CROSSDOCK_GCP_CONN_ID       Airflow connection for GCS (default: google_cloud_default)

A second DAG, `crossdock_rehearsal` (daily), rehearses the cutover on every loaded table
of CROSSDOCK_BATCH (or the run's `batch` param): the newest marker with `_LOADED` next to
it, then

    sync             crossdock sync --until-lag CROSSDOCK_REHEARSAL_LAG (default 5s):
                     catch the target up with the change stream (the cutover gate)
    audit            crossdock audit --sample CROSSDOCK_AUDIT_SAMPLE (default 0.05)
                     --max-rcu CROSSDOCK_AUDIT_MAX_RCU (default 100): the live table
                     against the target; exit 7 (a difference) fails the task

and posts the audit's report (or the failure) to the webhook. Docs: docs/operations.md,
"Audit and cutover".

This file compiles and its helpers run without Airflow installed (the DAG object is
built only when Airflow is importable); scripts/validate-infra checks both.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover - older Airflow images
    import tomli as tomllib  # type: ignore[no-redef]

DAG_ID = "crossdock_load"
REHEARSAL_DAG_ID = "crossdock_rehearsal"
HERE = Path(__file__).resolve().parent
TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


# ---------------------------------------------------------------------------
# Plain helpers (no Airflow needed)
# ---------------------------------------------------------------------------


def setting(name: str, default: str = "") -> str:
    """An Airflow Variable if one exists, else the environment, else `default`."""
    try:
        from airflow.models import Variable

        value = Variable.get(name, default_var=None)
        if value is not None:
            return str(value)
    except Exception:  # no Airflow, no metadata database (parse-time tests), …
        pass
    return os.environ.get(name, default)


def read_pipeline(path: str | Path) -> dict:
    """The pipeline's name, landing bucket and tables (docs/format.md, Pipeline files)."""
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    source = doc.get("source") or {}
    relay = doc.get("relay") or {}
    bucket = relay.get("bucket") or source.get("bucket")
    if not bucket:
        raise ValueError(f"{path}: no [relay] bucket nor [source] bucket")
    tables = [t["name"] for t in doc.get("tables", [])]
    bad = [t for t in tables if not TABLE_RE.match(t)]
    if bad:
        raise ValueError(f"{path}: not DynamoDB table names: {bad}")
    if len(set(tables)) != len(tables):
        raise ValueError(f"{path}: a table is listed twice")
    return {"name": doc.get("name", "pipeline"), "bucket": bucket, "tables": tables}


def task_group_id(table: str) -> str:
    """Airflow ids allow [A-Za-z0-9_.-]; DynamoDB names use the same set, but '.'
    separates task groups, so it becomes '_' (collisions are checked at build)."""
    return "load_" + table.replace(".", "_")


def marker_glob(batch: str, table: str) -> str:
    return f"{batch}/{table}/*/_SUCCESS"


def newest_marker(names: list[str], batch: str, table: str) -> str | None:
    """The object name of the newest `_SUCCESS` of batch/table (timestamps sort as text)."""
    pattern = re.compile(rf"^{re.escape(batch)}/{re.escape(table)}/(\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}-\d{{2}}-\d{{2}}Z)/_SUCCESS$")
    found = sorted(n for n in names if pattern.match(n))
    return found[-1] if found else None


def load_command(binary: str, marker_url: str, pipeline: str, max_errors: str) -> list[str]:
    # --force: whether to load again is decided by the marker task (it skips the table
    # when `_LOADED` exists, unless the run's `reload` param is set), so the loader
    # must not skip on its own. Without `_LOADED`, --force changes nothing.
    return [binary, "load", "--marker", marker_url, "--pipeline", pipeline, "--max-errors", max_errors, "--output", "json", "--force"]


# The environment variable carrying the marker URL into the bash runner's command.
MARKER_ENV = "CROSSDOCK_MARKER"


def sync_command(binary: str, marker_url: str, pipeline: str, lag: str) -> list[str]:
    return [binary, "sync", "--marker", marker_url, "--pipeline", pipeline, "--until-lag", lag, "--output", "json"]


def audit_command(binary: str, marker_url: str, pipeline: str, sample: str, max_rcu: str) -> list[str]:
    return [binary, "audit", "--marker", marker_url, "--pipeline", pipeline, "--sample", sample, "--max-rcu", max_rcu, "--output", "json"]


def bash_with_marker(argv: list[str]) -> tuple[str, dict[str, str]]:
    """The bash runner's command line for `argv` and the environment it needs.

    The marker URL holds the batch id, which whoever triggers the run types freely
    (docs/format.md allows `$`, backticks and quotes in it). Spliced into shell text,
    even quoted, such an id would run as a command on the worker; so the marker travels
    in the environment and the command only names the variable, inside double quotes,
    where bash expands it once and never re-parses the result. Everything else is
    fixed configuration and is shell-quoted."""
    i = argv.index("--marker") + 1
    words = [shlex.quote(a) for a in argv]
    words[i] = f'"${MARKER_ENV}"'
    return " ".join(words), {MARKER_ENV: argv[i]}


def bash_load(binary: str, marker_url: str, pipeline: str, max_errors: str) -> tuple[str, dict[str, str]]:
    return bash_with_marker(load_command(binary, marker_url, pipeline, max_errors))


def redact_url(url: str) -> str:
    """scheme://host[:port]/… — a webhook URL is a bearer secret (Slack's carries the
    token in its path), so messages name only where it points; like the binary's
    crates/core/src/redact.rs, but dropping any user part too. Userinfo runs to the
    last `@` before `?`/`#`, so an unescaped `/` or `@` in a password stays in it."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^?#]*@)?([A-Za-z0-9._:\[\]%-]+)((?:[/?#].*)?)$", url, re.S)
    if not m:
        return "REDACTED"
    return f"{m.group(1)}://{m.group(2)}" + ("/…" if m.group(3) else "")


def notify(text: str, fields: dict | None = None) -> None:
    """Posts {"text": …} (Slack incoming-webhook format, also accepted by Mattermost,
    Google Chat and Teams' Slack-compatible endpoints). Never raises: a notification
    failure must not fail or retry a load."""
    url = setting("CROSSDOCK_NOTIFY_URL")
    if not url:
        return
    body = {"text": text}
    if fields:
        body["attachments"] = [{"fields": [{"title": k, "value": str(v), "short": True} for k, v in fields.items()]}]
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10).read()
    except Exception as e:  # pragma: no cover - network
        # The exception's type and HTTP status, and the redacted URL: urllib's messages
        # can quote the URL (and with it the token).
        status = getattr(e, "code", None)
        detail = type(e).__name__ + (f" {status}" if isinstance(status, int) else "")
        print(f"crossdock: notification to webhook {redact_url(url)} failed: {detail}")


def _context_fields(context: dict) -> dict:
    ti = context.get("task_instance") or context.get("ti")
    params = context.get("params") or {}
    fields = {"dag": DAG_ID, "batch": params.get("batch", "?")}
    if ti is not None:
        fields.update({"task": ti.task_id, "try": getattr(ti, "try_number", "?")})
        log_url = getattr(ti, "log_url", None)
        if log_url:
            fields["log"] = log_url
    return fields


def on_load_success(context: dict) -> None:
    ti = context.get("task_instance") or context.get("ti")
    summary = ti.xcom_pull(task_ids=ti.task_id) if ti is not None else None
    fields = _context_fields(context)
    try:
        s = json.loads(summary) if isinstance(summary, str) else (summary or {})
        for k in ("destination", "target", "rows_in_target", "items_expected", "rejected", "duration_ms"):
            if k in s:
                fields[k] = s[k]
    except (TypeError, ValueError):
        pass
    notify(f":white_check_mark: crossdock load finished: {fields.get('task')}", fields)


def on_failure(context: dict) -> None:
    fields = _context_fields(context)
    exc = context.get("exception")
    if exc is not None:
        fields["error"] = str(exc)[:500]
    notify(f":x: crossdock: {fields.get('task', 'task')} failed", fields)


# ---------------------------------------------------------------------------
# The DAG (only when Airflow is importable)
# ---------------------------------------------------------------------------

try:
    try:  # Airflow 3
        from airflow.sdk import DAG, Param, TaskGroup, task
    except ImportError:  # Airflow 2.7+
        from airflow import DAG
        from airflow.decorators import task
        from airflow.models.param import Param
        from airflow.utils.task_group import TaskGroup
    from airflow.exceptions import AirflowSkipException

    HAVE_AIRFLOW = True
except ImportError:
    HAVE_AIRFLOW = False


def _gcs_sensor(table: str, bucket: str, conn_id: str, timeout: timedelta):
    from airflow.providers.google.cloud.sensors.gcs import GCSObjectExistenceSensor

    return GCSObjectExistenceSensor(
        task_id="wait_for_marker",
        bucket=bucket,
        object=marker_glob("{{ params.batch }}", table),
        use_glob=True,  # apache-airflow-providers-google ≥ 10.13
        deferrable=True,  # waits in the triggerer, not in a worker slot
        poke_interval=60,
        timeout=int(timeout.total_seconds()),
        google_cloud_conn_id=conn_id,
        on_failure_callback=on_failure,
    )


def _load_task(table: str, bucket: str):
    max_errors = setting("CROSSDOCK_MAX_ERRORS", "0")
    return _crossdock_task(
        table,
        "load",
        lambda binary, marker, pipeline: load_command(binary, marker, pipeline, max_errors),
        dict(on_success_callback=on_load_success, retries=2, retry_delay=timedelta(minutes=5)),
    )


def _crossdock_task(table: str, task_id: str, argv, extra: dict):
    """A task running `argv(binary, marker_url, pipeline)` on the configured runner, with
    the marker the group's `marker` task resolved."""
    runner = setting("CROSSDOCK_RUNNER", "bash")
    marker_url = "{{ ti.xcom_pull(task_ids='%s.marker') }}" % task_group_id(table)
    common = dict(task_id=task_id, on_failure_callback=on_failure, **extra)
    if runner == "bash":
        from_env = setting("CROSSDOCK_PIPELINE", str(HERE / "pipeline.toml"))
        pipeline = setting("CROSSDOCK_RUNNER_PIPELINE", from_env)
        # `env` is a templated field: the marker is rendered into the environment, not
        # into the command (bash_load says why); append_env keeps the worker's PATH and
        # credentials.
        bash, env = bash_with_marker(argv(setting("CROSSDOCK_BIN", "crossdock"), marker_url, pipeline))
        try:
            from airflow.providers.standard.operators.bash import BashOperator
        except ImportError:
            from airflow.operators.bash import BashOperator
        # do_xcom_push: the last stdout line, crossdock's one-object JSON summary.
        return BashOperator(bash_command=bash, env=env, append_env=True, do_xcom_push=True, **common)
    if runner == "kubernetes":
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s

        pipeline = setting("CROSSDOCK_RUNNER_PIPELINE", "/etc/crossdock/pipeline.toml")
        configmap = setting("CROSSDOCK_K8S_CONFIGMAP", "crossdock-pipeline")
        return KubernetesPodOperator(
            name=f"crossdock-{task_id}-{table.lower().replace('_', '-').replace('.', '-')}"[:63],
            namespace=setting("CROSSDOCK_K8S_NAMESPACE", "crossdock"),
            service_account_name=setting("CROSSDOCK_K8S_SERVICE_ACCOUNT", "crossdock-load"),
            image=setting("CROSSDOCK_IMAGE", "ghcr.io/crossdock/crossdock:0.1.0"),
            # argv, no shell: the rendered marker is one argument whatever it holds.
            cmds=["crossdock"],
            arguments=argv("crossdock", marker_url, pipeline)[1:],
            env_vars={"CROSSDOCK_LOG_FORMAT": "json"},
            env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="crossdock-load-env", optional=True))],
            volumes=[k8s.V1Volume(name="pipeline", config_map=k8s.V1ConfigMapVolumeSource(name=configmap))],
            volume_mounts=[k8s.V1VolumeMount(name="pipeline", mount_path="/etc/crossdock", read_only=True)],
            container_resources=k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "2Gi"}, limits={"memory": "4Gi"}),
            get_logs=True,
            on_finish_action="delete_succeeded_pod",
            deferrable=True,
            **common,
        )
    raise ValueError(f"CROSSDOCK_RUNNER={runner!r}: expected bash or kubernetes")


def build_dag():
    pipeline_path = setting("CROSSDOCK_PIPELINE", str(HERE / "pipeline.toml"))
    p = read_pipeline(pipeline_path)
    bucket, tables = p["bucket"], p["tables"]
    ids = [task_group_id(t) for t in tables]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{pipeline_path}: two tables map to the same task group id: {ids}")
    conn_id = setting("CROSSDOCK_GCP_CONN_ID", "google_cloud_default")
    wait = timedelta(hours=float(setting("CROSSDOCK_WAIT_HOURS", "48")))
    batch_default = setting("CROSSDOCK_BATCH")

    with DAG(
        dag_id=DAG_ID,
        description=f"crossdock: load {p['name']}'s tables from gs://{bucket} as their markers land",
        schedule=None,  # one run per batch: trigger with {"batch": "…"}
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=int(setting("CROSSDOCK_MAX_PARALLEL_LOADS", "4")) * 2,  # a marker task + a load per table
        params={
            # No default unless CROSSDOCK_BATCH is set: then every trigger must name one
            # (allowed because the DAG has no schedule).
            "batch": Param(batch_default, type="string", minLength=1, description="Batch id of the exports to load")
            if batch_default
            else Param(type="string", minLength=1, description="Batch id of the exports to load"),
            "reload": Param(False, type="boolean", description="Load again even when _LOADED exists"),
        },
        default_args={"owner": "crossdock", "on_failure_callback": on_failure},
        tags=["crossdock", p["name"]],
        doc_md=__doc__,
    ) as dag:
        for table in tables:
            with TaskGroup(group_id=task_group_id(table), tooltip=f"DynamoDB table {table}"):
                sensor = _gcs_sensor(table, bucket, conn_id, wait)

                @task(task_id="marker")
                def marker(table: str = table, **context) -> str:
                    from airflow.providers.google.cloud.hooks.gcs import GCSHook

                    params = context["params"]
                    batch = params["batch"]
                    hook = GCSHook(gcp_conn_id=conn_id)
                    names = hook.list(bucket, prefix=f"{batch}/{table}/", match_glob=marker_glob(batch, table))
                    name = newest_marker(names, batch, table)
                    if name is None:
                        raise FileNotFoundError(f"no gs://{bucket}/{marker_glob(batch, table)} although the sensor fired")
                    loaded = name[: -len("_SUCCESS")] + "_LOADED"
                    if not params.get("reload") and hook.exists(bucket, loaded):
                        raise AirflowSkipException(f"gs://{bucket}/{loaded} exists: already loaded (trigger with reload=true to load again)")
                    return f"gs://{bucket}/{name}"

                sensor >> marker() >> _load_task(table, bucket)
    return dag


def on_audit_success(context: dict) -> None:
    ti = context.get("task_instance") or context.get("ti")
    report = ti.xcom_pull(task_ids=ti.task_id) if ti is not None else None
    fields = _context_fields(context)
    fields["dag"] = REHEARSAL_DAG_ID
    try:
        r = json.loads(report) if isinstance(report, str) else (report or {})
        for k in ("table", "destination", "sampled", "source_items", "matching", "missing", "different", "consumed_rcu"):
            if k in r:
                fields[k] = r[k]
    except (TypeError, ValueError):
        pass
    notify(f":white_check_mark: crossdock rehearsal: {fields.get('table', fields.get('task'))} caught up and audited, no difference", fields)


def build_rehearsal_dag():
    pipeline_path = setting("CROSSDOCK_PIPELINE", str(HERE / "pipeline.toml"))
    p = read_pipeline(pipeline_path)
    bucket, tables = p["bucket"], p["tables"]
    conn_id = setting("CROSSDOCK_GCP_CONN_ID", "google_cloud_default")
    lag = setting("CROSSDOCK_REHEARSAL_LAG", "5s")
    sample = setting("CROSSDOCK_AUDIT_SAMPLE", "0.05")
    max_rcu = setting("CROSSDOCK_AUDIT_MAX_RCU", "100")
    batch_default = setting("CROSSDOCK_BATCH")

    with DAG(
        dag_id=REHEARSAL_DAG_ID,
        description=f"crossdock: daily cutover rehearsal of {p['name']}'s loaded tables (sync to the gate, sampled audit)",
        schedule="@daily",
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=int(setting("CROSSDOCK_MAX_PARALLEL_LOADS", "4")) * 2,
        params={"batch": Param(batch_default, type="string", minLength=1, description="Batch id of the loaded exports to rehearse")},
        default_args={"owner": "crossdock", "on_failure_callback": on_failure},
        tags=["crossdock", p["name"], "rehearsal"],
        doc_md=__doc__,
    ) as dag:
        for table in tables:
            with TaskGroup(group_id=task_group_id(table), tooltip=f"DynamoDB table {table}"):

                @task(task_id="marker")
                def marker(table: str = table, **context) -> str:
                    from airflow.providers.google.cloud.hooks.gcs import GCSHook

                    batch = context["params"]["batch"]
                    hook = GCSHook(gcp_conn_id=conn_id)
                    names = hook.list(bucket, prefix=f"{batch}/{table}/", match_glob=marker_glob(batch, table))
                    name = newest_marker(names, batch, table)
                    if name is None or not hook.exists(bucket, name[: -len("_SUCCESS")] + "_LOADED"):
                        raise AirflowSkipException(f"{table}: no loaded export in batch {batch} yet; nothing to rehearse")
                    return f"gs://{bucket}/{name}"

                sync = _crossdock_task(table, "sync", lambda binary, m, pipe: sync_command(binary, m, pipe, lag), {})
                audit = _crossdock_task(
                    table, "audit", lambda binary, m, pipe: audit_command(binary, m, pipe, sample, max_rcu), dict(on_success_callback=on_audit_success)
                )
                marker() >> sync >> audit
    return dag


if HAVE_AIRFLOW:
    dag = build_dag()
    rehearsal = build_rehearsal_dag()
