#!/usr/bin/env bash
# Moves the proxy to a lent GPU machine within its 64 MiB carry limit: shards do not fit, so carry the
# zstd corpus (58 MB) and the proxy tokenizer, and rebuild the byte-identical shards there (~15 s).
#   here:          bash scripts/proxy_carry.sh pack [PROXY_DIR=data/proxy] [CORPUS=../shared/data/proxy_docs.jsonl.zst]
#   device call:   carry [".data/corpus"], command: bash scripts/proxy_carry.sh unpack [OUT_DIR=/tmp/proxy]
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  pack)
    proxy=${2:-data/proxy}; corpus=${3:-../shared/data/proxy_docs.jsonl.zst}
    [ -f "$proxy/tokenizer.model" ] || { echo "no $proxy/tokenizer.model: build the proxy first (data/build_proxy.py)" >&2; exit 1; }
    mkdir -p .data/corpus && cp "$corpus" .data/corpus/proxy_docs.jsonl.zst && cp "$proxy/tokenizer.model" .data/corpus/
    grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo /.data/ >> .git/info/exclude
    du -sh .data/corpus ;;
  unpack)
    python3 data/build_proxy.py --inputs .data/corpus/proxy_docs.jsonl.zst --tokenizer .data/corpus/tokenizer.model \
      --out "${2:-/tmp/proxy}" ;;
  *) echo "usage: $0 pack [PROXY_DIR] [CORPUS] | unpack [OUT_DIR]" >&2; exit 2 ;;
esac
