#!/usr/bin/env bash
# The real thing, end to end: Kubernetes built from its Go modules, a 2-VM lab (control plane +
# worker, real TCG guests), and `kubedrill apply` bringing up a kube-proxy-free kubeadm cluster
# on it, then checked from the outside. Exits non-zero on the first failure.
#
#   scripts/cluster-e2e.sh [--keep]     run it (root; after scripts/setup.sh)
#   scripts/cluster-e2e.sh --down NETNS remove what a --keep run left
#
# The upstream builds run in the host namespace; the lab, its private libvirtd and everything that
# talks to the VMs run inside a network namespace made here, so guest addresses exist only there.
# What it proves, in order:
#   1. bundle: kubelet/kubeadm/kubectl/crictl taken as binaries from a local files repository
#      (Kubespray's files_repo layout, filled by scripts/upstream-build.sh); of the images
#      `kubeadm config images list` names, pause and etcd travel as OCI tarballs imported into
#      containerd, and the API server, controller manager, scheduler and CoreDNS are pulled by
#      the nodes through a registry mirror: Debian's docker-registry, started here on the lab
#      network, named in Kubespray's containerd_registries_mirrors (containerd's hosts.toml);
#   2. apply, killed by PID while kubeadm/init runs, then run again: it resumes and completes
#      (init with the kube-proxy addon skipped, the worker joined, the kubeconfig fetched 0600);
#   3. the cluster: both nodes registered at the built version (NotReady: no CNI until Cilium),
#      the control-plane pods running, no kube-proxy DaemonSet or ConfigMap, no KUBE-SVC /
#      KUBE-SERVICES iptables chains on any node;
#   4. a re-run changes nothing; `kubedrill reset` of the worker runs the real `kubeadm reset`,
#      and the next apply joins it again;
#   5. no bootstrap token secret in the terminal output, the journal, or any file of the state
#      directory that is not 0600.
# With --keep the lab stays up and the last three lines are netns=…, kubeconfig=…, inventory=….
# Stage timings go to $WORK/timings.tsv and are printed at the end.
#
# Environment: KUBEDRILL_E2E_KUBERNETES (default 1.34.4), KUBEDRILL_UPSTREAM_DIR (see
# scripts/upstream-build.sh), KUBEDRILL_CACHE_DIR (images; default /var/cache/kubedrill).
set -euo pipefail
cd "$(dirname "$0")/.."
E2E_ROOT=/var/lib/kubedrill-e2e

