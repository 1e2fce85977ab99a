"""The hardening and the network paths of the Kubernetes manifests, on what kustomize renders."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from dmp_kit.config import DEFAULT_PORTS
from dmp_stack import deployfiles
from dmp_stack.deployfiles import PROCESSES, SERVICES, Manifests

ROOT = deployfiles.repository_root()
SINGLE_REPLICA = "dmp.example.org/single-replica"
PORTS = {**DEFAULT_PORTS, "gateway": 8000}
# Who calls whom over gRPC (DESIGN.md §2; test_the_code_calls_only_declared_paths ties it to
# the code): the gateway calls every service; each service verifies tokens with identity.
CALLS = {
    "gateway": set(SERVICES),
    "identity": {"notify"},
    "dossier": {"consent", "identity", "audit", "messaging"},  # + a patient's export
    "consent": {"identity", "dossier"},
    "audit": {"identity"},
    "notify": {"identity"},
    "ingest": {"identity", "dossier"},
    "messaging": {"identity", "consent", "dossier", "ingest"},
    "agenda": {"identity", "consent", "dossier"},
}
PUBLIC_PATHS = {"/v1", "/docs", "/docs-assets", "/openapi.json", "/portail", "/"}


@pytest.fixture(scope="module", params=["base", *deployfiles.OVERLAYS])
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return deployfiles.render(deployfiles.kustomizations(ROOT)[request.param])


@pytest.fixture(scope="module")
def prod() -> Manifests:
    return deployfiles.render(deployfiles.kustomizations(ROOT)["prod"])


def labels(deployment: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return result


def selects(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return all(pod_labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_every_process_has_its_deployment_service_and_account(manifests: Manifests) -> None:
    names = {d["metadata"]["name"] for d in manifests.of_kind("Deployment")}
    assert names == set(PROCESSES)
    for name in PROCESSES:
        deployment = manifests.named("Deployment", name)
        service = manifests.named("Service", name)
        assert selects({"matchLabels": service["spec"]["selector"]}, labels(deployment))
        ports = {p["name"] for p in container(deployment)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert manifests.named("ServiceAccount", account)["automountServiceAccountToken"] is False


def test_every_container_is_hardened(manifests: Manifests) -> None:
    for deployment in manifests.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert "hostNetwork" not in pod and "hostPID" not in pod, name
        context = container(deployment)["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["privileged"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        # A read-only root filesystem: what is written goes to declared volumes.
        mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
        assert "/tmp" in mounts, name


def test_every_container_has_limits_and_probes(manifests: Manifests) -> None:
    for deployment in manifests.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        spec = container(deployment)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(spec["resources"][kind]), (name, kind)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in spec, (name, probe)
        if name == "gateway":
            assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
        else:
            # Native gRPC probes: liveness asks the `liveness` service (the process answers),
            # readiness the overall status (MongoDB and NATS answer too).
            port = PORTS[name]
            assert spec["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
            assert spec["readinessProbe"]["grpc"] == {"port": port}
            assert spec["startupProbe"]["grpc"]["service"] == "liveness"


def test_every_deployment_has_a_disruption_budget(manifests: Manifests) -> None:
    budgets = manifests.of_kind("PodDisruptionBudget")
    for deployment in manifests.of_kind("Deployment"):
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels(deployment))]
        assert len(covering) == 1, deployment["metadata"]["name"]
        # Never a budget that blocks every drain of a single replica.
        assert covering[0]["spec"].get("maxUnavailable") == 1


def test_every_deployment_scales_or_says_why_it_cannot(manifests: Manifests) -> None:
    autoscalers = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in manifests.of_kind("HorizontalPodAutoscaler")
    }
    for deployment in manifests.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        reason = deployment["metadata"].get("annotations", {}).get(SINGLE_REPLICA)
        if reason:
            assert name not in autoscalers, name
            assert deployment["spec"]["replicas"] == 1, name
            # Two never run at once, not even during a rollout.
            assert deployment["spec"]["strategy"]["type"] == "Recreate", name
        else:
            hpa = autoscalers[name]
            assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            # The autoscaler alone sets the count: a Deployment's own would undo it at each
            # apply.
            assert "replicas" not in deployment["spec"], name
    assert {n for n in PROCESSES if n not in autoscalers} == {"ingest"}


def test_everything_is_denied_unless_declared(manifests: Manifests) -> None:
    policies = manifests.of_kind("NetworkPolicy")
    default_deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(default_deny) == 1
    for deployment in manifests.of_kind("Deployment"):
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels(deployment))
        ]
        assert len(own) == 1, deployment["metadata"]["name"]
        assert set(own[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


Path3 = set[tuple[str, str, int]]


def declared_paths(manifests: Manifests) -> tuple[Path3, Path3]:
    """(from, to, port) between our pods: allowed out by the caller's policy, allowed in by
    the callee's."""
    pods = {d["metadata"]["name"]: labels(d) for d in manifests.of_kind("Deployment")}

    def peers(rule: dict[str, Any], key: str) -> set[tuple[str, int]]:
        """Our pods a rule names (not other namespaces), with its ports."""
        return {
            (name, port["port"])
            for peer in rule.get(key, [])
            if "podSelector" in peer and "namespaceSelector" not in peer
            for name, pod in pods.items()
            if selects(peer["podSelector"], pod)
            for port in rule["ports"]
        }

    egress: Path3 = set()
    ingress: Path3 = set()
    for policy in manifests.of_kind("NetworkPolicy"):
        if not policy["spec"]["podSelector"]:
            continue
        own = [n for n, pod in pods.items() if selects(policy["spec"]["podSelector"], pod)]
        for rule in policy["spec"].get("egress", []):
            egress |= {(me, to, port) for me in own for to, port in peers(rule, "to")}
        for rule in policy["spec"].get("ingress", []):
            ingress |= {(src, me, port) for me in own for src, port in peers(rule, "from")}
    return egress, ingress


