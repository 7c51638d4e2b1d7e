#!/bin/sh
# Packs a directory of fanout plugins into the `fanout-plugins` ConfigMap and applies it. Running
# fanout pods pick the change up within about a minute (the kubelet's sync period) and swap it in
# between events; a set that fails to load is refused and the old one keeps serving.
#
#   deploy/plugins/update-plugins.sh DIR            # apply to the cluster
#   deploy/plugins/update-plugins.sh DIR --dry-run  # print the ConfigMap instead
#
# DIR holds X.wasm (or X.wasm.gz / X.wasm.zst) and optional X.json configs. kubectl puts the
# binary files under binaryData and the JSON under data. Environment: NAMESPACE (default fanout),
# NAME (default fanout-plugins), OUTPUT (yaml or json, for --dry-run; default yaml).
set -eu

usage() { echo "usage: $0 DIR [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1
dry_run=false
case "${2:-}" in
  "") ;;
  --dry-run) dry_run=true ;;
  *) usage ;;
esac
name=${NAME:-fanout-plugins}
namespace=${NAMESPACE:-fanout}

set --
total=0
for file in "$dir"/*.wasm "$dir"/*.wasm.gz "$dir"/*.wasm.zst "$dir"/*.json; do
  [ -f "$file" ] || continue
  set -- "$@" "--from-file=$file"
  total=$((total + $(wc -c < "$file")))
done
[ $# -gt 0 ] || { echo "$0: no plugins (*.wasm, *.wasm.gz, *.wasm.zst) in $dir" >&2; exit 1; }

# The API server refuses a ConfigMap whose values add up to more than 1 MiB.
limit=1048576
if [ "$total" -gt "$limit" ]; then
  echo "$0: $dir holds $total bytes, over the ConfigMap limit of $limit." >&2
  echo "  Compress the plugins (gzip -9 X.wasm, or zstd -19 X.wasm), or deliver them on an" >&2
  echo "  image volume or an emptyDir filled by an initContainer (docs/hot-reload.md)." >&2
  exit 1
fi

if $dry_run; then
  kubectl create configmap "$name" --namespace "$namespace" "$@" \
    --dry-run=client -o "${OUTPUT:-yaml}"
else
  # Server-side apply: a client-side `kubectl apply` also copies the whole ConfigMap into the
  # last-applied-configuration annotation, which is capped at 256 KiB, so it would refuse any
  # plugin set over about 190 KB with "metadata.annotations: Too long".
  kubectl create configmap "$name" --namespace "$namespace" "$@" \
    --dry-run=client -o yaml | kubectl apply --server-side --force-conflicts --field-manager=fanout-plugins -f -
fi
