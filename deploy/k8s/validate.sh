#!/usr/bin/env bash
# Validates the manifests against the Kubernetes OpenAPI schemas with
# kubernetes-validate (PyPI, pinned; installed into .venv/k8s-validate on
# first use), strictly (unknown fields are errors), for the oldest and the
# newest Kubernetes this deployment targets. The GPU overlay is rendered
# first (its patch merged into the base Deployment, as kustomize would for
# these fields) and validated as a whole.
#   bash deploy/k8s/validate.sh        (or: make k8s-validate)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
pin="kubernetes-validate==1.37.0"
venv=${WHISPER_NODE_K8S_VALIDATE:-$root/.venv/k8s-validate}
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pin" ]; then
    rm -rf "$venv"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input \
        --target "$venv" "$pin"
    echo "$pin" >"$venv/.pins"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PYTHONPATH=$venv python3 - "$here" "$tmp/gpu-deployment.yaml" <<'PY'
import sys, yaml
here, out = sys.argv[1], sys.argv[2]
base = yaml.safe_load(open(f"{here}/deployment.yaml"))
patch = yaml.safe_load(open(f"{here}/gpu/gpu-patch.yaml"))
pspec, bspec = patch["spec"]["template"]["spec"], base["spec"]["template"]["spec"]
for pc in pspec["containers"]:
    bc = next(c for c in bspec["containers"] if c["name"] == pc["name"])
    bc["args"] = pc["args"]
    bc.setdefault("resources", {}).setdefault("limits", {}).update(pc["resources"]["limits"])
bspec["tolerations"] = pspec["tolerations"]
yaml.safe_dump(base, open(out, "w"))
PY
for k in 1.30.0 1.37.0; do
    PYTHONPATH=$venv python3 -m kubernetes_validate --strict --quiet -k "$k" \
        "$here/deployment.yaml" "$here/service.yaml" "$here/pdb.yaml" "$here/hpa.yaml" \
        "$here/prometheus-adapter-rules.yaml" "$tmp/gpu-deployment.yaml"
done
echo "k8s-validate: ok (deployment, gpu overlay, service, pdb, hpa, adapter rules; Kubernetes 1.30 and 1.37)"
