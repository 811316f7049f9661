"""The deployment files, checked where no cluster exists.

Each kustomization is rendered with `kubectl kustomize`, every object is validated against the
Kubernetes API schemas (kubernetes-validate, offline), and the parts that must agree are held
together: the Deployment with the Dockerfile (ports, user, writable paths) and with the config
that the ConfigMap carries (port, default model, grace periods), which bertserve's own schema
must accept. tests/test_container.py builds and runs the image itself.
"""

from __future__ import annotations

import copy
import functools
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from containers import ROOT, Dockerfile

from bertserve.app.cli import _parser
from bertserve.app.config import ServerConfig, load_config
from bertserve.app.process_plan import plan_processes
from bertserve.observability.metrics import QUEUE_SEQUENCES
from bertserve.runtime.threads import share_cores

DEPLOY = ROOT / "deploy"
#: The oldest Kubernetes the manifests support (gRPC probes are GA from 1.27, the PDB's
#: unhealthyPodEvictionPolicy beta and on from 1.27) and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")
KUSTOMIZATIONS = ["overlays/cpu", "overlays/gpu", "examples"]
#: Seconds past drain_delay_s + grace_period_s for freeing the models and exiting.
EXIT_MARGIN_S = 5

Object = dict[str, Any]


@functools.cache
def _render(kustomization: str) -> list[Object]:
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize"]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build"]
    else:
        pytest.skip("neither kubectl nor kustomize is installed: the kustomizations cannot be rendered")
    out = subprocess.run(
        [*command, str(DEPLOY / "kustomize" / kustomization)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


class Rendered:
    """One rendered kustomization, with the parts the checks need."""

    def __init__(self, kustomization: str) -> None:
        self.name = kustomization
        self.objects = _render(kustomization)
        [self.deployment] = self.of_kind("Deployment")
        self.pod: Object = self.deployment["spec"]["template"]["spec"]
        [self.container] = self.pod["containers"]
        [self.configmap] = self.of_kind("ConfigMap")

    def of_kind(self, kind: str) -> list[Object]:
        return [o for o in self.objects if o["kind"] == kind]

    def env(self, name: str) -> Object | None:
        return next((e for e in self.container.get("env", []) if e["name"] == name), None)

    def volume(self, name: str) -> Object:
        return next(v for v in self.pod["volumes"] if v["name"] == name)

    @property
    def config_path(self) -> str:
        """Where the server reads its config: --config in the args, else BERTSERVE_CONFIG."""
        args = [*self.container.get("command", []), *self.container.get("args", [])]
        if "--config" in args:
            return str(args[args.index("--config") + 1])
        env = self.env("BERTSERVE_CONFIG")
        assert env is not None and "value" in env, "neither --config nor BERTSERVE_CONFIG names the config"
        return str(env["value"])

    @property
    def config_text(self) -> str:
        """The config.yaml that the mount at config_path shows the server."""
        mounts = [m for m in self.container["volumeMounts"] if _under(self.config_path, m["mountPath"])]
        assert mounts, f"nothing is mounted at {self.config_path}"
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        source = self.volume(mount["name"]).get("configMap")
        assert source is not None, f"{mount['mountPath']} is not a ConfigMap volume"
        assert source["name"] == self.configmap["metadata"]["name"], "the volume names another ConfigMap"
        if "subPath" in mount:
            assert mount["mountPath"] == self.config_path
            key = mount["subPath"]
        else:
            key = str(PurePosixPath(self.config_path).relative_to(mount["mountPath"]))
        assert key in self.configmap["data"], f"the ConfigMap has no {key!r}"
        return str(self.configmap["data"][key])

    @property
    def raw_config(self) -> Object:
        return dict(yaml.safe_load(self.config_text))

    def config(self, tmp_path: Path) -> ServerConfig:
        path = tmp_path / "config.yaml"
        path.write_text(self.config_text)
        return load_config(path, environ={})

    def port(self, name: str) -> int:
        [port] = [p["containerPort"] for p in self.container["ports"] if p["name"] == name]
        return int(port)


@pytest.fixture(params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param)


def _under(path: str, directory: str) -> bool:
    return PurePosixPath(path) == PurePosixPath(directory) or PurePosixPath(directory) in PurePosixPath(path).parents


def _schema_errors(obj: Object) -> list[str]:
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} ({version}): {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(e.message)
    return errors


def test_every_object_validates_against_the_kubernetes_schemas(rendered: Rendered) -> None:
    kinds = sorted(o["kind"] for o in rendered.objects)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", *["Service"] * 2]
    )
    assert [error for obj in rendered.objects for error in _schema_errors(obj)] == []


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    """Strict validation, so that a typo (which the API server would drop silently) fails here."""
    deployment = copy.deepcopy(Rendered("overlays/cpu").deployment)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert _schema_errors(deployment)


def test_the_config_passes_bertserves_own_schema(rendered: Rendered, tmp_path: Path) -> None:
    config = rendered.config(tmp_path)
    expected = "cuda" if rendered.name == "overlays/gpu" else "cpu"
    assert {spec.device for spec in config.models} == {expected}


def test_the_grpc_port_is_the_one_the_server_binds_the_image_exposes_and_the_probes_check(
    rendered: Rendered, tmp_path: Path
) -> None:
    config = rendered.config(tmp_path)
    grpc_port = rendered.port("grpc")
    assert grpc_port == config.port
    assert grpc_port in Dockerfile().exposed
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert rendered.container[probe]["grpc"]["port"] == grpc_port, probe
    assert rendered.port("metrics") == config.metrics_port
    assert config.metrics_port in Dockerfile().exposed


def test_the_probes_check_the_server_and_the_default_model(rendered: Rendered, tmp_path: Path) -> None:
    config = rendered.config(tmp_path)
    c = rendered.container
    # "" is SERVING while any model serves; the default model's own entry gates traffic.
    assert c["startupProbe"]["grpc"].get("service", "") == ""
    assert c["livenessProbe"]["grpc"].get("service", "") == ""
    readiness = c["readinessProbe"]["grpc"]["service"]
    assert readiness == config.default_model
    assert readiness in {spec.name for spec in config.models}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading takes minutes"


def test_termination_waits_for_the_drain_and_the_grace_period(rendered: Rendered) -> None:
    # From the file as written: the relation holds whatever bertserve's schema accepts today.
    server = rendered.raw_config["server"]
    assert server["drain_delay_s"] > 0, "endpoints and client balancers need the drain delay"
    needed = server["drain_delay_s"] + server["grace_period_s"] + EXIT_MARGIN_S
    assert rendered.pod["terminationGracePeriodSeconds"] >= needed
    assert "lifecycle" not in rendered.container, "the server delays its own stop: no preStop sleep"


def test_the_pod_runs_as_the_images_non_root_user(rendered: Rendered) -> None:
    uid, gid = Dockerfile().user
    pod_context, context = rendered.pod.get("securityContext", {}), rendered.container.get("securityContext", {})

    def effective(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    assert uid != 0
    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == uid
    assert effective("runAsGroup") == gid
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["readOnlyRootFilesystem"] is True


def test_every_path_the_server_writes_is_a_writable_volume(rendered: Rendered) -> None:
    image_env = Dockerfile().env
    env = {**image_env, **{e["name"]: e["value"] for e in rendered.container.get("env", []) if "value" in e}}
    written = {"/tmp", *(env[name] for name in ("HF_HOME", "XDG_CACHE_HOME", "HOME"))}
    writable = {
        m["mountPath"]
        for m in rendered.container["volumeMounts"]
        if not m.get("readOnly")
        and {"emptyDir", "ephemeral", "persistentVolumeClaim"} & set(rendered.volume(m["name"]))
    }
    assert {path for path in written if not any(_under(path, mount) for mount in writable)} == set()
    # The image declares the cache as a VOLUME too, so that docker and podman keep it off the image.
    assert any(_under(image_env["HF_HOME"], volume) for volume in Dockerfile().volumes)


def test_secrets_are_optional_references_and_none_is_committed(rendered: Rendered) -> None:
    assert rendered.of_kind("Secret") == []
    tokens = rendered.env("BERTSERVE_TOKENS")
    assert tokens is not None
    assert tokens["valueFrom"]["secretKeyRef"]["optional"] is True
    tls = [v["secret"] for v in rendered.pod["volumes"] if "secret" in v]
    assert tls and all(secret["optional"] is True for secret in tls)


def test_service_links_are_off(rendered: Rendered) -> None:
    """A Service named bertserve would set BERTSERVE_PORT=tcp://..., which the server reads as its port."""
    assert rendered.pod["enableServiceLinks"] is False


def test_services_reach_the_pods_grpc_and_metrics_ports(rendered: Rendered) -> None:
    services = {s["metadata"]["name"]: s["spec"] for s in rendered.of_kind("Service")}
    assert set(services) == {"bertserve", "bertserve-headless"}
    assert services["bertserve-headless"]["clusterIP"] == "None"
    assert services["bertserve"].get("type", "ClusterIP") == "ClusterIP"
    assert services["bertserve"].get("clusterIP") != "None"
    labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    for name, spec in services.items():
        assert spec["selector"].items() <= labels.items(), name
        ports = {p["name"]: p for p in spec["ports"]}
        assert ports["grpc"]["appProtocol"] == "grpc"
        for port in ("grpc", "metrics"):
            assert ports[port]["targetPort"] in (port, rendered.port(port)), (name, port)
    # Through the headless Service clients dial each pod's own address at the Service's port.
    headless = {p["name"]: p["port"] for p in services["bertserve-headless"]["ports"]}
    assert headless["grpc"] == rendered.port("grpc")


def test_the_disruption_budget_and_the_autoscaler_govern_the_deployment(rendered: Rendered) -> None:
    labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    [pdb] = rendered.of_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [hpa] = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", rendered.deployment["metadata"]["name"])
    assert "replicas" not in rendered.deployment["spec"], "the autoscaler owns the replica count"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    if rendered.name == "examples":
        name = metrics["Pods"]["pods"]["metric"]["name"]
        assert name == "bertserve_queue_sequences"
        assert [family.name for family in QUEUE_SEQUENCES.describe()] == [name]  # the gauge the server exports


def test_torch_threads_match_the_cpu_limit(rendered: Rendered, tmp_path: Path) -> None:
    """torch would start a thread per core of the node, not of the container: the threads of the
    CPU models' workers add up to the CPU limit, which bertserve reads as the cgroup's quota."""
    config = rendered.config(tmp_path)
    cpu = int(rendered.container["resources"]["limits"]["cpu"])
    plan = plan_processes(config.processes, config.engine, cpu)
    # One engine takes every core for its workers; whole servers split them.
    torch_processes = 1 if plan.engine else plan.processes
    shared = share_cores(config, cpu // torch_processes)
    on_cpu = [spec for spec in shared.models if spec.device == "cpu"]
    threads = max((spec.workers for spec in on_cpu), default=1) * shared.torch_threads
    assert threads * torch_processes == cpu, (shared.torch_threads, [(s.name, s.workers) for s in shared.models])
    assert rendered.container["resources"]["requests"]["cpu"] == str(cpu)


def test_the_gpu_overlay_asks_for_a_gpu_and_a_cuda_image() -> None:
    gpu, cpu = Rendered("overlays/gpu"), Rendered("overlays/cpu")
    assert gpu.container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu.container["resources"].get("limits", {})
    assert "cu" in gpu.container["image"].rsplit(":", 1)[1]
    assert "cpu" in cpu.container["image"].rsplit(":", 1)[1]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu.pod["tolerations"])
    assert gpu.pod["nodeSelector"]


def test_the_dockerfile_builds_as_documented() -> None:
    dockerfile = Dockerfile()
    stages = [rest.split() for rest in dockerfile.all("FROM")]
    named = {words[2] for words in stages if len(words) == 3 and words[1].upper() == "AS"}
    assert {words[0] for words in stages} - named == {"debian:bookworm-slim"}  # the only base image
    args = {rest.split("=")[0] for rest in dockerfile.all("ARG")}
    assert {"TORCH", "TORCH_INDEX_URL", "PIP_CERT", "PIP_FIND_LINKS"} <= args
    # Build-time settings of this or that machine must not stay in the image.
    assert not {"PIP_CERT", "PIP_FIND_LINKS"} & set(dockerfile.env)
    assert dockerfile.final("ENTRYPOINT") == ['["bertserve"]']
    [healthcheck] = dockerfile.final("HEALTHCHECK")
    command = shlex.split(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["bertserve", "health"]
    # Options the CLI takes (with the shell's ${...} filled in as the defaults would).
    _parser().parse_args(["127.0.0.1:50051" if "${" in arg else arg for arg in command[1:]])


def _kserve() -> dict[str, Object]:
    docs = [
        doc
        for path in sorted((DEPLOY / "kserve").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert sorted(by_kind) == ["ConfigMap", "InferenceService", "ServingRuntime"]
    return by_kind


def test_the_kserve_runtime_serves_grpc_as_the_deployment_does(tmp_path: Path) -> None:
    kserve = _kserve()
    runtime, service = kserve["ServingRuntime"], kserve["InferenceService"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert _schema_errors(kserve["ConfigMap"]) == []
    # KServe's pod parts are Kubernetes' own: validate them as a Pod would be.
    spec = runtime["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kserve-runtime"}, "spec": {}}
    pod["spec"] = {"containers": spec["containers"], "volumes": spec.get("volumes", [])}
    assert _schema_errors(pod) == []

    [container] = spec["containers"]
    config_path = container["args"][container["args"].index("--config") + 1]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == config_path]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == kserve["ConfigMap"]["metadata"]["name"]
    path = tmp_path / "config.yaml"
    path.write_text(kserve["ConfigMap"]["data"][mount["subPath"]])
    config = load_config(path, environ={})

    [h2c] = [p for p in container["ports"] if p["name"] == "h2c"]  # KServe's name for a gRPC port
    assert h2c["containerPort"] == config.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == config.port
    assert container["readinessProbe"]["grpc"]["service"] == config.default_model
    assert container["securityContext"]["runAsUser"] == Dockerfile().user[0]

    predictor = service["spec"]["predictor"]
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    assert predictor["model"]["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert predictor["terminationGracePeriodSeconds"] >= config.drain_delay_s + config.grace_period_s + EXIT_MARGIN_S
    assert predictor["enableServiceLinks"] is False