def test_only_the_declared_calls_are_open_on_both_sides(manifests: Manifests) -> None:
    expected = {(src, dst, PORTS[dst]) for src, targets in CALLS.items() for dst in targets}
    egress, ingress = declared_paths(manifests)
    # Both sides declare each call: one without the other is a policy written by mistake.
    assert egress == expected
    assert ingress == expected


def test_services_reach_the_database_and_nats_and_the_gateway_does_not(
    manifests: Manifests,
) -> None:
    for name in PROCESSES:
        policy = manifests.named("NetworkPolicy", name)
        namespaces = {
            (peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], port["port"])
            for rule in policy["spec"]["egress"]
            for peer in rule.get("to", [])
            if "namespaceSelector" in peer
            for port in rule["ports"]
        }
        # Where the monitoring component is applied: spans to the collector in `monitoring`.
        traces = {("monitoring", 4318)} if manifests.of_kind("PodMonitor") else set()
        if name == "gateway":
            assert namespaces == traces
        else:
            assert namespaces == {("mongodb", 27017), ("nats", 4222)} | traces, name
        outside = [
            (peer, rule["ports"])
            for rule in policy["spec"]["ingress"]
            for peer in rule["from"]
            if "namespaceSelector" in peer
        ]
        # From outside the namespace: the ingress controller, only to the gateway's port; and
        # where the monitoring component is applied, Prometheus, only to the metrics port.
        scrape = [(namespace_peer("monitoring"), [{"protocol": "TCP", "port": metrics_port(name)}])]
        monitored = manifests.of_kind("PodMonitor") != []
        if name == "gateway":
            expected = [(namespace_peer("ingress-nginx"), [{"protocol": "TCP", "port": 8000}])]
        else:
            expected = []
        assert outside == expected + (scrape if monitored else []), name
    # Mail leaves from notify alone.
    for name in PROCESSES:
        open_ports = {
            port["port"]
            for rule in manifests.named("NetworkPolicy", name)["spec"]["egress"]
            if "to" not in rule
            for port in rule["ports"]
        }
        assert open_ports == ({25, 465, 587} if name == "notify" else set()), name


def namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def metrics_port(name: str) -> str:
    """The container port a process serves its metrics on (the gateway: its HTTP port)."""
    return "http" if name == "gateway" else "metrics"


