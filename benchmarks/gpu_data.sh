#!/usr/bin/env bash
# Gzip MNIST's four IDX files for the GPU machine (carry: [".gpu_data"]; lotterynet reads the
# .gz files as they are):  benchmarks/gpu_data.sh [SOURCE=../shared/data] [DEST=.gpu_data]
set -euo pipefail
src="${1:-../shared/data}/MNIST/raw"
dest="${2:-.gpu_data}/MNIST/raw"
files=("$src"/*-ubyte)
if [ "${#files[@]}" -ne 4 ] || [ ! -f "${files[0]}" ]; then
    echo "gpu_data.sh: error: want the 4 MNIST IDX files (*-ubyte) under $src" >&2
    exit 2
fi
mkdir -p "$dest"
for f in "${files[@]}"; do
    gzip -c "$f" > "$dest/$(basename "$f").gz"
done
echo "${#files[@]} files gzipped into $dest"
