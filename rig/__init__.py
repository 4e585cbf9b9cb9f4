"""The rig: the local platform that makes the stacks' declarations real on this machine, without a
cloud, a cluster or the Pulumi service.

It runs real peers on loopback and stands in for what cannot run here: OpenBao clusters and dev
servers started from the stacks' own server HCL (``openbao``, ``vault_cluster``, ``raft_single``,
``tls_vault``), pods run as the kubelet would run them
(``pod_sandbox``, ``vault_pod``), the applier that replays recorded ``pulumi_vault`` resources with the provider's API
calls (``applier``), the Kubernetes API stand-in (``kube_api``), test CAs and cert-manager-style
issuance (``pki``, ``cert_manager_pki``), PostgreSQL and MariaDB (``databases``, ``local_hub``),
moto's S3 (``s3``), ``bao agent`` from injector annotations (``agent``), the hub-to-edge flow pieces
(``hub_edge``), schema validation (``schemas``), Kyverno's CEL evaluation (``kyverno_cel``) and the
policy pack driven as the engine drives it (``policy_runner``).

Layering (enforced by ``tests/unit/test_layering.py``): product (``components/``, ``programs/``,
``policy/``, ``config.py``, ``stack.py``, ``__main__.py``) <- offline tooling (``offline/``) <- rig
<- tests, ``demo/`` and ``bench/``. The rig may import the product and ``offline``; only the tests,
``demo`` and ``bench`` may import the rig; nothing here imports ``tests``, ``demo`` or ``bench``, and
nothing here needs pytest (pytest-only glue lives in ``tests/support/``).
"""
