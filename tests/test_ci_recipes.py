"""docs/ci.md's recipes and the GitHub Action (action.yml), run as written against a live
portal: a real server, a real worker and watcher, the local cluster.

The commands come out of docs/ci.md's code blocks marked ``<!-- test: NAME -->`` and out
of action.yml, so the documentation and the test cannot drift. What only a CI service
provides (its variables, the secret store) is set here the way that service sets it; the
CLI is installed by the recipes themselves, from this repository's cli/, offline.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from environments.access import tokens
from environments.kube import cluster
from environments.lifecycle.states import State
from environments.models import Environment
from tests.conftest import ROOT, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]

# A directory holding python3 (3.11, tomllib) and nothing of the portal: a CI image.
PYTHON_BIN = str(Path(getattr(sys, "_base_executable", sys.executable)).parent)
SHA_1 = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
SHA_2 = "2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"


def recipe(name: str) -> str:
    """The code block after ``<!-- test: name -->`` in docs/ci.md."""
    text = (ROOT / "docs" / "ci.md").read_text()
    match = re.search(rf"<!-- test: {re.escape(name)} -->\n```\w*\n(.*?)\n```", text, re.S)
    assert match, f"docs/ci.md has no code block marked for testing as {name!r}"
    return match.group(1)


@pytest.fixture
def portal(live_server, owner, team, sample_blueprints, worker):
    """The live portal and a team token with write scope (what a pipeline is given)."""
    _, plaintext = tokens.create_token(user=owner, name="ci", scope="write", days=1, team=team)
    return {"EPHEMERA_URL": live_server.url, "EPHEMERA_TOKEN": plaintext}


def run(
    command: list[str], workdir: Path, environ: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        cwd=workdir,
        env={
            "PATH": f"{PYTHON_BIN}:/usr/bin:/bin",
            "HOME": str(workdir),
            "PIP_NO_INDEX": "1",  # offline: the CLI needs nothing from an index
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **environ,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def the_environment(key: str) -> Environment:
    return Environment.objects.get(external_key=key)


def torn_down(environment: Environment) -> None:
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 180)
    assert not cluster.namespace_exists(environment.namespace)


# --- Pipelines with the CLI (any shell) --------------------------------------------------


def test_the_shell_recipe_creates_waits_for_and_tears_down(portal, tmp_path):
    cli = tmp_path / "cli-venv"
    run([sys.executable, "-m", "venv", str(cli)], tmp_path, {})
    installed = run([str(cli / "bin" / "pip"), "install", "-q", str(ROOT / "cli")], tmp_path, {})
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / "recipe.sh"
    script.write_text(recipe("shell"))
    result = run(
        ["bash", str(script)],
        tmp_path,
        {
            **portal,
            "PATH": f"{cli / 'bin'}:{PYTHON_BIN}:/usr/bin:/bin",
            "CI_REPOSITORY": "acme/shop",
            "CI_CHANGE_ID": "7",
            "CI_COMMIT": SHA_1[:8],
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    environment = the_environment("acme/shop#7")
    assert f"preview at {environment.urls['app']}" in result.stdout
    assert "tearing_down" in result.stdout
    torn_down(environment)


# --- GitLab CI ---------------------------------------------------------------------------


def _expand(value: str, environ: dict[str, str]) -> str:
    """GitLab's variable expansion ($NAME and ${NAME})."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: environ.get(m.group(1), ""), value)


def gitlab_job(
    pipeline: dict, job: str, workdir: Path, environ: dict[str, str], settings: dict[str, str]
):
    """Run one job's script the way a GitLab runner's bash does (set -eo pipefail;
    variables expanded, job variables over global ones, and the project's CI/CD
    variables, ``settings``, over both)."""
    spec = pipeline[job]
    variables = {**environ, **settings}
    for name, value in {**pipeline.get("variables", {}), **spec.get("variables", {})}.items():
        if name not in settings:
            variables[name] = _expand(str(value), variables)
    workdir.mkdir(exist_ok=True)
    script = workdir / f"{job}.sh"
    script.write_text("set -eo pipefail\n" + "\n".join(spec["script"]) + "\n")
    return run(["bash", str(script)], workdir, variables)


