"""The ModelDeployment resource as pydantic models: the one description of the spec.

Three readers share it: ``scripts/gen-crd`` turns it into the CRD's OpenAPI schema (see
:mod:`ondeck.spec.crd`), the operator parses live objects with it, and ``ondeck run`` parses a
manifest file with it. Every field carries a ``description`` because it becomes ``kubectl explain``
text. Rules the schema alone cannot say (weights add up to 100, names refer to existing variants...)
live in :mod:`ondeck.spec.rules`, once, as a CEL expression and the same check in Python.

Field names are the manifest's camelCase names (aliases); Python code uses snake_case attributes.
Optional fields default to ``None`` exactly when the CRD has no default for them, so a rule that
asks "is it set?" (CEL ``has()``) sees the same thing on both sides.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

API_GROUP = "ondeck.io"
API_VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

MAX_VARIANTS = 8
MAX_STEPS = 32
MAX_TEMPLATES = 8
MAX_METRICS = 8
MAX_RULES = 16
# Objects are named <metadata.name>-<variant> (and <metadata.name>-router): both parts are bounded so
# that the result is a valid 63-character DNS label.
MAX_NAME = 40
MAX_VARIANT_NAME = 20

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
DURATION = r"^([0-9]+(ms|s|m|h|d))+$"
SHA256 = r"^[a-f0-9]{64}$"
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
QUANTITY = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([numkMGTPE]|[KMGTPE]i)?$"


class Spec(BaseModel):
    """Base of every part of the manifest: camelCase names, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _quantity(value: Any) -> Any:
    if isinstance(value, str) and not re.match(QUANTITY, value):
        raise ValueError(f"should match '{QUANTITY}'")
    return value


# A Kubernetes resource quantity (``100m``, ``256Mi``, ``2``): the schema form core resources use.
Quantity = Annotated[
    int | str,
    AfterValidator(_quantity),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": QUANTITY,
                    "x-kubernetes-int-or-string": True}),
]
Duration = Annotated[str, Field(pattern=DURATION, max_length=32)]


_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    """``5m`` -> 300.0; ``1h30m`` -> 5400.0 (the Duration pattern guarantees the form)."""
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in re.findall(r"([0-9]+)(ms|s|m|h|d)", duration)))


def _object_default(model: type[BaseModel], description: str) -> Any:
    """A sub-object that is always present, with its own defaults filled in.

    The CRD spells the whole default out (not ``{}``): the apiserver checks a default against the
    CEL rules without defaulting inside it first.
    """
    default = model().model_dump(by_alias=True, exclude_none=True, mode="json")
    return Field(default_factory=model, description=description, json_schema_extra={"default": default})


# --- model and variants -------------------------------------------------------------------------


class ModelRef(Spec):
    """Which model this deployment serves."""

    name: str | None = Field(None, max_length=63, pattern=LABEL_VALUE, description=(
        "Model name: the `model` metric label and the name clients use in /v2/models/<name>. "
        "Defaults to metadata.name."))


class Resources(Spec):
    """CPU and memory for each server pod, as in a container's resources."""

    requests: dict[str, Quantity] = Field(
        {"cpu": "100m", "memory": "256Mi"}, max_length=8,
        description="Minimum resources (e.g. cpu: 100m, memory: 256Mi). Autoscaling on CPU needs a cpu request.")
    limits: dict[str, Quantity] | None = Field(None, max_length=8, description="Maximum resources (e.g. memory: 1Gi).")


class Variant(Spec):
    """One version of the model, served by its own Deployment and Service (<name>-<variant>)."""

    name: str = Field(max_length=MAX_VARIANT_NAME, pattern=DNS_LABEL, description=(
        "Variant name, unique in this deployment (e.g. stable, canary): the `variant` metric label "
        "and part of the object names."))
    version: str = Field(max_length=63, pattern=LABEL_VALUE, description="Model version served (the `version` metric label).")
    uri: str = Field(max_length=2048, min_length=1, description=(
        "Where the model package is: file:///path (a directory in the image), "
        "pvc://<claim>/<path> (a PersistentVolumeClaim, mounted read-only) or "
        "http(s)://host/package.tar.gz (fetched by an init container; needs sha256)."))
    sha256: str | None = Field(None, pattern=SHA256, description=(
        "SHA-256 (hex) of the archive an http(s) uri points at; the download is refused if it differs."))
    replicas: int = Field(1, ge=0, le=100, description="Server pods for this variant (autoscaling.minReplicas wins when autoscaling is set).")
    resources: Resources = _object_default(Resources, "CPU and memory per server pod.")


