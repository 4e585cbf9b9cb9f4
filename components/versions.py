"""Every pinned upstream version in one place (charts, images), matching ../shared/schemas."""

from __future__ import annotations

VAULT_CHART = "vault"
VAULT_CHART_VERSION = "0.34.1"
VAULT_CHART_REPO = "https://helm.releases.hashicorp.com"
VAULT_IMAGE = "hashicorp/vault"
VAULT_VERSION = "2.0.4"
VAULT_K8S_IMAGE = "hashicorp/vault-k8s"
VAULT_K8S_VERSION = "1.7.6"

VSO_CHART_VERSION = "1.4.1"
VSO_VERSION = "1.4.1"

CERT_MANAGER_CHART = "cert-manager"
CERT_MANAGER_VERSION = "v1.21.1"
CERT_MANAGER_REPO = "https://charts.jetstack.io"

#: Kyverno: chart 3.9.0 ships app v1.19.0 (both tags on commit ee97ce09538b09b6f1b03853cc41a62654d6a58f).
KYVERNO_CHART = "kyverno"
KYVERNO_CHART_VERSION = "3.9.0"
KYVERNO_CHART_REPO = "https://kyverno.github.io/kyverno/"
KYVERNO_VERSION = "v1.19.0"
#: The chart's own registries: reg.kyverno.io for the controllers, ghcr.io for its hook images.
KYVERNO_REGISTRY = "reg.kyverno.io"
KYVERNO_HOOK_REGISTRY = "ghcr.io"

#: Where the release workflow (.github/workflows/release.yml) pushes the image the in-pod programs ship
#: in (programs/Containerfile). Stacks run it by digest, from ``fedobs:programsImage``
#: (components/programs_image.py): a tag is mutable, so no tag of it is pinned here.
PROGRAMS_IMAGE_REPOSITORY = "ghcr.io/fedobs/programs"

#: The collector distribution built for Kubernetes (OTLP receiver/exporter, batch, memory_limiter,
#: health_check), pinned by tag.
OTEL_COLLECTOR_IMAGE = "otel/opentelemetry-collector-k8s"
OTEL_COLLECTOR_VERSION = "0.117.0"
