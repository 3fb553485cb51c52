"""The Dockerfile, checked without a Docker engine: it parses, its stages and ports are the
documented ones, every file it copies exists and is in the build context, its install step is
the README's, and its entrypoint starts the server (with its HEALTHCHECK passing) here."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import grpc
import pytest
from explainserve.cli.main import parser as cli_parser
from explainserve_client import Client
from ops_support import ServerProcess, plain_environment
from support import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"
KNOWN_INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE",
                      "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL", "VOLUME", "STOPSIGNAL",
                      "SHELL", "ONBUILD", "COMMENT"}


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    from dockerfile_parse import DockerfileParser
    with open(DOCKERFILE, "rb") as handle:
        return DockerfileParser(fileobj=handle).structure


def stages(instructions) -> dict[str, list[dict]]:
    """Instructions by stage name, in order."""
    result: dict[str, list[dict]] = {}
    current = None
    for item in instructions:
        if item["instruction"] == "FROM":
            current = item["value"].split(" AS ")[-1].strip()
            result[current] = []
        elif current is not None:
            result[current].append(item)
    return result


def only(items: list[dict], instruction: str) -> list[str]:
    return [item["value"] for item in items if item["instruction"] == instruction]


def exec_form(value: str) -> list[str]:
    """An instruction written in exec (JSON array) form; the shell form is not allowed here,
    because a shell as PID 1 would not pass SIGTERM on to the server."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(word, str) for word in parsed), value
    return parsed


def test_dockerfile_parses_into_cpu_and_gpu_variants_of_a_multistage_build(instructions):
    assert {item["instruction"] for item in instructions} <= KNOWN_INSTRUCTIONS
    by_stage = stages(instructions)
    assert list(by_stage)[-1] == "runtime"  # the default target is the runtime image
    assert {"builder", "torch-cpu", "torch-gpu", "runtime-cpu", "runtime-gpu"} <= set(by_stage)
    global_args = dict(arg.split("=", 1) for arg in only(instructions[:10], "ARG") if "=" in arg)
    assert global_args["VARIANT"] == "cpu"
    froms = only(instructions, "FROM")
    assert "torch-${VARIANT} AS builder" in froms and "runtime-${VARIANT} AS runtime" in froms
    indexes = {name: only(by_stage[f"torch-{name}"], "ENV") for name in ("cpu", "gpu")}
    assert "download.pytorch.org/whl/cpu" in indexes["cpu"][0]
    assert "pypi.org" in indexes["gpu"][0]  # PyPI's Linux torch wheels are the CUDA builds
    assert any("NVIDIA_VISIBLE_DEVICES" in env for env in only(by_stage["runtime-gpu"], "ENV"))