# --- strategy -----------------------------------------------------------------------------------


class TemplateRef(Spec):
    """A reference to an analysis template: in spec.analysis.templates, or (clusterScope) a cluster-wide one."""

    template_name: str = Field(max_length=63, pattern=DNS_LABEL, description=(
        "Name of a template in spec.analysis.templates (with clusterScope: of a cluster-wide template)."))
    # No default (not false): objects stored before this field existed read back unchanged.
    cluster_scope: bool | None = Field(None, description=(
        "Look the template up among the cluster-wide templates the operator was given (--analysis-templates, "
        "the chart's defaultAnalysis) instead of spec.analysis.templates, like Argo Rollouts' "
        "ClusterAnalysisTemplate references. A missing one pauses the rollout with the reason. Default false."))


class AnalysisStep(Spec):
    """Run analysis templates; the rollout goes on only if they pass."""

    templates: list[TemplateRef] = Field(min_length=1, max_length=4, description="Templates to run.")


class Pause(Spec):
    """Wait: for a duration, or without one until a person runs `ondeck promote`."""

    duration: Duration | None = Field(None, description=(
        "How long to wait (e.g. 30s, 5m, 1h). Without a duration the rollout waits for `ondeck promote`."))


class CanaryStep(Spec):
    """One step of a canary: exactly one of setWeight, pause or analysis."""

    set_weight: int | None = Field(None, ge=0, le=100, description="Percent of traffic to send to the canary variant.")
    pause: Pause | None = Field(None, description="Wait for a duration, or (no duration) for a person's `ondeck promote`.")
    analysis: AnalysisStep | None = Field(None, description="Measure the canary against the stable variant.")


class BackgroundAnalysis(Spec):
    """Analysis that runs during the whole canary, from a given step on."""

    templates: list[TemplateRef] = Field(min_length=1, max_length=4, description="Templates to run.")
    starting_step: int = Field(0, ge=0, le=MAX_STEPS, description="Index of the step at which background analysis starts.")


class Canary(Spec):
    """Move traffic from the stable to the canary variant step by step (Argo Rollouts' steps)."""

    canary_variant: str = Field(max_length=MAX_VARIANT_NAME, description="The variant being rolled out (a name in spec.variants).")
    stable_variant: str | None = Field(None, max_length=MAX_VARIANT_NAME, description=(
        "The variant serving today (a name in spec.variants). Defaults to the first variant."))
    steps: list[CanaryStep] = Field(min_length=1, max_length=MAX_STEPS, description=(
        "The steps, in order: setWeight, pause, analysis. After the last step the canary is promoted."))
    analysis: BackgroundAnalysis | None = Field(None, description="Background analysis during the whole rollout.")


class HeaderRule(Spec):
    """Requests whose header matches go to one variant, whatever the weights."""

    header: str = Field(max_length=128, pattern=HEADER_NAME, description="HTTP header (gRPC metadata key) to look at.")
    exact: str | None = Field(None, max_length=256, description="Match when the header equals this value.")
    regex: str | None = Field(None, max_length=256, description="Match when the header matches this regular expression.")
    variant: str = Field(max_length=MAX_VARIANT_NAME, description="Variant that serves matching requests (a name in spec.variants).")


