"""The files an operator deploys with, as they are, checked against Ray's and KubeRay's
own schemas and validators (no Ray cluster is started: `ray` below is a stub).

- cluster/serve_config.yaml: Serve's ServeDeploySchema, strictly, and DeployArgs;
- cluster/cluster.yaml: Ray's cluster-launcher prepare_config + validate_config;
- cluster/start-head.sh, cluster/start-worker.sh: run against a stub `ray`;
- cluster/rayservice.yaml: KubeRay v1.7.0's RayService CRD (tests/unit/schemas/) and
  the controller's own rules; its serveConfigV2 is serve_config.yaml;
- cluster/prometheus.yml: Ray's service-discovery file;
- cluster/o2o.env.example: the platform's settings.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from base64 import b64encode
from pathlib import Path
from types import FunctionType
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RAYSERVICE_SCHEMA = SCHEMAS / "kuberay-v1.7.0-rayservice-v1.schema.json"
ENV_FILE_ON_NODES = "/etc/o2o/o2o.env"

# What every node's `ray start` must have in its environment for Serve's HAProxy ingress.
REQUIRED_SWITCHES = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": "3600",
    "RAY_SERVE_HAPROXY_MAXCONN": "30000",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
}
O2O_HOSTS = {"o2o_hosts": 1}
METRICS_EXPORT_PORT = "8080"
SECRETS = ("O2O_JWT_SECRET", "O2O_PAYMENT_SECRET", "O2O_DATA_KEY")


def load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def serve_config() -> dict[str, Any]:
    return load("serve_config.yaml")


def rayservice() -> dict[str, Any]:
    return load("rayservice.yaml")


def cluster_yaml() -> dict[str, Any]:
    return load("cluster.yaml")


def the_app(config: dict[str, Any]) -> dict[str, Any]:
    (app,) = config["applications"]
    return app


def the_api(config: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = the_app(config)["deployments"]
    return deployment


def start_command(commands: list[str]) -> str:
    (command,) = [c for c in commands if "ray start" in c]
    return command


def switches_in_shell(text: str) -> dict[str, str]:
    """RAY_SERVE_* assignments in shell text, e.g. `export RAY_SERVE_X=1`."""
    found: dict[str, str] = {}
    for name, value in re.findall(r"\b(RAY_SERVE_[A-Z0-9_]+)=(\S+)", text):
        assert found.get(name, value) == value, f"{name} set twice, differently"
        found[name] = value
    return found


def switches_in_container(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("RAY_SERVE_")}


def ray_resources(value: str) -> dict[str, float]:
    """A `--resources` value as KubeRay and `ray start` read it: JSON, outer quotes off."""
    return json.loads(value.strip("'\"` "))


def containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def all_groups(service: dict[str, Any]) -> list[dict[str, Any]]:
    spec = service["spec"]["rayClusterConfig"]
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


# --- Serve config -------------------------------------------------------------------


def unknown_serve_keys(config: dict[str, Any]) -> list[str]:
    """Keys Serve would silently ignore: ServeDeploySchema and its parts accept unknown
    fields (for forward compatibility), so a misspelt option would simply not apply."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        DeploymentSchema,
        HTTPOptionsSchema,
        LoggingConfig,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    def extra(where: str, given: dict[str, Any], model: type[BaseModel]) -> list[str]:
        return [f"{where}.{key}" for key in given if key not in model.model_fields]

    bad = extra("", config, ServeDeploySchema)
    bad += extra("http_options", config.get("http_options", {}), HTTPOptionsSchema)
    bad += extra("logging_config", config.get("logging_config", {}), LoggingConfig)
    for app in config["applications"]:
        bad += extra(f"applications[{app['name']}]", app, ServeApplicationSchema)
        for deployment in app.get("deployments", []):
            where = f"applications[{app['name']}].deployments[{deployment['name']}]"
            bad += extra(where, deployment, DeploymentSchema)
            bad += extra(
                f"{where}.autoscaling_config",
                deployment.get("autoscaling_config", {}),
                AutoscalingConfig,
            )
    return bad


