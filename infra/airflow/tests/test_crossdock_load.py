"""Tests of the crossdock_load DAG's helpers, runnable without Airflow:

    CROSSDOCK_PIPELINE=pipelines/production.toml python3 infra/airflow/tests/test_crossdock_load.py

scripts/validate-infra (airflow-dag) runs them on pipelines/production.toml.
Standard library only (unittest), so any Python 3.11+ runs them.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import unittest.mock
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DAG_FILE = ROOT / "infra/airflow/dags/crossdock_load.py"


def load_dag_module():
    spec = importlib.util.spec_from_file_location("crossdock_load", DAG_FILE)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


m = load_dag_module()


class PipelineHelpers(unittest.TestCase):
    def test_production_pipeline_gives_distinct_task_groups(self):
        path = os.environ.get("CROSSDOCK_PIPELINE", str(ROOT / "pipelines/production.toml"))
        p = m.read_pipeline(path)
        self.assertTrue(p["tables"], "no tables")
        ids = [m.task_group_id(t) for t in p["tables"]]
        self.assertEqual(len(set(ids)), len(ids), "task group ids collide")

    def test_newest_marker_of_exactly_that_table(self):
        names = [
            "b1/Orders/2026-11-23T06-00-00Z/_SUCCESS",
            "b1/Orders/2026-11-24T06-00-00Z/_SUCCESS",
            "b1/OrdersArchive/2026-11-25T06-00-00Z/_SUCCESS",
            "b1/Orders/2026-11-24T06-00-00Z/data/_SUCCESS",
        ]
        self.assertEqual(m.newest_marker(names, "b1", "Orders"), "b1/Orders/2026-11-24T06-00-00Z/_SUCCESS")

    def test_webhook_urls_are_redacted(self):
        for url, want in [
            ("https://hooks.slack.com/services/T000/B000/SECRETTOKEN", "https://hooks.slack.com/…"),
            ("http://127.0.0.1:1/hook?token=SECRETTOKEN", "http://127.0.0.1:1/…"),
            ("https://user:SECRETTOKEN@chat.example", "https://chat.example"),
            ("https://user:SECRET/TOKEN@chat.example/x", "https://chat.example/…"),
            ("SECRETTOKEN", "REDACTED"),
        ]:
            self.assertEqual(m.redact_url(url), want, url)

    def test_failed_webhook_post_prints_no_token(self):
        class NotFound(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            # Nothing listens on port 1 (refused); the local server answers 404.
            for host in ["127.0.0.1:1", f"127.0.0.1:{server.server_port}"]:
                url = f"http://{host}/services/T000/B000/SECRETTOKEN"
                printed = io.StringIO()
                with unittest.mock.patch.dict(os.environ, {"CROSSDOCK_NOTIFY_URL": url}), contextlib.redirect_stdout(printed):
                    m.notify("test")
                self.assertIn(f"http://{host}/…", printed.getvalue())
                self.assertNotIn("SECRETTOKEN", printed.getvalue())
        finally:
            server.shutdown()


class BashRunnerQuoting(unittest.TestCase):
    """The bash runner's command, as BashOperator runs it (`bash -c COMMAND` with the
    operator's env on top of the worker's), for a marker whose batch id is hostile."""

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="crossdock-dag-test-"))
        # Stand-in for crossdock: prints its argv as JSON, does nothing else.
        self.fake = self.dir / "fake crossdock"  # a space: the binary path is quoted too
        self.fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
        self.fake.chmod(0o755)

    def tearDown(self):
        for f in self.dir.iterdir():
            f.unlink()
        self.dir.rmdir()

    def run_load(self, marker: str, pipeline: str = "/etc/crossdock/pipeline.toml") -> list[str]:
        command, env = m.bash_load(str(self.fake), marker, pipeline, "0")
        self.assertNotIn(marker, command, "the marker must not be part of the shell text")
        out = subprocess.run(["bash", "-c", command], env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def test_hostile_batch_id_is_one_argument_and_runs_nothing(self):
        pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
        for batch in [
            f'x$(touch {pwned})"',
            f"x`touch {pwned}`",
            f"x'; touch {pwned}; '",
            f'x"; touch {pwned}; "',
            f"x$(touch {pwned}) ${{HOME}} $HOME * ? [a] \\ \t{{a,b}} ~ ! %",
        ]:
            marker = f"gs://landing/{batch}/Orders/2026-11-23T06-00-00Z/_SUCCESS"
            with self.subTest(batch=batch):
                argv = self.run_load(marker)
                self.assertFalse(pwned.exists(), f"{batch!r}: the command substitution ran")
                self.assertEqual(argv[argv.index("--marker") + 1], marker, "the marker must arrive byte for byte")
                self.assertEqual(argv[0], "load")
                self.assertEqual(argv[-1], "--force")

    def test_configuration_with_shell_characters_is_quoted(self):
        pipeline = str(self.dir / "pipe $line's.toml")
        argv = self.run_load("gs://landing/b1/Orders/2026-11-23T06-00-00Z/_SUCCESS", pipeline)
        self.assertEqual(argv[argv.index("--pipeline") + 1], pipeline)

    def test_rehearsal_commands_carry_a_hostile_marker_as_one_argument(self):
        pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
        marker = f'gs://landing/x$(touch {pwned})"/Orders/2026-11-23T06-00-00Z/_SUCCESS'
        for argv in [m.sync_command(str(self.fake), marker, "/p.toml", "5s"), m.audit_command(str(self.fake), marker, "/p.toml", "0.05", "100")]:
            with self.subTest(cmd=argv[1]):
                command, env = m.bash_with_marker(argv)
                self.assertNotIn(marker, command)
                out = subprocess.run(["bash", "-c", command], env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                self.assertFalse(pwned.exists())
                self.assertEqual(got, argv[1:], "every argument arrives byte for byte")
        self.assertEqual(m.sync_command("c", "gs://m", "/p", "5s")[-4:], ["--until-lag", "5s", "--output", "json"])
        self.assertIn("--sample", m.audit_command("c", "gs://m", "/p", "0.05", "100"))

    def test_kubernetes_runner_passes_argv_not_shell(self):
        marker = 'gs://landing/x$(touch /tmp/pwned)"/Orders/2026-11-23T06-00-00Z/_SUCCESS'
        argv = m.load_command("crossdock", marker, "/etc/crossdock/pipeline.toml", "0")
        self.assertEqual(argv[argv.index("--marker") + 1], marker)


if __name__ == "__main__":
    unittest.main(verbosity=2)