class Sticky(Spec):
    """Pin each user to one variant by a request key: exactly one of header or cookie."""

    header: str | None = Field(None, max_length=128, pattern=HEADER_NAME, description="Header carrying the user key (e.g. x-user-id).")
    cookie: str | None = Field(None, max_length=128, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", description="Cookie carrying the user key.")


class AbTest(Spec):
    """Split users between variants (spec.traffic.weights, even split by default) and compare them."""

    rules: list[HeaderRule] = Field([], max_length=MAX_RULES, description="Header rules, checked in order before the weights.")
    sticky: Sticky | None = Field(None, description="Keep a user on the same variant across requests.")
    success_metric: Literal["accuracy", "conversion"] = Field("accuracy", description=(
        "What decides the winner: accuracy (from feedback labels) or conversion (feedback reported as 0/1 outcomes)."))
    promote_winner: bool = Field(False, description="Send all traffic to the winner once the test is decided.")
    interval: Duration = Field("1m", description="Time between looks at the success metric (each look reads the window since the last).")
    min_samples: int = Field(100, ge=1, le=100_000_000, description="Trials (joined feedback items) per arm before a winner can be called.")
    equivalence: float | None = Field(None, gt=0, le=1, description=(
        "Also end the test when the difference in success rates is shown to lie within +-equivalence (absolute)."))


class PromoteOn(Spec):
    """When a shadow variant is good enough to take live traffic."""

    min_agreement: float = Field(0.98, ge=0, le=1, description="Fraction of compared requests where shadow and primary agree.")
    min_samples: int = Field(1000, ge=1, le=100_000_000, description=(
        "Mirrored requests (compared, or failed in the shadow) needed before deciding."))
    interval: Duration = Field("1m", description="Time between looks at the router's comparison counters.")


class Shadow(Spec):
    """Mirror a fraction of live requests to a variant whose answers are compared, never returned."""

    variant: str = Field(max_length=MAX_VARIANT_NAME, description="The shadow variant (a name in spec.variants, not the first one).")
    fraction: float = Field(0.1, gt=0, le=1, description="Fraction of requests mirrored to it.")
    promote_on: PromoteOn | None = Field(None, description="Promote the shadow to primary when it agrees this well.")


class Strategy(Spec):
    """How a new variant meets live traffic: at most one of canary, abTest or shadow."""

    canary: Canary | None = Field(None, description="Step-by-step canary with analysis and automatic rollback.")
    ab_test: AbTest | None = Field(None, alias="abTest", description="A/B test between variants.")
    shadow: Shadow | None = Field(None, description="Shadow traffic to a variant, compared with the primary.")


# --- analysis -----------------------------------------------------------------------------------


class Metric(Spec):
    """One measurement of the canary against the stable variant."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Metric name, unique in its template.")
    kind: Literal["errorRate", "latencyQuantile", "predictionDrift", "featureDrift", "accuracy"] = Field(description=(
        "errorRate: share of 5xx answers; latencyQuantile: a latency quantile; predictionDrift / featureDrift: "
        "canary's prediction / input distribution against the stable's; accuracy: live accuracy from feedback."))
    max_increase: float | None = Field(None, ge=0, le=1, description="errorRate: largest allowed increase over stable (absolute, e.g. 0.01).")
    quantile: float | None = Field(None, gt=0, lt=1, description="latencyQuantile: which quantile (default 0.99).")
    max_ratio: float | None = Field(None, ge=1, le=100, description="latencyQuantile: largest allowed canary/stable ratio (default 1.2).")
    min_effect: float | None = Field(None, gt=0, le=1, description="predictionDrift/featureDrift: smallest effect size that counts as drift (default 0.1).")
    max_decrease: float | None = Field(None, ge=0, le=1, description="accuracy: largest allowed drop below stable (absolute, e.g. 0.02).")


class AnalysisTemplate(Spec):
    """A named set of metrics measured every interval, count times."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Template name, referenced by steps' templateName.")
    interval: Duration = Field("1m", description="Time between measurements.")
    count: int = Field(5, ge=1, le=1000, description="Measurements per run.")
    failure_limit: int = Field(1, ge=0, le=1000, description="Failed measurements tolerated; one more aborts the rollout.")
    inconclusive_limit: int = Field(2, ge=0, le=1000, description="Inconclusive measurements tolerated; one more pauses the rollout for a person.")
    metrics: list[Metric] = Field(min_length=1, max_length=MAX_METRICS, description="What to measure.")


class Analysis(Spec):
    """Analysis templates that canary steps refer to by name."""

    templates: list[AnalysisTemplate] = Field(min_length=1, max_length=MAX_TEMPLATES, description="The templates.")


# --- traffic, monitoring, operations ------------------------------------------------------------