def check_serve_config(config: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    assert unknown_serve_keys(config) == []
    assert schema.proxy_location.value == "EveryNode"
    assert (schema.http_options.host, schema.http_options.port) == ("0.0.0.0", 8000)
    assert schema.logging_config is not None
    assert schema.logging_config.encoding == "JSON"
    (app,) = schema.applications
    assert (app.name, app.route_prefix) == ("o2o", "/")
    assert app.import_path == "serve_app.app:app_builder"


def test_serve_config_is_what_serve_deploy_takes() -> None:
    check_serve_config(serve_config())


def test_the_serve_config_check_catches_a_misspelt_option() -> None:
    config = serve_config()
    the_api(config)["autoscaling_config"]["max_replica"] = 4
    the_api(config)["max_ongoing_request"] = 5
    assert sorted(unknown_serve_keys(config)) == [
        "applications[o2o].deployments[api].autoscaling_config.max_replica",
        "applications[o2o].deployments[api].max_ongoing_request",
    ]


def test_the_api_autoscales_and_keeps_its_socket_slots() -> None:
    from ray.serve.config import AutoscalingConfig

    from storage.settings import Settings

    api = the_api(serve_config())
    assert api["name"] == "api"
    autoscaling = AutoscalingConfig(**api["autoscaling_config"])
    assert 1 <= autoscaling.min_replicas <= autoscaling.max_replicas
    assert autoscaling.max_replicas > autoscaling.min_replicas
    # The code's figure: an open WebSocket holds a slot.
    assert api["max_ongoing_requests"] == 20_000
    assert api["max_ongoing_requests"] == Settings.model_fields["api_max_ongoing_requests"].default
    # Otherwise Serve warns that autoscaling will never happen.
    assert autoscaling.get_target_ongoing_requests() <= api["max_ongoing_requests"]
    # A fixed count would fight the autoscaler; ray_actor_options here would replace
    # the code's whole (num_cpus 0).
    assert "num_replicas" not in api
    assert "ray_actor_options" not in api


def test_serve_config_args_are_deploy_args() -> None:
    args = the_app(serve_config())["args"]
    assert args["redis_url"].startswith("redis+cluster://")
    assert args["redis_wait_replicas"] == 1
    assert args["public_url"].startswith("https://")
    app_module = importlib.import_module("serve_app.app")
    deploy_args = app_module.DeployArgs
    parsed = deploy_args.model_validate(args)
    assert set(args) <= set(deploy_args.model_fields), "args DeployArgs does not know"
    assert parsed.redis_url == args["redis_url"]


def test_app_builder_takes_deploy_args_the_way_serve_reads_them() -> None:
    """Ray 2.60 (`serve/_private/api.py`, call_user_app_builder_with_args_if_necessary)
    looks at `inspect.signature(builder)` and converts `args` to the parameter's
    annotation only when that annotation is a pydantic class. A string annotation (as
    `from __future__ import annotations` makes every one) gets the raw dict instead."""
    app_module = importlib.import_module("serve_app.app")
    builder = app_module.app_builder
    assert isinstance(builder, FunctionType)
    (param,) = inspect.signature(builder).parameters.values()
    assert inspect.isclass(param.annotation) and issubclass(param.annotation, BaseModel), (
        f"Serve sees the annotation {param.annotation!r}, not a pydantic class, and would "
        "pass `args` to app_builder as a plain dict"
    )
    assert param.annotation is app_module.DeployArgs


# --- ray up ---------------------------------------------------------------------------


def validated_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does with the file before it touches a node
    (autoscaler/_private/commands.py, _bootstrap_config)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_ups_validator() -> None:
    config = cluster_yaml()
    prepared = validated_cluster_config(config)
    provider = prepared["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and len(provider["worker_ips"]) >= 1
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"])
    assert prepared["auth"]["ssh_user"]


def test_ray_ups_validator_is_strict() -> None:
    config = cluster_yaml()
    config["head_start_ray_command"] = config.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError):
        validated_cluster_config(config)


def test_cluster_yaml_installs_this_checkout() -> None:
    config = cluster_yaml()
    # `ray up cluster/cluster.yaml` runs from the checkout's root.
    assert config["file_mounts"] == {"~/o2o": "."}
    setup = "\n".join(config["setup_commands"])
    assert "python3.11 -m venv" in setup
    assert "pip install --quiet -e ~/o2o" in setup
    assert ENV_FILE_ON_NODES in setup
    # The deploy step the header describes needs the config at this path on the head.
    text = (CLUSTER / "cluster.yaml").read_text()
    assert "serve deploy ~/o2o/cluster/serve_config.yaml" in text
    assert (CLUSTER / "serve_config.yaml").is_file()


# --- start commands and scripts, run against a stub `ray` ------------------------------


def good_env_file(path: Path) -> Path:
    path.write_text(
        "O2O_JWT_SECRET=" + "j" * 48 + "\n"
        "O2O_PAYMENT_SECRET=" + "p" * 24 + "\n"
        "O2O_DATA_KEY=" + b64encode(bytes(range(32))).decode() + "\n"
        "O2O_DEV_MODE=false\n"
    )
    return path


def stub_environment(tmp_path: Path) -> dict[str, str]:
    """PATH whose first `ray` records its arguments and environment and does nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "ray"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['RAY_STUB_LOG'], 'w') as f:\n"
        "    json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, f)\n"
    )
    stub.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "RAY_STUB_LOG": str(tmp_path / "ray-call.json"),
        "ULIMIT_LOG": str(tmp_path / "ulimit.log"),
    }


# `ulimit -Sn 100000` may exceed this machine's hard limit: record it instead.
FAKE_ULIMIT = 'ulimit() { printf "%s\\n" "$*" >> "$ULIMIT_LOG"; }; export -f ulimit; '


def run_bash(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # Never the real one.
    assert shutil.which("ray", path=env["PATH"]) == str(Path(env["PATH"].split(":")[0]) / "ray")
    return subprocess.run(
        ["bash", "-c", FAKE_ULIMIT + script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ray_call(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    record = json.loads(Path(env["RAY_STUB_LOG"]).read_text())
    return record["argv"], record["env"]


def flag(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


def run_start(tmp_path: Path, how: str, extra_env: dict[str, str] | None = None) -> Any:
    env = stub_environment(tmp_path)
    env_file = good_env_file(tmp_path / "o2o.env")
    env.update(extra_env or {})
    if how in ("start-head.sh", "start-worker.sh"):
        env["O2O_ENV_FILE"] = str(env_file)
        args = ["10.0.0.10"] if how == "start-worker.sh" else []
        result = run_bash('exec "$0" "$@"', env, str(CLUSTER / how), *args)
    else:
        commands = cluster_yaml()[f"{how}_start_ray_commands"]
        command = start_command(commands)
        assert ENV_FILE_ON_NODES in command
        assert "/bin/ray" not in command, "the stub must be the `ray` that runs"
        env["RAY_HEAD_IP"] = "10.0.0.10"
        result = run_bash(command.replace(ENV_FILE_ON_NODES, str(env_file)), env)
    assert result.returncode == 0, result.stderr
    argv, ray_env = ray_call(env)
    ulimits = Path(env["ULIMIT_LOG"]).read_text().split()
    return argv, ray_env, ulimits


STARTS = ["start-head.sh", "start-worker.sh", "head", "worker"]


@pytest.mark.parametrize("how", STARTS)
def test_every_ray_start_has_the_switches_secrets_and_resources(tmp_path: Path, how: str) -> None:
    argv, env, ulimits = run_start(tmp_path, how)
    assert argv[0] == "start"
    head = how in ("start-head.sh", "head")
    if head:
        assert "--head" in argv
        assert flag(argv, "port") == "6379"
        # serve deploy / serve status talk to the dashboard on :8265.
        assert flag(argv, "dashboard-host") == "0.0.0.0"
        assert "--include-dashboard=false" not in argv
    else:
        assert flag(argv, "address") == "10.0.0.10:6379"
    if how == "head":
        assert flag(argv, "autoscaling-config") == "~/ray_bootstrap_config.yaml"
    assert flag(argv, "metrics-export-port") == METRICS_EXPORT_PORT
    assert ray_resources(flag(argv, "resources")) == O2O_HOSTS
    for name, value in REQUIRED_SWITCHES.items():
        assert env.get(name) == value, name
    # The env file reached `ray start`, so every actor and replica on the node.
    assert len(env["O2O_JWT_SECRET"]) == 48
    assert env["O2O_DEV_MODE"] == "false"
    assert ulimits == ["-Sn", "100000"]


@pytest.mark.parametrize("script", ["start-head.sh", "start-worker.sh"])
def test_an_api_only_node_leaves_o2o_hosts_out(tmp_path: Path, script: str) -> None:
    argv, _, _ = run_start(tmp_path, script, {"O2O_API_ONLY": "1"})
    assert ray_resources(flag(argv, "resources")) == {}


@pytest.mark.parametrize("script", ["start-head.sh", "start-worker.sh"])
def test_start_scripts_refuse_the_example_env_file_as_is(tmp_path: Path, script: str) -> None:
    env = stub_environment(tmp_path)
    env["O2O_ENV_FILE"] = str(CLUSTER / "o2o.env.example")
    result = run_bash('exec "$0" "$@"', env, str(CLUSTER / script), "10.0.0.10")
    assert result.returncode == 1
    assert "O2O_JWT_SECRET" in result.stderr
    assert not Path(env["RAY_STUB_LOG"]).exists(), "ray start ran without secrets"


def test_start_worker_needs_the_head(tmp_path: Path) -> None:
    env = stub_environment(tmp_path)
    env["O2O_ENV_FILE"] = str(good_env_file(tmp_path / "o2o.env"))
    result = run_bash('exec "$0" "$@"', env, str(CLUSTER / "start-worker.sh"))
    assert result.returncode == 2
    assert "usage" in result.stderr


@pytest.mark.parametrize("script", ["start-head.sh", "start-worker.sh"])
def test_start_scripts_parse_and_are_strict(script: str) -> None:
    path = CLUSTER / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "Usage" in text
    assert os.access(path, os.X_OK)


def every_switch_set() -> dict[str, dict[str, str]]:
    config = cluster_yaml()
    sets = {
        f"cluster.yaml {kind}": switches_in_shell(
            start_command(config[f"{kind}_start_ray_commands"])
        )
        for kind in ("head", "worker")
    }
    for script in ("start-head.sh", "start-worker.sh"):
        sets[script] = switches_in_shell((CLUSTER / script).read_text())
    for group in all_groups(rayservice()):
        for container in containers(group):
            sets[f"rayservice.yaml {container['name']}"] = switches_in_container(container)
    return sets


def test_every_node_gets_the_same_haproxy_switches() -> None:
    from ray.serve._private import constants

    sets = every_switch_set()
    assert len(sets) == 6
    reference = sets["start-head.sh"]
    for where, switches in sets.items():
        assert switches == reference, where
    for name, value in REQUIRED_SWITCHES.items():
        assert reference.get(name) == value, name
    # Only names Serve 2.60 reads.
    unknown = [name for name in reference if not hasattr(constants, name)]
    assert unknown == []


# --- KubeRay ---------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The CRD's schema with unknown fields refused, as `kubectl apply` refuses them by
    default (field validation Strict); the CRD alone would let the API server prune a
    misspelt field without a word. Objects that keep unknown fields keep them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_errors(document: dict[str, Any]) -> list[str]:
    schema = strict(json.loads(RAYSERVICE_SCHEMA.read_text()))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_rayservice_is_valid_for_kuberays_crd() -> None:
    service = rayservice()
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    assert crd_errors(service) == []


def test_the_crd_check_catches_a_misspelt_field() -> None:
    service = rayservice()
    cluster = service["spec"]["rayClusterConfig"]
    cluster["gcsFaultToleranceOption"] = cluster.pop("gcsFaultToleranceOptions")
    cluster["workerGroupSpecs"][0]["minReplicas"] = "2"
    errors = crd_errors(service)
    assert any("gcsFaultToleranceOption" in e for e in errors), errors
    assert any("minReplicas" in e for e in errors), errors


def test_rayservice_keeps_the_kuberay_controllers_rules() -> None:
    """What KubeRay v1.7.0 refuses beyond its CRD (controllers/ray/utils/validation.go)."""
    service = rayservice()
    name = service["metadata"]["name"]
    # ValidateRayServiceMetadata: a DNS-1035 label of at most 53 - 6 characters.
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == importlib.import_module("ray").__version__
    ft = cluster["gcsFaultToleranceOptions"]
    assert ft["redisAddress"]
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]
    # The annotation and gcsFaultToleranceOptions together are refused.
    assert "ray.io/ft-enabled" not in service["metadata"].get("annotations", {})
    head = cluster["headGroupSpec"]
    head_env = {e["name"] for e in containers(head)[0].get("env", [])}
    assert not head_env & {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS", "REDIS_USERNAME"}
    assert "redis-password" not in head["rayStartParams"]
    for group in all_groups(service):
        # Resources in rayStartParams or in the group's `resources`, not both.
        assert not ("resources" in group["rayStartParams"] and group.get("resources"))
        assert "labels" not in group["rayStartParams"]
        # Autoscaler v2: restartPolicy Never or unset.
        assert group["template"]["spec"].get("restartPolicy", "Never") == "Never"
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["version"] == "v2"


def test_rayservice_serves_what_serve_config_yaml_serves() -> None:
    carried = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    check_serve_config(carried)
    assert carried == serve_config()


def test_rayservice_nodes_declare_hosts_metrics_and_secrets() -> None:
    service = rayservice()
    head, *workers = all_groups(service)
    assert workers, "one worker group at least"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for group in all_groups(service):
        params = group["rayStartParams"]
        assert ray_resources(params["resources"]) == O2O_HOSTS
        assert params["metrics-export-port"] == METRICS_EXPORT_PORT
        for container in containers(group):
            assert {"secretRef": {"name": "o2o-secrets"}} in container["envFrom"]
            # Secrets come from the Secret only, never from the file.
            assert not {e["name"] for e in container.get("env", [])} & set(SECRETS)
            assert container["image"]


# --- the same Redis, no secrets in the files -------------------------------------------


def test_every_deployment_path_points_at_the_same_redis_cluster() -> None:
    url = the_app(serve_config())["args"]["redis_url"]
    assert (
        url == the_app(yaml.safe_load(rayservice()["spec"]["serveConfigV2"]))["args"]["redis_url"]
    )
    scheme, _, nodes = url.partition("://")
    assert scheme == "redis+cluster"
    hosts = nodes.split(",")
    assert len(hosts) >= 3
    assert all(re.fullmatch(r"[a-z0-9.-]+:\d+", h) for h in hosts), hosts
    # cluster.yaml's nodes run exactly serve_config.yaml: it is synced to ~/o2o.
    assert cluster_yaml()["file_mounts"]["~/o2o"] == "."


def test_no_secret_is_written_in_a_deploy_file() -> None:
    from storage import settings

    defaults = (settings.DEV_JWT_SECRET, settings.DEV_PAYMENT_SECRET, settings.DEV_DATA_KEY)
    for name in ("serve_config.yaml", "cluster.yaml", "rayservice.yaml", "o2o.env.example"):
        text = (CLUSTER / name).read_text()
        assert not any(d in text for d in defaults), name
        assert not re.search(r"^\s*(O2O_JWT_SECRET|O2O_PAYMENT_SECRET|O2O_DATA_KEY)=\S", text, re.M)


# --- the env file -----------------------------------------------------------------------


def env_names() -> set[str]:
    """Every environment variable storage.settings.Settings reads."""
    from storage.settings import Settings

    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            names.update(str(choice).upper() for choice in alias.choices)
        else:
            names.add(f"O2O_{field_name.upper()}")
    return names


def test_env_example_is_plain_and_names_real_settings() -> None:
    lines = (CLUSTER / "o2o.env.example").read_text().splitlines()
    given = [line for line in lines if line and not line.startswith("#")]
    suggested = [line[2:] for line in lines if re.match(r"# [A-Z0-9_]+=", line)]
    known = env_names()
    for line in given + suggested:
        # Readable alike by `. file` and `kubectl create secret --from-env-file`.
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[^\s'\"]*", line), line
        assert line.split("=", 1)[0] in known, line
    keys = [line.split("=", 1)[0] for line in given]
    assert set(SECRETS) <= set(keys)
    assert len(keys) == len(set(keys))


def test_env_example_is_refused_until_its_secrets_are_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.settings import Settings, UnsafeSettings

    for name in list(os.environ):
        if name.startswith("O2O_") or name in ("REDIS_URL", "RAY_ADDRESS"):
            monkeypatch.delenv(name)
    # As app_builder makes its settings: the node's environment, the config's args over it.
    args = the_app(serve_config())["args"]
    example = CLUSTER / "o2o.env.example"
    with pytest.raises(UnsafeSettings) as refused:
        Settings(_env_file=example, **args).refuse_unsafe()
    assert all(name in str(refused.value) for name in SECRETS)

    filled = good_env_file(tmp_path / "o2o.env")
    settings = Settings(_env_file=filled, **args)
    settings.refuse_unsafe()
    assert settings.dev_mode is False
    assert settings.redis_wait_replicas == 1


# --- Prometheus -------------------------------------------------------------------------


def prometheus_replace(replacement: str) -> str:
    return re.sub(r"\$\{(\d+)\}", r"\\\1", replacement)


def relabel(address: str, rules: list[dict[str, Any]]) -> str | None:
    """Prometheus' relabelling of __address__ for the actions used here (regexes are
    anchored at both ends)."""
    for rule in rules:
        assert rule["source_labels"] == ["__address__"]
        match = re.fullmatch(rule["regex"], address)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            assert rule["target_label"] == "__address__"
            if match:
                address = match.expand(prometheus_replace(rule["replacement"]))
        else:
            raise AssertionError(f"unexpected action {action}")
    return address


def test_prometheus_reads_rays_service_discovery_file() -> None:
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE
    from ray.dashboard.consts import PROMETHEUS_CONFIG_INPUT_PATH

    config = load("prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"
    # Ray's own Prometheus config names the same file.
    shipped = yaml.safe_load(Path(PROMETHEUS_CONFIG_INPUT_PATH).read_text())
    assert shipped["scrape_configs"][0]["file_sd_configs"][0]["files"] == [expected]
    for name in ("ray", "haproxy"):
        assert jobs[name]["file_sd_configs"] == [{"files": [expected]}], name


def test_prometheus_scrapes_haproxy_on_every_node() -> None:
    config = load("prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "haproxy"]
    port = switches_in_shell((CLUSTER / "start-head.sh").read_text())[
        "RAY_SERVE_HAPROXY_METRICS_PORT"
    ]
    # What Ray lists: each node's metrics agent, and on the head the autoscaler's and
    # the dashboard's own metrics ports.
    listed = [
        f"10.0.0.10:{METRICS_EXPORT_PORT}",
        "10.0.0.10:44217",
        "10.0.0.10:44227",
        f"10.0.0.11:{METRICS_EXPORT_PORT}",
    ]
    scraped = [relabel(a, job["relabel_configs"]) for a in listed]
    assert [a for a in scraped if a] == [f"10.0.0.10:{port}", f"10.0.0.11:{port}"]
    assert job["metrics_path"] == "/metrics"