die() { echo "cluster-e2e: FAIL: $*" >&2; exit 1; }
say() { echo "cluster-e2e: $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespace, libvirtd)"

# --down NETNS: everything a --keep run made, found through its saved environment.
if [ "${1:-}" = --down ]; then
  ns="${2:?usage: scripts/cluster-e2e.sh --down NETNS}"
  envf=$(grep -lx "NS=$ns" "$E2E_ROOT"/*/e2e.env 2>/dev/null | head -n1)
  [ -n "$envf" ] || die "no run recorded for netns $ns under $E2E_ROOT"
  # Exported: kubedrill finds the lab through KUBEDRILL_STATE_DIR.
  set -a
  # shellcheck disable=SC1090
  . "$envf"
  set +a
  # shellcheck source=scripts/lib/lab-netns.sh
  . scripts/lib/lab-netns.sh
  ip netns exec "$NS" "$KD" lab down "$LAB_NAME" || die "lab down failed: the netns $NS and $WORK are left for a retry"
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null
  lab_netns_stop
  rm -rf "$WORK"
  say "removed netns $NS, its libvirtd, the lab and $WORK"
  exit 0
fi
KEEP=0
[ "${1:-}" = --keep ] && KEEP=1

K8S="${KUBEDRILL_E2E_KUBERNETES:-1.34.4}"
export KUBEDRILL_CACHE_DIR="${KUBEDRILL_CACHE_DIR:-/var/cache/kubedrill}"
T0=$(date +%s)
stage_start=$T0
TIMINGS=""
stage() { # NAME: record the time since the previous stage under NAME
  local now; now=$(date +%s)
  TIMINGS+="$1	$((now - stage_start))"$'\n'
  say "$1: $((now - stage_start)) s"
  stage_start=$now
}

# 1. Upstream builds (cached by recipe hash) and kubedrill itself.
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || die "Go is needed to build Kubernetes from its modules (install Go 1.26)"
./scripts/upstream-build.sh --kubernetes "$K8S" --only kubernetes,etcd,crictl,pause,coredns
UP=$(./scripts/upstream-build.sh --print-dir)
BIN="$UP/files/dl.k8s.io/release/v$K8S/bin/linux/amd64"
[ -x "$BIN/kubeadm" ] || die "$BIN/kubeadm is missing after scripts/upstream-build.sh"
stage "upstream build"
cargo build --release --locked
stage "kubedrill build"

mkdir -p "$E2E_ROOT"
WORK="$E2E_ROOT/run$$"
mkdir -p "$WORK/logs"
# QEMU runs as libvirt-qemu: it needs search permission on the way to the lab's overlays.
chmod 0711 "$E2E_ROOT" "$WORK"
cp "${CARGO_TARGET_DIR:-target}/release/kubedrill" "$WORK/kubedrill"
KD="$WORK/kubedrill"
KUBECTL="$BIN/kubectl"
export KUBEDRILL_STATE_DIR="$WORK/state"
LAB_NAME=kde2e
"$KD" image build debian-12
stage "image"

# shellcheck source=scripts/lib/lab-netns.sh
. scripts/lib/lab-netns.sh
cleanup() {
  local rc=$?
  set +e
  if [ "$KEEP" = 1 ] && [ "$rc" = 0 ]; then return; fi
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null
  [ "$rc" = 0 ] || say "failed; logs were in $WORK/logs (removed now; use --keep to keep a passing run)"
  [ "$rc" = 0 ] || tail -n 40 "$WORK"/logs/*.log 2>/dev/null >&2
  ip netns exec "$NS" "$KD" lab down "$LAB_NAME" >/dev/null 2>&1
  lab_netns_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
lab_netns_start "$WORK"
cat > "$WORK/e2e.env" <<ENV
NS=$NS
WORK=$WORK
RUN=$RUN
KD=$KD
LAB_NAME=$LAB_NAME
KUBEDRILL_STATE_DIR=$KUBEDRILL_STATE_DIR
KUBEDRILL_CACHE_DIR=$KUBEDRILL_CACHE_DIR
ENV
in_ns() { ip netns exec "$NS" "$@"; }

# 2. The bundle: node packages from this machine's apt sources, Kubernetes from the files
#    repository, pause and etcd as image tarballs; the other images kubeadm will ask containerd
#    for go to the registry mirror (kube-proxy's aside: its addon is skipped).
if ! apt-cache policy containerd 2>/dev/null | grep -q 'Candidate: [0-9]'; then apt-get update; fi
for tool in docker-registry skopeo; do
  command -v "$tool" >/dev/null || RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tool" >/dev/null
done
images=(); mirrored=()
while read -r ref; do
  case "$ref" in */kube-proxy:*) continue ;; esac
  f="$UP/images/$(echo "${ref%:*}" | tr / _)_${ref##*:}.tar"
  [ -f "$f" ] || die "image $ref: no $f (scripts/upstream-build.sh builds it)"
  case "$ref" in
    */pause:*|*/etcd:*) images+=(--image "$f") ;;
    *) mirrored+=("$ref=$f") ;;
  esac