class GatewayRef(Spec):
    """The Gateway (Gateway API) or Istio Gateway that exposes the model."""

    name: str = Field(max_length=253, description="Gateway name.")
    namespace: str | None = Field(None, max_length=63, description="Gateway namespace (default: this namespace).")
    section_name: str | None = Field(None, max_length=253, description="Gateway API listener name (sectionName of the parentRef).")


class Traffic(Spec):
    """How requests reach the variants."""

    provider: Literal["router", "gatewayAPI", "istio"] = Field("router", description=(
        "router: ondeck's router Deployment splits traffic (always rendered; it also does header rules, "
        "sticky users and shadow comparison). gatewayAPI / istio: also render an HTTPRoute / VirtualService "
        "with the same weights, when that CRD is installed."))
    weights: dict[str, Annotated[int, Field(ge=0, le=100)]] | None = Field(None, min_length=1, max_length=MAX_VARIANTS, description=(
        "Percent of traffic per variant name; must add up to 100. Not allowed with strategy.canary "
        "(its steps set the weights). Default: everything to the first variant (abTest: an even split)."))
    host: str | None = Field(None, max_length=253, description="Host name clients use (HTTPRoute hostnames, VirtualService hosts).")
    gateway: GatewayRef | None = Field(None, description="Gateway to attach the route to (required for gatewayAPI).")
    router_replicas: int = Field(1, ge=0, le=100, description="Router pods.")


class DriftMonitoring(Spec):
    """Compare live inputs and predictions with the package's reference profile."""

    enabled: bool = Field(True, description="Check drift periodically.")
    interval: Duration = Field("5m", description="Time between checks.")
    min_effect: float = Field(0.1, gt=0, le=1, description="Smallest effect size reported as drift.")


class FeedbackMonitoring(Spec):
    """Join ground-truth labels posted later to the predictions they answer."""

    enabled: bool = Field(False, description="Accept feedback and compute live accuracy.")


class Staleness(Spec):
    """When the model is too old or too wrong and should be retrained."""

    accuracy_bar: float | None = Field(None, gt=0, le=1, description="Live accuracy below this means stale.")
    horizon: Duration | None = Field(None, description="Age (e.g. 30d) after which the model is stale whatever its accuracy.")


class Monitoring(Spec):
    """What to watch after deployment: drift, feedback, staleness."""

    drift: DriftMonitoring = _object_default(DriftMonitoring, "Input and prediction drift against the reference profile.")
    feedback: FeedbackMonitoring = _object_default(FeedbackMonitoring, "Ground-truth feedback and live accuracy.")
    staleness: Staleness | None = Field(None, description="Bars that mark the model stale.")


class SecretKeyRef(Spec):
    """A key in a Secret of this namespace."""

    name: str = Field(max_length=253, description="Secret name.")
    key: str = Field(max_length=253, description="Key in the Secret.")


class Webhook(Spec):
    """An HTTP endpoint called with the evidence when retraining is due."""

    url: str = Field(max_length=2048, pattern=r"^https?://", description="URL to POST the retrain request to.")
    secret_ref: SecretKeyRef | None = Field(None, description="Secret whose value signs the request (HMAC-SHA256 header).")


class Retrain(Spec):
    """What to do when drift or staleness says the model should be retrained."""

    webhook: Webhook = Field(description="Call this webhook.")


class Autoscaling(Spec):
    """A HorizontalPodAutoscaler per variant, on CPU."""

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest pods per variant.")
    max_replicas: int = Field(ge=1, le=1000, description="Most pods per variant.")
    target_cpu_utilization_percentage: int = Field(70, ge=1, le=100, alias="targetCPUUtilizationPercentage",
                                                   description="Average CPU use (percent of the request) to aim for.")


class PayloadLog(Spec):
    """Write sampled request/response pairs for later analysis."""

    sample_rate: float = Field(0.0, ge=0, le=1, description="Fraction of requests logged (0 turns it off).")


class Serving(Spec):
    """How each server batches and logs."""

    max_batch_size: int = Field(32, ge=1, le=4096, description="Most rows per model run (adaptive batching).")
    max_batch_delay_microseconds: int = Field(500, ge=0, le=1_000_000, description="Longest a request waits for a batch to fill.")
    payload_log: PayloadLog = _object_default(PayloadLog, "Sampled request/response log.")