def test_the_gitlab_recipe_upserts_by_key_waits_and_stops_without_an_artifact(portal, tmp_path):
    pipeline = yaml.safe_load(recipe("gitlab"))
    assert "artifacts" not in pipeline["stop_review"]  # nothing handed between jobs
    # Settings -> CI/CD -> Variables; EPHEMERA_CLI: the same code as the docs' git URL,
    # offline (a project variable overrides the one in .gitlab-ci.yml).
    settings = {**portal, "EPHEMERA_CLI": str(ROOT / "cli")}
    merge_request = {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_PROJECT_PATH": "acme/shop",
        "CI_MERGE_REQUEST_IID": "12",
    }
    key = "acme/shop!12"

    first = gitlab_job(
        pipeline,
        "review",
        tmp_path / "job-1",
        {**merge_request, "CI_COMMIT_SHA": SHA_1, "CI_JOB_ID": "1001"},
        settings,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    environment = the_environment(key)
    assert environment.state == State.READY
    assert environment.parameters["head_sha"] == SHA_1
    review_env = (tmp_path / "job-1" / "review.env").read_text()
    assert review_env.strip() == f"REVIEW_URL={environment.urls['app']}"

    # A new push: a new pipeline and job; the same environment, updated to the new commit.
    second = gitlab_job(
        pipeline,
        "review",
        tmp_path / "job-2",
        {**merge_request, "CI_COMMIT_SHA": SHA_2, "CI_JOB_ID": "1002"},
        settings,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"Updated {environment.name}" in second.stderr  # --json: messages on stderr
    assert Environment.objects.count() == 1
    environment.refresh_from_db()
    assert environment.parameters["head_sha"] == SHA_2
    assert environment.state == State.READY  # it waited for the new commit to be ready

    # Merged: GitLab runs stop_review, a fresh job with no checkout and no artifact.
    stop = gitlab_job(pipeline, "stop_review", tmp_path / "stop", merge_request, settings)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    torn_down(environment)
    again = gitlab_job(pipeline, "stop_review", tmp_path / "stop-again", merge_request, settings)
    assert again.returncode == 0, again.stderr
    assert "Nothing to tear down" in again.stdout


# --- Jenkins -----------------------------------------------------------------------------


def jenkinsfile(text: str, environ: dict[str, str]) -> tuple[dict[str, str], list, list]:
    """The environment block (Groovy strings and ${env.X} interpolated, credentials()
    from ``environ``), and the sh scripts of the stages and of post, in order."""
    variables: dict[str, str] = {}
    block = text.split("environment {", 1)[1].split("}\n", 1)[0]
    for name, value in re.findall(r"^\s*(\w+) = (.+)$", block, re.M):
        if value.startswith("credentials("):
            variables[name] = environ[name]
        else:
            quoted = value[1:-1]
            variables[name] = re.sub(r"\$\{env\.(\w+)\}", lambda m: environ[m.group(1)], quoted)
    stages, post = text.split("\n  post {", 1)

    def scripts(part: str) -> list[str]:
        found = re.findall(r"sh '''\n(.*?)'''|sh '([^'\n]*)'", part, re.S)
        # Groovy joins a line ending in a backslash with the next one.
        return [(a or b).replace("\\\n", "") for a, b in found]

    return variables, scripts(stages), scripts(post)


def test_the_jenkins_recipe_runs_and_always_tears_down_by_key(portal, tmp_path):
    build = {
        **portal,
        "JOB_NAME": "shop/PR-5",
        "BUILD_NUMBER": "31",
        "GIT_COMMIT": SHA_1,
        "BUILD_TAG": "jenkins-shop-PR-5-31",
        "EXECUTOR_NUMBER": "0",
    }
    variables, stages, post = jenkinsfile(recipe("jenkins"), build)
    # The docs' example address and git URL: here the live portal and the same code offline.
    variables.update(EPHEMERA_URL=portal["EPHEMERA_URL"], EPHEMERA_CLI=str(ROOT / "cli"))
    assert len(stages) == 2 and len(post) == 1
    environ = {**build, **variables}
    for script in stages:  # Jenkins' sh: /bin/sh -xe
        result = run(["/bin/sh", "-xe", "-c", script], tmp_path, environ)
        assert result.returncode == 0, result.stdout + result.stderr
    environment = the_environment("shop/PR-5#31")
    assert environment.state == State.READY
    assert f"testing {environment.urls['app']}" in result.stdout
    cleanup = run(["/bin/sh", "-xe", "-c", post[0]], tmp_path, environ)
    assert cleanup.returncode == 0, cleanup.stderr
    torn_down(environment)


def test_the_jenkins_recipe_fails_the_stage_with_the_reason_and_still_cleans_up(portal, tmp_path):
    # A refusal (a bad commit hash) fails the stage with the portal's words, exit 4,
    # nothing hidden by a pipe; post's teardown then finds nothing and still succeeds.
    build = {**portal, "JOB_NAME": "shop", "BUILD_NUMBER": "32", "GIT_COMMIT": "not-a-sha"}
    variables, stages, post = jenkinsfile(recipe("jenkins"), build)
    # The docs' example address and git URL: here the live portal and the same code offline.
    variables.update(EPHEMERA_URL=portal["EPHEMERA_URL"], EPHEMERA_CLI=str(ROOT / "cli"))
    environ = {**build, **variables}
    result = run(["/bin/sh", "-xe", "-c", stages[0]], tmp_path, environ)
    assert result.returncode == 4, result.stderr
    assert "head_sha" in result.stderr and "HTTP 422" in result.stderr
    cleanup = run(["/bin/sh", "-xe", "-c", post[0]], tmp_path, environ)
    assert cleanup.returncode == 0, cleanup.stderr
    assert not Environment.objects.exists()


# --- The GitHub Action -------------------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class ActionRun:
    """action.yml's composite steps run as a script, the way the runner runs them: inputs
    with their defaults, `${{ }}` expressions in env and outputs, bash -eo pipefail,
    $GITHUB_OUTPUT. Anything else in action.yml fails the test (this runner does not
    know it, so the test would not be testing it)."""

    def __init__(self, workdir: Path, github: dict[str, str]):
        self.workdir = workdir
        self.github = github
        self.action = yaml.safe_load((ROOT / "action.yml").read_text())
        assert self.action["runs"]["using"] == "composite"

    def __call__(self, with_: dict[str, str]) -> tuple[int, dict[str, str], str]:
        inputs = {
            name: str(spec.get("default", "")) for name, spec in self.action["inputs"].items()
        }
        unknown = set(with_) - set(inputs)
        assert not unknown, f"the workflow passes inputs action.yml lacks: {unknown}"
        inputs.update({name: str(value).lower() if isinstance(value, bool) else str(value)
                       for name, value in with_.items()})  # fmt: skip
        steps: dict[str, dict[str, str]] = {}

        def evaluate(text: str) -> str:
            def one(match: re.Match) -> str:
                expression = match.group(1)
                if m := re.fullmatch(r"inputs\.([\w-]+)", expression):
                    return inputs[m.group(1)]
                if m := re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expression):
                    return steps.get(m.group(1), {}).get(m.group(2), "")
                raise AssertionError(f"this test's runner does not know ${{{{ {expression} }}}}")

            return EXPRESSION.sub(one, str(text))

        log = ""
        code = 0
        for number, step in enumerate(self.action["runs"]["steps"]):
            assert set(step) <= {"name", "id", "shell", "env", "run"}, step
            assert step["shell"] == "bash"
            assert "${{" not in step["run"], "inputs go through env, not into the script"
            output = self.workdir / f"output-{number}"
            output.write_text("")
            script = self.workdir / f"step-{number}.sh"
            script.write_text(step["run"])
            environ = {
                **self.github,
                "GITHUB_ACTION_PATH": str(ROOT),
                "GITHUB_OUTPUT": str(output),
                "RUNNER_TEMP": str(self.workdir),
                **{name: evaluate(value) for name, value in step.get("env", {}).items()},
            }
            result = run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                         self.workdir, environ)  # fmt: skip
            log += result.stdout + result.stderr
            if "id" in step:
                steps[step["id"]] = dict(
                    line.split("=", 1) for line in output.read_text().splitlines() if line
                )
            code = result.returncode
            if code:
                break
        outputs = {name: evaluate(spec["value"]) for name, spec in self.action["outputs"].items()}
        return code, outputs, log


