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

#: The image the repo's in-pod programs ship in (programs/Containerfile), built and pushed by
#: the release workflow and pinned here by tag.
PROGRAMS_IMAGE = "ghcr.io/fedobs/programs:0.1.0"