def test_runtime_image_holds_only_the_installed_environment_and_runs_unprivileged(instructions):
    runtime = stages(instructions)["runtime"]
    copies = only(runtime, "COPY") + only(runtime, "ADD")
    assert copies == ["--from=builder /opt/venv /opt/venv"]  # no sources, tests or tools
    user = only(runtime, "USER")[-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000  # numeric: runAsNonRoot can check it
    assert any("/opt/explainserve/demo" in run and "test -f" in run for run in only(runtime, "RUN"))


def test_ports_entrypoint_and_healthcheck_match_the_server(instructions):
    runtime = stages(instructions)["runtime"]
    entrypoint = exec_form(only(runtime, "ENTRYPOINT")[-1])
    assert entrypoint[:2] == ["explainserve", "serve"]
    args = cli_parser().parse_args(entrypoint[1:] + exec_form(only(runtime, "CMD")[-1]))
    assert args.host == "0.0.0.0"
    exposed = {int(port.split("/")[0]) for value in only(runtime, "EXPOSE") for port in value.split()}
    assert exposed == {args.port, args.metrics_port}
    healthcheck = only(runtime, "HEALTHCHECK")[-1]
    probe = exec_form(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert probe == ["python", "-m", "explainserve.cli.healthcheck"]
    env = runtime_env(runtime)
    assert env["EXPLAINSERVE_HEALTH_ADDRESS"] == f"127.0.0.1:{args.port}"


def runtime_env(runtime: list[dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in only(runtime, "ENV"):
        for word in shlex.split(value):
            key, _, item = word.partition("=")
            env[key] = item
    return env


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent
    folders decides; `!` re-includes; `**` spans folders."""
    parts = path.split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _glob_regex(pattern: str) -> re.Pattern:
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out, index = out + pattern[index:end + 1], end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def context_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_copied_file_exists_and_is_in_the_build_context(instructions):
    patterns = context_patterns()
    sources = []
    for value in only(instructions, "COPY") + only(instructions, "ADD"):
        words = [word for word in value.split() if not word.startswith("--")]
        if value.startswith("--from="):
            continue
        sources += words[:-1]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"
    # What the build needs arrives; what it must not carry stays out.
    needed = ["server/explainserve/models/demo/assets/demo.safetensors",
              "server/explainserve/models/demo/assets/demo_labels.txt",
              "server/explainserve/app.py", "client/explainserve_client/client.py",
              "client/pyproject.toml", "client/README.md"]
    for item in needed:
        assert (ROOT / item).is_file(), f"{item} is missing; the image needs it"
        assert not dockerignored(item, patterns), f"{item} is excluded from the build context"
    for item in ("tests/conftest.py", "deploy/base/deployment.yaml", ".git/HEAD", "benchmarks/x.py",
                 "server/explainserve/__pycache__/app.cpython-311.pyc", "Dockerfile"):
        assert dockerignored(item, patterns), f"{item} would be sent to the image build"


def pip_requirements(command: str) -> list[str]:
    """The requirements of one `pip install` command: editable flags and extras dropped,
    because the image installs the same packages non-editable and without test extras."""
    words = shlex.split(command[command.index("pip install") + len("pip install"):])
    requirements = []
    for word in words:
        if word in ("&&", "||", ";", "|"):  # the next command of a one-liner
            break
        if word.startswith("-"):
            continue
        requirements.append(re.sub(r"\[.*\]$", "", word).rstrip("/") or ".")
    return requirements


def test_install_step_is_the_one_the_readme_uses(instructions):
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing: the image build copies it (pyproject's readme)"
    readme_installs = [line for line in readme.read_text().splitlines()
                       if "pip install" in line and "./client" in line]
    assert readme_installs, "README.md shows no `pip install ... ./client ...` command"
    readme_requirements = pip_requirements(readme_installs[0].strip().strip("`"))
    image_requirements = [req for run in only(instructions, "RUN") if "pip install" in run
                          for req in pip_requirements(run)]
    assert sorted(image_requirements) == sorted(readme_requirements)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {req for req in image_requirements if "==" in req} <= set(pins)


def test_entrypoint_starts_the_server_and_its_healthcheck_passes(instructions, tmp_path):
    runtime = stages(instructions)["runtime"]
    port, metrics_port = free_port(), free_port()
    command = exec_form(only(runtime, "ENTRYPOINT")[-1]) + exec_form(only(runtime, "CMD")[-1])
    command += ["--port", str(port), "--metrics-port", str(metrics_port), "--device", "cpu"]
    image_env = {key: value for key, value in runtime_env(runtime).items()
                 if key not in ("PATH", "VIRTUAL_ENV", "HOME")}
    env = plain_environment(**{**image_env, "EXPLAINSERVE_HEALTH_ADDRESS": f"127.0.0.1:{port}"})
    with ServerProcess(command, f"127.0.0.1:{port}", env, tmp_path / "server.log") as server:
        server.wait_serving()
        healthcheck = exec_form(only(runtime, "HEALTHCHECK")[-1].split("CMD", 1)[1].strip())
        probe = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            assert [model.name for model in client.list_models()] == ["demo"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
            assert b"explainserve_requests_total" in page.read()
        server.terminate()
        assert server.wait(timeout=60) == 0, server.log()
        log = server.log()
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())  # JSON logs
    after = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
    assert after.returncode == 1 and grpc.StatusCode.UNAVAILABLE.name in after.stdout


def test_healthcheck_module_needs_no_torch():
    # The probe runs every few seconds: it must stay light.
    code = "import sys, explainserve.cli.healthcheck; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=plain_environment(), cwd=Path(ROOT), timeout=60)
    assert result.stdout.strip() == "False", result.stderr