def the_workflows_action_steps(token: str, url: str) -> list[dict]:
    """The `with:` of each step of docs/ci.md's workflow that uses the action, with the
    workflow's own expressions given values as GitHub would."""
    workflow = yaml.safe_load(recipe("github-action"))
    values = {
        "secrets.EPHEMERA_TOKEN": token,
        "github.event.pull_request.head.sha": SHA_1,
    }
    found = []
    for step in workflow["jobs"]["e2e"]["steps"]:
        if str(step.get("uses", "")).endswith("/ephemera@main"):
            with_ = {
                name: EXPRESSION.sub(lambda m: values[m.group(1)], str(value))
                if isinstance(value, str)
                else value
                for name, value in step["with"].items()
            }
            with_["url"] = url  # the docs' example address: here the live test portal
            found.append({"if": step.get("if"), "with": with_})
    return found


def test_the_github_action_creates_waits_outputs_urls_and_tears_down(portal, tmp_path):
    preview, teardown = the_workflows_action_steps(portal["EPHEMERA_TOKEN"], portal["EPHEMERA_URL"])
    assert preview["if"] is None and teardown["if"] == "always()"
    github = {
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_REF": "refs/pull/12/merge",
        "GITHUB_REF_NAME": "12/merge",
        "GITHUB_RUN_ID": "9876543210",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "e2e",
    }
    action = ActionRun(tmp_path, github)

    code, outputs, log = action(preview["with"])
    assert code == 0, log
    environment = the_environment("acme/shop#12")  # the pull request, by default
    assert environment.state == State.READY
    assert environment.parameters["head_sha"] == SHA_1
    assert int(environment.ttl.total_seconds()) == 2 * 3600
    assert outputs["environment-id"] == str(environment.pk)
    assert outputs["environment-name"] == environment.name
    assert outputs["state"] == "ready"
    assert outputs["url"] == environment.urls["app"]
    assert yaml.safe_load(outputs["urls"]) == environment.urls

    # The same step retried in the same run: the same idempotency key, nothing new.
    code, outputs, log = action(preview["with"])
    assert code == 0, log
    assert "replayed" in log
    assert Environment.objects.count() == 1
    assert outputs["environment-id"] == str(environment.pk)

    # The job's last step, `if: always()`, with teardown: true.
    code, _, log = action(teardown["with"])
    assert code == 0, log
    torn_down(environment)
    code, _, log = action(teardown["with"])  # again: nothing left, still fine
    assert code == 0, log
    assert "Nothing to tear down" in log