def test_the_code_calls_only_declared_paths() -> None:
    """Every `settings.<service>_addr` a service opens a channel to is in CALLS."""
    for name in PROCESSES:
        package = ROOT / "services" / name / f"dmp_{name}"
        used = set()
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr.endswith("_addr"):
                    used.add(node.attr.removesuffix("_addr"))
        if name != "gateway":
            used.add("identity")  # the kit's runtime: the JWKS
        used.discard(name)
        assert used <= CALLS[name], (name, used - CALLS[name])
    gateway_clients = (ROOT / "services/gateway/dmp_gateway/clients.py").read_text()
    assert 'getattr(settings, f"{name}_addr")' in gateway_clients


def test_only_the_api_is_published_and_only_over_tls(manifests: Manifests) -> None:
    (ingress,) = manifests.of_kind("Ingress")
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
    assert all(tls["secretName"] for tls in ingress["spec"]["tls"])
    assert (
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"]
        == "true"
    )
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert {p["path"] for p in paths} == PUBLIC_PATHS
    assert {p["backend"]["service"]["name"] for p in paths} == {"gateway"}
    assert manifests.of_kind("Service")  # and no Service is exposed any other way
    for service in manifests.of_kind("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_the_namespace_enforces_the_restricted_pod_security_profile(manifests: Manifests) -> None:
    namespace = manifests.named("Namespace", "dmp")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace", "dmp") for o in manifests.objects} == {"dmp"}


def test_no_secret_is_committed_for_production(prod: Manifests) -> None:
    assert prod.of_kind("Secret") == []
    referenced = {
        ref["valueFrom"]["secretKeyRef"]["name"]
        for d in prod.of_kind("Deployment")
        for ref in container(d).get("env", [])
        if "secretKeyRef" in ref.get("valueFrom", {})
    }
    assert referenced == {"dmp-log-pseudonyms", *(f"dmp-{name}" for name in SERVICES)}


def test_generated_objects_are_in_the_platform_namespace() -> None:
    """The dev overlay's Secrets included: `kubectl apply -k` puts nothing in `default`."""
    for overlay in deployfiles.OVERLAYS:
        rendered = deployfiles.render(deployfiles.kustomizations(ROOT)[overlay])
        for obj in rendered.objects:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == "dmp", (overlay, obj["metadata"])


def test_the_ingress_needs_no_snippet(manifests: Manifests) -> None:
    """Current ingress-nginx refuses snippet annotations by default; HSTS comes from the
    gateway itself."""
    (ingress,) = manifests.of_kind("Ingress")
    assert not [a for a in ingress["metadata"].get("annotations", {}) if "snippet" in a]


def test_production_images_are_pinned_by_digest(prod: Manifests) -> None:
    for deployment in prod.of_kind("Deployment"):
        image = container(deployment)["image"]
        pinned = r"registry\.example\.org/dmp/[a-z]+(:[\w.-]+)?@sha256:[0-9a-f]{64}"
        assert re.fullmatch(pinned, image), image


def test_production_is_redundant_and_spread(prod: Manifests) -> None:
    for deployment in prod.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        spec = container(deployment)
        # Guaranteed memory: what is requested is the limit.
        assert spec["resources"]["requests"]["memory"] == spec["resources"]["limits"]["memory"]
        assert spec["image"].startswith("registry.example.org/dmp/")
        assert not spec["image"].endswith(":latest") and ":" in spec["image"]
        if SINGLE_REPLICA in deployment["metadata"].get("annotations", {}):
            continue
        assert "replicas" not in deployment["spec"], name  # its autoscaler's, at least 2
        pod = deployment["spec"]["template"]["spec"]
        (term,) = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert selects(term["podAffinityTerm"]["labelSelector"], labels(deployment))
        (spread,) = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    for hpa in prod.of_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] >= 2


def environment(manifests: Manifests) -> dict[str, str]:
    (config,) = [
        c
        for c in manifests.of_kind("ConfigMap")
        if c["metadata"]["name"].startswith("dmp-environment")
    ]
    data: dict[str, str] = config["data"]
    return data


def test_production_settings(prod: Manifests) -> None:
    env = environment(prod)
    assert env["DMP_ENV"] == "prod"
    assert env["DMP_NATS_STREAM_REPLICAS"] == "3"
    assert env["DMP_PUBLIC_BASE_URL"].startswith("https://")
    assert env["DMP_SMTP_STARTTLS"] == "true"


