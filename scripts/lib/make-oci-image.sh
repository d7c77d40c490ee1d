#!/usr/bin/env bash
# Make a tiny OCI image archive (one layer holding /kubedrill-test) without a registry or a
# container tool, for the bundle's "image tarballs" path: `ctr -n k8s.io images import` reads it.
#   scripts/lib/make-oci-image.sh OUT.tar IMAGE_NAME
set -euo pipefail
out="$1"; name="$2"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rootfs" "$tmp/oci/blobs/sha256"
echo "kubedrill test image" > "$tmp/rootfs/kubedrill-test"
tar --sort=name --owner=0 --group=0 --mtime=@0 -C "$tmp/rootfs" -cf "$tmp/layer.tar" .
blob() { # FILE -> prints "digest size", stores the blob
  local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$tmp/oci/blobs/sha256/$d"; echo "$d $s"
}
read -r layer lsize < <(blob "$tmp/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer" > "$tmp/config.json"
read -r cfg csize < <(blob "$tmp/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$cfg" "$csize" "$layer" "$lsize" > "$tmp/manifest.json"
read -r man msize < <(blob "$tmp/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$man" "$msize" "$name" "${name##*:}" > "$tmp/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$tmp/oci/oci-layout"
tar --sort=name --owner=0 --group=0 --mtime=@0 -C "$tmp/oci" -cf "$out" .