def test_the_github_action_fails_the_step_when_refused_and_says_why(portal, tmp_path):
    github = {"GITHUB_REPOSITORY": "acme/shop", "GITHUB_REF": "refs/heads/main",
              "GITHUB_REF_NAME": "main", "GITHUB_RUN_ID": "1", "GITHUB_RUN_ATTEMPT": "1",
              "GITHUB_JOB": "e2e"}  # fmt: skip
    action = ActionRun(tmp_path, github)
    code, outputs, log = action(
        {
            "url": portal["EPHEMERA_URL"],
            "token": portal["EPHEMERA_TOKEN"],
            "blueprint": "pr-preview",
            "parameters": "head_sha=NOT-A-SHA\n",
        }
    )
    assert code == 4, log
    assert "head_sha" in log and "ephemera up exited 4" in log
    assert outputs["environment-id"] == ""
    assert not Environment.objects.exists()


def test_no_recipe_hides_a_failure_or_tears_down_without_saying_what():
    # Issue 17: `curl -fsS` dropped the portal's message, `| tee` hid a refusal, and a
    # cleanup ran `ephemera down` with no argument.
    for path in (
        ROOT / "README.md",
        ROOT / "docs" / "ci.md",
        ROOT / "docs" / "api.md",
        ROOT / "action.yml",
    ):
        text = path.read_text()
        if path.suffix == ".md":  # the commands, not the prose that warns against these
            text = "\n".join(re.findall(r"^ *```\w*\n(.*?)^ *```", text, re.S | re.M))
        assert not re.search(r"curl -\w*f\w*", text), path
        assert "| tee" not in text, path
        for line in re.findall(r"ephemera\"? down(?!`)[^\n]*", text):
            assert re.search(r"down (--external-key \S+|[\"$a-z0-9])", line), (path, line)
