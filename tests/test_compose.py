"""
compose.yml, the Dockerfile and their companions, checked as text: no Docker
engine runs here.  Variables are interpolated the way compose does (for the
forms compose.yml uses), so the checks see what compose would run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from twisted.trial import unittest

from twistedp2p.tracker.service import Options
from twistedp2p.tracker.store.factory import parse_db_url
from twistedp2p.tracker.store.pg_link import parse_url

ROOT = Path(__file__).resolve().parent.parent

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(Exception):
    pass


def interpolate(value, env):
    """
    Compose's interpolation of C{$$}, C{$VAR}, C{${VAR}}, C{${VAR:-default}}
    and C{${VAR:?error}} in every string of a parsed document.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        found = env.get(name) or None
        if match.group(2) == ":-":
            return found if found is not None else match.group(3)
        if match.group(2) == ":?" and found is None:
            raise MissingVariable(f"{name}: {match.group(3)}")
        return found or ""

    return _VARIABLE.sub(substitute, value)


def variables(text):
    return {m.group(1) or m.group(4) for m in _VARIABLE.finditer(text) if m.group(0) != "$$"}


class ComposeTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.text = (ROOT / "compose.yml").read_text()
        self.raw = yaml.safe_load(self.text)

    def config(self, **env):
        return interpolate(self.raw, env)

    def tracker_args(self, **env):
        """
        The tracker's command after C{p2ptracker}.
        """
        command = self.config(POSTGRES_PASSWORD="pw", **env)["services"]["tracker"]["command"]
        if isinstance(command, str):
            command = shlex.split(command)
        self.assertEqual(command[:4], ["twistd", "-n", "--pidfile=", "p2ptracker"])
        return command[4:]

    def test_services(self):
        self.assertEqual(set(self.raw["services"]), {"postgres", "tracker"})

    def test_postgres(self):
        postgres = self.config(POSTGRES_PASSWORD="pw")["services"]["postgres"]
        self.assertEqual(postgres["image"], "postgres:16-alpine")
        self.assertEqual(postgres["environment"]["POSTGRES_PASSWORD"], "pw")
        self.assertNotIn("ports", postgres, "PostgreSQL need not be reachable from outside")
        [volume] = postgres["volumes"]
        name, path = volume.split(":", 1)
        self.assertEqual(path, "/var/lib/postgresql/data")
        self.assertIn(name, self.raw["volumes"], "the data must live in a named volume")
        test = postgres["healthcheck"]["test"]
        self.assertIn("pg_isready", " ".join(test) if isinstance(test, list) else test)

    def test_no_secret_in_the_file(self):
        """
        The password comes only from the environment, and compose refuses
        to start without one.
        """
        self.assertRaises(MissingVariable, self.config)
        self.assertNotIn("change-me", self.text)
        for service in self.raw["services"].values():
            for key, value in (service.get("environment") or {}).items():
                if "PASSWORD" in key:
                    self.assertRegex(value, r"^\$\{POSTGRES_PASSWORD:\?[^}]+\}$")

    def test_tracker_waits_for_healthy_postgres(self):
        tracker = self.raw["services"]["tracker"]
        self.assertEqual(tracker["depends_on"], {"postgres": {"condition": "service_healthy"}})
        self.assertEqual(tracker["build"], ".")

    def test_tracker_command(self):
        args = self.tracker_args()
        self.assertIn("--no-shell", args)
        self.assertEqual(args[args.index("--listen") + 1], "tcp:9999")
        url = args[args.index("--db") + 1]
        self.assertEqual(parse_db_url(url).kind, "postgres")
        settings, options = parse_url(url)
        self.assertEqual((settings.host, settings.port, settings.user, settings.dbname), ("postgres", 5432, "p2p", "p2p"))
        self.assertIsNone(settings.password, "the password travels in PGPASSWORD, not on the command line")
        # The real tap accepts the command.
        config = Options()
        config.parseOptions(args)
        self.assertEqual(config["db"], url)
        self.assertTrue(config["no-shell"])

    def test_db_url_built_from_environment(self):
        args = self.tracker_args(POSTGRES_USER="alice", POSTGRES_DB="index", TRACKER_ID="t-2")
        settings, _ = parse_url(args[args.index("--db") + 1])
        self.assertEqual((settings.user, settings.dbname), ("alice", "index"))
        self.assertEqual(args[args.index("--tracker-id") + 1], "t-2")
        tracker = self.config(POSTGRES_PASSWORD="s3cret")["services"]["tracker"]
        self.assertEqual(tracker["environment"]["PGPASSWORD"], "s3cret")

    def test_ports(self):
        self.assertEqual(self.config(POSTGRES_PASSWORD="pw")["services"]["tracker"]["ports"], ["9999:9999"])
        self.assertEqual(
            self.config(POSTGRES_PASSWORD="pw", TRACKER_PORT="7000")["services"]["tracker"]["ports"], ["7000:9999"]
        )

    def test_env_example_names_every_variable(self):
        example = (ROOT / ".env.example").read_text()
        defined = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
        self.assertEqual(variables(self.text) - {"POSTGRES_USER", "POSTGRES_DB"} - defined, set())
        self.assertIn("POSTGRES_PASSWORD", defined)
        self.assertIn(".env", (ROOT / ".dockerignore").read_text().split())


class DockerfileTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.text = (ROOT / "Dockerfile").read_text()
        # Join continuation lines; drop comments.
        joined = re.sub(r"\\\n", " ", self.text)
        self.instructions = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    def test_base_image_port_and_user(self):
        self.assertEqual(self.instructions[0], "FROM python:3.11-slim")
        self.assertIn("EXPOSE 9999", self.instructions)
        users = [i.split()[1] for i in self.instructions if i.startswith("USER ")]
        self.assertTrue(users, "the image must not run as root")
        self.assertNotIn(users[-1], ("root", "0"))
        install = next(n for n, i in enumerate(self.instructions) if "pip install" in i)
        self.assertGreater(self.instructions.index(f"USER {users[-1]}"), install)

    def test_install_matches_ci(self):
        """
        The image installs the project as CI does (the launcher .ci/run
        goes through), minus the editable mode and the test extras, and says
        so.
        """
        launcher = (ROOT / "p2p").read_text()
        self.assertRegex(launcher, r'pip install (-q )?-e "\$here\[test\]"')
        self.assertIn("./p2p", (ROOT / "README.md").read_text())
        installs = [i for i in self.instructions if "pip install" in i]
        self.assertEqual(len(installs), 1)
        self.assertRegex(installs[0], r"^RUN pip install \. ")
        self.assertIn("CI (.ci/run, through ./p2p) installs with: pip install -e '.[test]'", self.text)
        self.assertIn("pip install .", self.text)

    def test_context_leaves_out_local_state(self):
        ignored = (ROOT / ".dockerignore").read_text().split()
        for entry in (".git", ".venv", ".env", "**/dropin.cache"):
            self.assertIn(entry, ignored)
        self.assertNotIn("README.md", ignored, "setup.cfg reads README.md")