done < <("$BIN/kubeadm" config images list --kubernetes-version "v$K8S")
crictl_v=$(find "$UP/files/github.com/kubernetes-sigs/cri-tools/releases/download/" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
"$KD" bundle build -o "$WORK/bundle" --kubernetes "$K8S" --files-repo "$UP/files" \
  --crictl "$crictl_v" "${images[@]}" 2>&1 | tee "$WORK/logs/bundle.log"
stage "bundle"

# 3. The lab.
sed -e "s|^hypervisor:.*|hypervisor: \"$URI\"|" -e "s|^kubernetes_version:.*|kubernetes_version: \"$K8S\"|" \
  tests/data/labs/cluster-e2e.yaml > "$WORK/lab.yaml"
in_ns "$KD" lab up "$WORK/lab.yaml" 2>&1 | tee "$WORK/logs/lab-up.log"
INV="$KUBEDRILL_STATE_DIR/labs/$LAB_NAME/inventory/hosts.yaml"
[ -f "$INV" ] || die "lab up wrote no inventory"
stage "lab up"

# The registry mirror: Debian's docker-registry on the lab network's host address (inside the
# namespace), filled with skopeo from the image tarballs; the lab inventory names it the way a
# Kubespray inventory does.
GW=$(sed -n 's/^  cidr: *\([0-9.]*\)\.0\/24.*/\1.1/p' "$WORK/lab.yaml")
[ -n "$GW" ] || die "cannot find the lab network's host address in $WORK/lab.yaml"
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<REG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
http:
  addr: $GW:5000
REG
ip netns exec "$NS" docker-registry serve "$WORK/registry/config.yml" > "$WORK/logs/registry.log" 2>&1 &
REGISTRY_PID=$!
echo "REGISTRY_PID=$REGISTRY_PID" >> "$WORK/e2e.env"
for _ in $(seq 50); do in_ns curl -fsS -o /dev/null "http://$GW:5000/v2/" 2>/dev/null && break; sleep 0.2; done
for m in "${mirrored[@]}"; do
  ref=${m%%=*}; f=${m#*=}; path=${ref#*/}
  in_ns skopeo copy -q --dest-tls-verify=false "oci-archive:$f" "docker://$GW:5000/$path" \
    || die "pushing $ref to the registry mirror"
done
mkdir -p "$(dirname "$INV")/group_vars"
cat > "$(dirname "$INV")/group_vars/k8s_cluster.yml" <<VARS
# Added by scripts/cluster-e2e.sh: registry.k8s.io through the lab's registry mirror.
containerd_registries_mirrors:
  - prefix: registry.k8s.io
    mirrors:
      - host: http://$GW:5000
        capabilities: ["pull", "resolve"]
        skip_verify: true
VARS
stage "registry mirror"

# shellcheck disable=SC2054 # --skip-phases takes a comma-separated list
APPLY=(apply -i "$INV" --bundle "$WORK/bundle" --skip-phases cilium,cluster)
# 4. apply, killed while kubeadm init runs.
# Not through in_ns: $! must be kubedrill itself (ip netns exec execs it), not a subshell.
ip netns exec "$NS" "$KD" "${APPLY[@]}" > "$WORK/logs/apply-1.log" 2>&1 &
apid=$!
started=""
for _ in $(seq 1800); do
  if grep -q '== kubeadm/init' "$WORK/logs/apply-1.log"; then started=1; break; fi
  kill -0 "$apid" 2>/dev/null || break
  sleep 1
done
[ -n "$started" ] || { cat "$WORK/logs/apply-1.log" >&2; die "apply ended before kubeadm/init"; }
stage "apply: node phases"
sleep "${KUBEDRILL_E2E_KILL_AFTER:-45}"
kill -0 "$apid" 2>/dev/null || { cat "$WORK/logs/apply-1.log" >&2; die "apply ended before it could be interrupted"; }
kill "$apid"
wait "$apid" 2>/dev/null || true
say "apply killed (PID $apid) during kubeadm/init"
in_ns "$KD" "${APPLY[@]}" 2>&1 | tee "$WORK/logs/apply-2.log"
[ "${PIPESTATUS[0]}" = 0 ] || die "the resumed apply failed"
grep -q 'resuming: the previous apply' "$WORK/logs/apply-2.log" || die "the second apply did not say it resumes"
stage "apply: resumed, init + join"

# 5. The cluster as the API and the nodes show it.
KC="$KUBEDRILL_STATE_DIR/clusters/lab-$(basename "$(dirname "$(dirname "$INV")")")"
KUBECONFIG_FILE=$(find "$KUBEDRILL_STATE_DIR/clusters" -name admin.conf | head -n1)
[ -n "$KUBECONFIG_FILE" ] || die "no admin.conf fetched under $KUBEDRILL_STATE_DIR/clusters ($KC)"
[ "$(stat -c %a "$KUBECONFIG_FILE")" = 600 ] || die "$KUBECONFIG_FILE is not 0600"
k() { in_ns "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
# `kubeadm join` returns once the kubelet has its credentials; the Node object follows when that
# kubelet registers (seconds, longer under TCG): wait for every node, bounded.
want=$(grep -c 'ansible_host:' "$INV")
for _ in $(seq 90); do
  [ "$(k get nodes -o name 2>/dev/null | wc -l)" -ge "$want" ] && break
  sleep 2
done
k get nodes -o wide | tee "$WORK/logs/nodes.txt"
k get nodes -o json > "$WORK/logs/nodes.json"
python3 - "$K8S" "$WORK/logs/nodes.json" <<'PY' || die "nodes are not as expected"
import json, sys
want = "v" + sys.argv[1]
nodes = {n["metadata"]["name"]: n for n in json.load(open(sys.argv[2]))["items"]}
assert sorted(nodes) == ["cp1", "w1"], f"nodes: {sorted(nodes)}"
for name, n in nodes.items():
    v = n["status"]["nodeInfo"]["kubeletVersion"]
    assert v == want, f"{name}: kubelet {v}, want {want}"
    ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
    # No CNI until Cilium (the next issue): NotReady, and for that reason.
    assert ready["status"] == "False" and "cni" in ready["message"].lower(), f"{name}: {ready}"
print("nodes: cp1 and w1 at", want, "NotReady (no CNI yet)")
PY
for p in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  phase=$(k -n kube-system get pod "$p-cp1" -o jsonpath='{.status.phase}')
  [ "$phase" = Running ] || die "$p-cp1 is $phase"
done
say "control-plane pods Running"
grep -q 'GET /v2/kube-apiserver/manifests/' "$WORK/logs/registry.log" ||
  die "cp1 did not pull kube-apiserver through the registry mirror"
say "kube-apiserver, controller manager and scheduler came through the registry mirror"
if k -n kube-system get daemonset kube-proxy >/dev/null 2>&1; then die "a kube-proxy DaemonSet exists"; fi
if k -n kube-system get configmap kube-proxy >/dev/null 2>&1; then die "a kube-proxy ConfigMap exists"; fi
say "no kube-proxy DaemonSet or ConfigMap"
LABDIR="$KUBEDRILL_STATE_DIR/labs/$LAB_NAME"
node_ssh() { # IP CMD
  in_ns ssh -q -i "$LABDIR/id_ed25519" -o UserKnownHostsFile="$LABDIR/known_hosts" \
    -o StrictHostKeyChecking=yes -o BatchMode=yes "root@$1" "$2"
}
for ip in $(k get nodes -o jsonpath='{.items[*].status.addresses[?(@.type=="InternalIP")].address}'); do
  n=$(node_ssh "$ip" "iptables-save | grep -cE 'KUBE-SVC|KUBE-SERVICES|KUBE-NODEPORTS' || true")
  [ "$n" = 0 ] || die "$ip has $n kube-proxy iptables rules"
done
say "no KUBE-SVC/KUBE-SERVICES/KUBE-NODEPORTS chains on any node"
CP_IP=$(k get node cp1 -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
node_ssh "$CP_IP" "free -m | awk '/Mem:/ {print \"control plane memory used: \" \$3 \" MiB of \" \$2}'" | tee -a "$WORK/logs/nodes.txt"
stage "cluster checks"

# 6. Idempotence, then reset + rejoin of the worker.
in_ns "$KD" "${APPLY[@]}" --output json > "$WORK/logs/apply-3.json" 2> "$WORK/logs/apply-3.log" || die "the re-run failed"
python3 - "$WORK/logs/apply-3.json" <<'PY' || die "the re-run changed something"
import json, sys
r = json.load(open(sys.argv[1]))
changed = [(p["phase"], h["host"]) for p in r["phases"] for h in p["hosts"] if h["outcome"] == "changed"]
assert not changed and not r["failures"], f"changed: {changed}, failures: {r['failures']}"
print("re-run: every phase unchanged")
PY
stage "apply: re-run"
in_ns "$KD" reset -i "$INV" --yes --only-host w1 2>&1 | tee "$WORK/logs/reset.log"
grep -q 'kubeadm reset -f' "$WORK/logs/reset.log" || die "reset did not run kubeadm reset"
W1_IP=$(k get node w1 -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
node_ssh "$W1_IP" "test ! -e /etc/kubernetes/kubelet.conf" || die "w1 still has kubelet.conf after reset"
in_ns "$KD" "${APPLY[@]}" 2>&1 | tee "$WORK/logs/apply-4.log"
[ "${PIPESTATUS[0]}" = 0 ] || die "the apply after reset failed"
node_ssh "$W1_IP" "test -f /etc/kubernetes/kubelet.conf" || die "w1 did not join again"
stage "reset w1 + rejoin"

# 7. Secrets: the bootstrap tokens the cluster holds now (init's and the joins') must appear in
#    no output, no journal, and no file of the state directory that others could read.
tokens=$(k -n kube-system get secrets --field-selector type=bootstrap.kubernetes.io/token \
  -o jsonpath='{range .items[*]}{.data.token-id}{" "}{.data.token-secret}{"\n"}{end}' |
  while read -r id sec; do echo "$(echo "$id" | base64 -d).$(echo "$sec" | base64 -d)"; echo "$sec" | base64 -d; echo; done)
[ -n "$tokens" ] || die "no bootstrap token found to check for"
while read -r t; do
  [ -n "$t" ] || continue
  if grep -rqF -- "$t" "$WORK/logs"; then die "a bootstrap token secret appears in the output"; fi
  while IFS= read -r -d '' f; do
    [ "$(stat -c %a "$f")" = 600 ] && continue
    if grep -qF -- "$t" "$f"; then die "a bootstrap token secret appears in $f ($(stat -c %a "$f"))"; fi
  done < <(find "$KUBEDRILL_STATE_DIR" -type f -print0)
done <<< "$tokens"
journal=$(find "$KUBEDRILL_STATE_DIR/clusters" -name 'journal*' | head -n1)
[ -n "$journal" ] || die "no journal"
[ "$(stat -c %a "$journal")" = 600 ] || die "$journal is not 0600"
while read -r t; do [ -z "$t" ] || ! grep -qF -- "$t" "$journal" || die "a token is in the journal"; done <<< "$tokens"
say "no bootstrap token in output, journal or non-0600 state files"
stage "secret checks"

TIMINGS+="total	$(( $(date +%s) - T0 ))"$'\n'
printf 'stage\tseconds\n%s' "$TIMINGS" | tee "$WORK/timings.tsv"
say "PASS"
if [ "$KEEP" = 1 ]; then
  echo "netns=$NS"
  echo "kubeconfig=$KUBECONFIG_FILE"
  echo "inventory=$INV"
fi