def test_the_external_examples_keep_the_durability_settings() -> None:
    import yaml

    nats = yaml.safe_load((ROOT / "deploy/k8s/external/nats-values.yaml").read_text())
    assert nats["config"]["cluster"]["replicas"] == 3
    assert nats["config"]["jetstream"]["merge"]["sync_interval"] == "always"
    mongo = yaml.safe_load((ROOT / "deploy/k8s/external/mongodb-community.yaml").read_text())
    assert mongo["spec"]["members"] == 3
    text = Path(ROOT / "deploy/k8s/external/mongodb-community.yaml").read_text()
    assert "w=majority" in text


def test_every_process_serves_its_metrics_on_a_named_port(manifests: Manifests) -> None:
    """A service's metrics port is its gRPC port + 1000 (DMP_METRICS_LISTEN's default); the
    gateway's is its HTTP port. The PodMonitors and NetworkPolicies name the port."""
    for name in PROCESSES:
        ports = {
            p["name"]: p["containerPort"]
            for p in container(manifests.named("Deployment", name))["ports"]
        }
        expected = PORTS[name] if name == "gateway" else PORTS[name] + 1000
        assert ports[metrics_port(name)] == expected, name
        service = {p["name"]: p for p in manifests.named("Service", name)["spec"]["ports"]}
        assert service[metrics_port(name)]["port"] == expected, name


def test_production_is_scraped_and_alerted_on(prod: Manifests) -> None:
    """Every process's pods are selected by exactly one PodMonitor, on its metrics port, with
    the job named after the process (the alerts and dashboards read job="<process>")."""
    monitors = prod.of_kind("PodMonitor")
    for deployment in prod.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        (monitor,) = [m for m in monitors if selects(m["spec"]["selector"], labels(deployment))]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == metrics_port(name), name
        assert endpoint["path"] == "/metrics"
        assert labels(deployment)[monitor["spec"]["jobLabel"]] == name
    for obj in [*monitors, *prod.of_kind("PrometheusRule")]:
        # What the operator's Prometheus selects them by (docs/observability.md).
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dmp"
    assert len(prod.of_kind("PrometheusRule")) == 1


def test_production_sends_traces_to_the_collector_only(prod: Manifests) -> None:
    """DMP_OTLP_ENDPOINT names the collector of the external example, whose pipeline is the
    compose stack's (identifying attributes dropped, memory capped); each process may reach it,
    its pods only, on 4318."""
    import yaml

    endpoint = environment(prod)["DMP_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector.monitoring.svc.cluster.local:4318"
    values = yaml.safe_load((ROOT / "deploy/k8s/external/otel-collector-values.yaml").read_text())
    assert values["fullnameOverride"] == "otel-collector"
    compose = yaml.safe_load((ROOT / "deploy/observability/otel-collector/config.yaml").read_text())
    pipelines = values["config"]["service"]["pipelines"]
    assert pipelines["traces"] == compose["service"]["pipelines"]["traces"]
    assert pipelines["logs"] is None and pipelines["metrics"] is None
    for kind in ("receivers", "processors", "exporters"):
        assert values["config"][kind] == compose[kind], kind
    for name in PROCESSES:
        rules = [
            rule
            for rule in prod.named("NetworkPolicy", name)["spec"]["egress"]
            if rule["ports"] == [{"protocol": "TCP", "port": 4318}]
        ]
        (rule,) = rules
        (peer,) = rule["to"]
        assert peer["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "opentelemetry-collector"
        }, name


def test_calls_spread_over_every_replica(manifests: Manifests) -> None:
    """gRPC keeps one HTTP/2 connection per channel: behind a ClusterIP every call of a caller
    would go to one pod. The services are headless and their callers resolve every pod
    (dns:/// with round_robin in dmp_kit.rpc.client)."""
    (platform,) = [
        c
        for c in manifests.of_kind("ConfigMap")
        if c["metadata"]["name"].startswith("dmp-platform")
    ]
    for name in PROCESSES:
        if name == "gateway":
            continue
        assert manifests.named("Service", name)["spec"]["clusterIP"] == "None", name
        assert platform["data"][f"DMP_{name.upper()}_ADDR"] == f"dns:///{name}:{PORTS[name]}"
