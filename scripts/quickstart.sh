#!/usr/bin/env bash
# kubedrill's main job on a fresh Debian 12 / Ubuntu machine (as root, after scripts/setup.sh):
# the quickstart lab (1 control plane + 1 worker under libvirt), its kernels checked for Cilium's
# features, and a kube-proxy-free kubeadm cluster provisioned on it by `kubedrill apply`.
#
# Where Kubernetes comes from:
#   - a machine that reaches dl.k8s.io and pkgs.k8s.io: the official packages (bundle built with
#     `--kubernetes`), images pulled by the nodes from registry.k8s.io;
#   - otherwise (our own machines reach only the Go module proxy): kubelet, kubeadm, kubectl,
#     crictl, the control-plane binaries, etcd, pause and CoreDNS are built from their Go modules
#     by scripts/upstream-build.sh (tens of minutes the first time, cached after), laid out as a
#     Kubespray files_repo, and the bundle takes them from there with the images as tarballs.
# Cilium (the CNI) is the next step: until it is installed the nodes stay NotReady, so the apply
# here stops before the cilium/* and cluster/* phases. Re-running reuses what exists. Remove the
# lab with `kubedrill lab down quickstart`. Prints how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s); t=$T0; timings=""
stage() { local n; n=$(date +%s); timings+="  $1: $((n - t)) s"$'\n'; echo "quickstart: $1 done in $((n - t)) s"; t=$n; }

./scripts/lab-host-setup.sh --start
cargo build --release --locked
KD="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/kubedrill"
stage "kubedrill build"
"$KD" image build debian-12
stage "image build"
K8S=$(sed -n 's/^kubernetes_version: *"\{0,1\}\([0-9.]*\)"\{0,1\}.*/\1/p' labs/quickstart.yaml)
# As root kubedrill keeps state in /var/lib/kubedrill and images in /var/cache/kubedrill.
state="${KUBEDRILL_STATE_DIR:-/var/lib/kubedrill}"
cache="${KUBEDRILL_CACHE_DIR:-/var/cache/kubedrill}"
if ! apt-cache policy containerd 2>/dev/null | grep -q 'Candidate: [0-9]'; then apt-get update; fi
bundle="$cache/bundles/quickstart-$K8S-$(. /etc/os-release; echo "$VERSION_CODENAME")"
if [ ! -f "$bundle/bundle.json" ]; then
  if curl -fsS --max-time 10 -o /dev/null "https://pkgs.k8s.io/core:/stable:/v${K8S%.*}/deb/Release.key" 2>/dev/null; then
    echo "quickstart: pkgs.k8s.io answers: Kubernetes $K8S from the official packages"
    "$KD" bundle build -o "$bundle" --kubernetes "$K8S"
  else
    echo "quickstart: pkgs.k8s.io is not reachable: building Kubernetes $K8S from its Go modules"
    command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
    command -v go >/dev/null || { echo "quickstart: neither pkgs.k8s.io nor Go (to build from source) is available" >&2; exit 1; }
    ./scripts/upstream-build.sh --kubernetes "$K8S" --only kubernetes,etcd,crictl,pause,coredns
    up=$(./scripts/upstream-build.sh --print-dir)
    images=()
    while read -r ref; do
      case "$ref" in */kube-proxy:*) continue ;; esac   # its addon is skipped
      images+=(--image "$up/images/$(echo "${ref%:*}" | tr / _)_${ref##*:}.tar")
    done < <("$up/files/dl.k8s.io/release/v$K8S/bin/linux/amd64/kubeadm" config images list --kubernetes-version "v$K8S")
    crictl=$(find "$up/files/github.com/kubernetes-sigs/cri-tools/releases/download/" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
    "$KD" bundle build -o "$bundle" --kubernetes "$K8S" --files-repo "$up/files" --crictl "$crictl" "${images[@]}"
  fi
fi
stage "Kubernetes $K8S and the bundle"
inv="$state/labs/quickstart/inventory/hosts.yaml"
if [ ! -f "$state/labs/quickstart/state.json" ]; then
  "$KD" lab up quickstart
fi
stage "lab up"
"$KD" check -i "$inv" || true   # exit 3 only says some requested feature is blocked somewhere
stage "kernel check"
"$KD" apply -i "$inv" --bundle "$bundle" --skip-phases cilium,cluster
stage "apply (nodes, kubeadm init, join, kubeconfig)"
kubeconfig=$(find "$state/clusters" -name admin.conf -printf "%T@ %p\n" | sort -n | tail -n1 | cut -d" " -f2-)
kubectl=$(command -v kubectl || find "${KUBEDRILL_UPSTREAM_DIR:-$cache/upstream}/files/dl.k8s.io/release/v$K8S" -name kubectl 2>/dev/null | head -n1)
if [ -n "$kubectl" ] && [ -n "$kubeconfig" ]; then "$kubectl" --kubeconfig "$kubeconfig" get nodes -o wide; fi
echo "quickstart: a kube-proxy-free control plane and a joined worker on the quickstart lab in $(( $(date +%s) - T0 )) s:"
printf '%s' "$timings"
echo "quickstart: nodes stay NotReady until Cilium is installed. kubeconfig: ${kubeconfig:-$state/clusters/*/admin.conf}"