class ModelDeploymentSpec(Spec):
    """A model served in variants, with a strategy for moving traffic between them."""

    model: ModelRef = _object_default(ModelRef, "The model served.")
    variants: list[Variant] = Field(min_length=1, max_length=MAX_VARIANTS, description=(
        "Versions of the model being served. The first is the stable one unless strategy.canary.stableVariant says otherwise."))
    strategy: Strategy | None = Field(None, description="How traffic moves to a new variant: canary, abTest or shadow.")
    analysis: Analysis | None = Field(None, description="Analysis templates used by canary steps.")
    traffic: Traffic = _object_default(Traffic, "Traffic provider and weights.")
    monitoring: Monitoring = _object_default(Monitoring, "Drift, feedback and staleness watching.")
    retrain: Retrain | None = Field(None, description="Retraining trigger.")
    autoscaling: Autoscaling | None = Field(None, description="Scale variants on CPU with a HorizontalPodAutoscaler.")
    serving: Serving = _object_default(Serving, "Batching and payload logging in the servers.")
    image: str | None = Field(None, max_length=512, description="ondeck image for servers and router (default: the operator's --image).")


# --- status -------------------------------------------------------------------------------------


class Condition(Spec):
    """A standard Kubernetes condition."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(max_length=63, description="Ready, Progressing, Degraded or DriftDetected.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", max_length=128, description="One CamelCase word saying why.")
    message: str = Field("", max_length=4096, description="What a person should know.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="metadata.generation the condition was computed for.")


class VariantStatus(Spec):
    """Pods of one variant."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(description="Variant name.")
    version: str = Field(description="Model version.")
    replicas: int = Field(0, description="Pods wanted.")
    ready_replicas: int = Field(0, description="Pods ready to serve.")


class ModelDeploymentStatus(Spec):
    """What the operator observed and did. Written by the operator only."""

    model_config = ConfigDict(extra="ignore")
    phase: Literal["Pending", "Progressing", "Healthy", "Degraded", "Paused", "Promoting", "RolledBack"] | None = Field(
        None, description="Summary: Pending, Progressing, Healthy, Degraded, Paused, Promoting or RolledBack.")
    message: str | None = Field(None, max_length=4096, description="Human-readable summary of the phase.")
    observed_generation: int | None = Field(None, description="metadata.generation the operator last reconciled.")
    stable_version: str | None = Field(None, description="Version of the stable variant.")
    canary_version: str | None = Field(None, description="Version of the canary (or shadow / B) variant, if any.")
    canary_weight: int | None = Field(None, description="Percent of traffic the canary variant receives now.")
    weights: dict[str, int] | None = Field(None, description="Router weights in effect, percent per variant.")
    current_step_index: int | None = Field(None, description="Index of the canary step in progress.")
    drift: Literal["True", "False", "Unknown"] | None = Field(None, description="Whether drift is detected now.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, Degraded (and DriftDetected).")
    variants: list[VariantStatus] = Field(default_factory=list, description="Ready pods per variant.")
    rollout: dict[str, Any] | None = Field(None, description=(
        "State of the canary rollout controller (step, weights, analysis runs); the operator renders weights from it."))
    analysis_runs: list[dict[str, Any]] | None = Field(None, description="Recent analysis runs with their measurements and evidence.")
    experiment: dict[str, Any] | None = Field(None, description=(
        "State of the A/B test or shadow controller (looks, evidence, winner, outcome); the operator renders weights from it."))
    monitoring: dict[str, Any] | None = Field(None, description=(
        "State of the drift and quality controller on the serving variant: drifting features and their "
        "evidence, live accuracy, staleness forecast, retrain requests and their delivery."))


class ObjectMeta(BaseModel):
    """The part of metadata ondeck reads (the rest passes through)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    generation: int | None = None


class ModelDeployment(BaseModel):
    """Serve a model in one or more variants, move traffic between them step by step, watch it, and roll back on its own."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_version: Literal["ondeck.io/v1alpha1"] = Field(alias="apiVersion", description="ondeck.io/v1alpha1")
    kind: Literal["ModelDeployment"] = Field(description="ModelDeployment")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="What to serve and how to move traffic.")
    status: ModelDeploymentStatus | None = Field(None, description="What the operator observed.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.metadata.name
