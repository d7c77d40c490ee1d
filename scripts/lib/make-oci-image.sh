#!/usr/bin/env bash
# Make an OCI image-layout archive (one layer) without a registry or a container tool.
# `ctr -n k8s.io images import OUT.tar` loads it under NAME:TAG (index annotation
# io.containerd.image.name).
#
#   scripts/lib/make-oci-image.sh OUT.tar NAME:TAG
#       the tiny test image: one plain-tar layer holding /kubedrill-test, empty config
#       (what scripts/lab-test.sh uses for the bundle's "image tarballs" path).
#   scripts/lib/make-oci-image.sh OUT.tar NAME:TAG ROOTFS_DIR [ENTRYPOINT...]
#       one gzip layer holding ROOTFS_DIR as it is (modes kept; owner root; mtime 0), config
#       with Env PATH, Entrypoint (the remaining arguments, if any), os linux, arch amd64.
#
# Optional environment for the ROOTFS_DIR form:
#   OCI_CMD="a b"      image Cmd (split on spaces)
#   OCI_USER=65535     image User
#   OCI_LAYER=gzip|tar layer compression (default gzip)
#
# The output depends only on the inputs: tar --sort=name --mtime=@0 --owner=0 --group=0
# --numeric-owner, gzip -n, no timestamps in the config. So rebuilding gives the same bytes.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT.tar NAME:TAG [ROOTFS_DIR [ENTRYPOINT...]]" >&2; exit 2
fi
out="$1"; name="$2"; rootfs="${3:-}"
shift 2; [ $# -gt 0 ] && shift
case "$name" in *:*) ;; *) echo "make-oci-image: $name has no :TAG" >&2; exit 2 ;; esac
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/oci/blobs/sha256"

# JSON helpers: a quoted string, and an array of quoted strings.
jstr() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
jarr() { local first=1 a; printf '['; for a in "$@"; do [ $first = 1 ] || printf ','; first=0; jstr "$a"; done; printf ']'; }

tarit() { # DIR OUT: a deterministic tar of DIR's contents
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}
blob() { # FILE -> prints "digest size", stores the blob
  local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$tmp/oci/blobs/sha256/$d"; echo "$d $s"
}

if [ -z "$rootfs" ]; then
  # The original two-argument form: a tiny marker layer, empty config.
  mkdir -p "$tmp/rootfs"
  echo "kubedrill test image" > "$tmp/rootfs/kubedrill-test"
  tarit "$tmp/rootfs" "$tmp/layer.tar"
  compression=tar
  config='{}'
else
  [ -d "$rootfs" ] || { echo "make-oci-image: $rootfs is not a directory" >&2; exit 2; }
  tarit "$rootfs" "$tmp/layer.tar"
  compression="${OCI_LAYER:-gzip}"
  env_path='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  config="{\"Env\":$(jarr "$env_path")"
  [ $# -gt 0 ] && config+=",\"Entrypoint\":$(jarr "$@")"
  if [ -n "${OCI_CMD:-}" ]; then
    read -r -a cmd <<<"$OCI_CMD"; config+=",\"Cmd\":$(jarr "${cmd[@]}")"
  fi
  [ -n "${OCI_USER:-}" ] && config+=",\"User\":$(jstr "$OCI_USER")"
  config+=',"WorkingDir":"/"}'
fi

# The config's diff_id is the digest of the uncompressed layer; the manifest names the blob.
diff_id=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
case "$compression" in
  gzip) gzip -n -6 "$tmp/layer.tar"; layer_file="$tmp/layer.tar.gz"
        layer_type=application/vnd.oci.image.layer.v1.tar+gzip ;;
  tar)  layer_file="$tmp/layer.tar"; layer_type=application/vnd.oci.image.layer.v1.tar ;;
  *) echo "make-oci-image: OCI_LAYER must be gzip or tar" >&2; exit 2 ;;
esac
read -r layer lsize < <(blob "$layer_file")
printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$config" "$diff_id" > "$tmp/config.json"
read -r cfg csize < <(blob "$tmp/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"%s","digest":"sha256:%s","size":%s}]}' \
  "$cfg" "$csize" "$layer_type" "$layer" "$lsize" > "$tmp/manifest.json"
read -r man msize < <(blob "$tmp/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$man" "$msize" "$name" "${name##*:}" > "$tmp/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$tmp/oci/oci-layout"
tarit "$tmp/oci" "$tmp/image.tar"
mv "$tmp/image.tar" "$out"
